"""Signing secrets rotated, forgotten and read for signing through the one mechanism
(shared/store/signing_secrets.py), for the secret the other tests rotate least: a tenant's test
secret, which may not have been made yet when it rotates."""

import asyncpg

from schemas.events import EventType
from shared.domain.owners import Owner
from shared.store import deliveries, events, tenants
from tests.integration.factories import BOX, submit, tenant


async def _signed_with(db: asyncpg.Pool, owner: Owner) -> list[str]:
    """The secrets a delivery of one of the owner's jobs to its own URL is signed with."""
    job = await submit(
        db, owner.tenant_id, webhook_url="https://own.example/hook", livemode=owner.livemode
    )
    async with db.acquire() as conn, conn.transaction():
        await events.emit(
            conn,
            tenant_id=owner.tenant_id,
            type=EventType.JOB_COMPLETED,
            data=job,
            job_id=job.id,
            job_webhook_url=job.webhook_url,
            livemode=owner.livemode,
        )
    [due] = await deliveries.claim(db, 1, 60, [], per_url=10, busy={}, box=BOX)
    return due.secrets


async def test_a_test_secret_rotates_with_grace_apart_from_the_live_one(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    live, test = Owner(tenant_id, True), Owner(tenant_id, False)
    first = await tenants.signing_secret(db, test, BOX)
    live_secret = await tenants.signing_secret(db, live, BOX)
    rotated = await tenants.rotate_signing_secret(db, test, 60, BOX)
    assert rotated.previous_secret_expires_at is not None
    assert await _signed_with(db, test) == [rotated.secret, first]
    assert await _signed_with(db, live) == [live_secret]
    assert await tenants.forget_expired_secrets(db) == 0
    await db.execute(
        "UPDATE tenants SET previous_test_signing_secret_expires_at = now() WHERE id = $1",
        tenant_id,
    )
    assert await tenants.forget_expired_secrets(db) == 1
    assert await _signed_with(db, test) == [rotated.secret]
    row = await db.fetchrow(
        "SELECT previous_test_signing_secret, previous_test_signing_secret_expires_at"
        " FROM tenants WHERE id = $1",
        tenant_id,
    )
    assert row is not None and tuple(row) == (None, None)


async def test_a_test_secret_never_made_rotates_to_one_secret(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    test = Owner(tenant_id, False)
    rotated = await tenants.rotate_signing_secret(db, test, 60, BOX)
    # Nothing was there to keep signing during the grace.
    assert await _signed_with(db, test) == [rotated.secret]
    assert await tenants.signing_secret(db, test, BOX) == rotated.secret
