"""The queries behind the API's front door, against real Postgres: keys, plans and
quotas, batch reads and filters, the failed-request log, and signing secrets."""

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from schemas.account import KeyMode, Plan, Scope
from schemas.events import EventType
from schemas.jobs import JobStatus
from shared.domain.owners import Owner
from shared.runtime.secret_box import SecretBox, generate_key
from shared.store import (
    deliveries,
    endpoints,
    events,
    job_submission,
    jobs,
    keys,
    request_failures,
    tenants,
    usage,
)
from shared.store.keys import Principal, Refusal
from shared.store.request_failures import RequestFailure
from tests.integration.factories import BOX, BOX_KEY, submit, tenant


def _new(tenant_id: str, *, limit: int | None, livemode: bool = True) -> job_submission.NewJob:
    return job_submission.NewJob(
        tenant_id=tenant_id,
        crew="echo",
        inputs={},
        metadata={},
        webhook_url=None,
        timeout_s=60,
        max_retries=0,
        livemode=livemode,
        monthly_limit=limit,
    )


async def test_keys_authenticate_until_revoked_or_expired(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        made = await keys.create_for_tenant(
            conn, "kt", [Scope.JOBS_READ], plan=Plan.FREE, box=BOX, mode=KeyMode.TEST
        )
        short = await keys.create_key(
            conn, made.info.tenant_id, [Scope.ADMIN], expires_in=timedelta(seconds=1)
        )
    assert made.key.startswith("crq_test_") and short.key.startswith("crq_live_")
    assert made.info.prefix == made.key[:16] and made.info.last_used_at is None
    found = await keys.authenticate(db, made.key)
    assert isinstance(found, Principal)
    assert found.mode is KeyMode.TEST and not found.livemode
    assert found.may(Scope.JOBS_READ) and not found.may(Scope.JOBS_WRITE)
    assert found.allowance.jobs_per_month == 100 and found.allowance.requests_per_second == 10
    admin = await keys.authenticate(db, short.key)
    assert isinstance(admin, Principal) and admin.may(Scope.WEBHOOKS_MANAGE)  # admin: all
    used = await keys.get(db, found.owner, made.info.id)
    assert used is not None and used.last_used_at is not None
    await asyncio.sleep(1.1)
    assert await keys.authenticate(db, short.key) is Refusal.EXPIRED
    assert await keys.authenticate(db, "crq_live_nothing") is Refusal.UNKNOWN
    # Revoking is scoped to the tenant, and idempotent.
    other = await tenant(db)
    assert await keys.revoke(db, Owner(other), made.info.id) is None
    revoked = await keys.revoke(db, found.owner, made.info.id)
    assert revoked is not None and revoked.revoked_at is not None
    again = await keys.revoke(db, None, made.info.id)
    assert again is not None and again.revoked_at == revoked.revoked_at
    assert await keys.authenticate(db, made.key) is Refusal.REVOKED


async def test_the_monthly_quota_is_exact_under_concurrent_submissions(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    results = await asyncio.gather(
        *(job_submission.insert(db, _new(tenant_id, limit=7), 10_000, 10) for _ in range(30))
    )
    created = [r for r in results if isinstance(r, job_submission.Inserted)]
    refused = [r for r in results if isinstance(r, usage.QuotaExceeded)]
    assert (len(created), len(refused)) == (7, 23)
    month = await usage.this_month(db, tenant_id)
    assert month.jobs == 7
    assert refused[0].resets_at == month.resets_at > datetime.now(UTC)
    # Sandbox jobs are not counted, and are created past the quota.
    sandbox = await job_submission.insert(db, _new(tenant_id, limit=7, livemode=False), 10_000, 10)
    assert isinstance(sandbox, job_submission.Inserted) and not sandbox.job.livemode
    assert (await usage.this_month(db, tenant_id)).jobs == 7
    # A quota of 0 refuses the first job; none (unlimited) counts without refusing.
    assert isinstance(
        await job_submission.insert(db, _new(await tenant(db), limit=0), 10_000, 10),
        usage.QuotaExceeded,
    )
    free = await tenant(db)
    for _ in range(3):
        assert isinstance(
            await job_submission.insert(db, _new(free, limit=None), 10_000, 10),
            job_submission.Inserted,
        )
    assert (await usage.this_month(db, free)).jobs == 3


async def test_batch_reads_and_filters_see_only_the_tenants_jobs(db: asyncpg.Pool) -> None:
    mine, theirs = await tenant(db), await tenant(db)
    a = await submit(db, mine, metadata={"team": "red", "n": 1})
    b = await submit(db, mine, metadata={"team": "blue"})
    foreign = await submit(db, theirs, metadata={"team": "red"})
    found, omitted = await jobs.many(db, Owner(mine), [b.id, foreign.id, "job_missing", a.id, b.id])
    assert [j.id for j in found] == [b.id, a.id] and omitted == []
    red, _ = await jobs.page(
        db, Owner(mine), jobs.JobFilter(metadata={"team": "red"}), before=None, limit=10
    )
    assert [j.id for j in red] == [a.id]
    after_a, _ = await jobs.page(
        db, Owner(mine), jobs.JobFilter(created_after=a.created_at), before=None, limit=10
    )
    assert [j.id for j in after_a] == [b.id]
    before_b, _ = await jobs.page(
        db,
        Owner(mine),
        jobs.JobFilter(created_before=b.created_at, status=JobStatus.PENDING),
        before=None,
        limit=10,
    )
    assert [j.id for j in before_b] == [a.id]


async def test_failed_requests_are_listed_newest_first_and_purged(db: asyncpg.Pool) -> None:
    mine, theirs = await tenant(db), await tenant(db)
    now = datetime.now(UTC)

    def failure(tenant_id: str, at: datetime, rid: str) -> RequestFailure:
        return RequestFailure(
            tenant_id, "key_1", at, "POST", "/v1/jobs", 400, "VALIDATION_ERROR", rid
        )

    await request_failures.insert_many(
        db,
        [
            failure(mine, now - timedelta(days=8), "old"),
            failure(mine, now - timedelta(minutes=1), "earlier"),
            failure(mine, now, "latest"),
            failure(theirs, now, "foreign"),
        ],
    )
    listed = await request_failures.recent(db, Owner(mine), 10)
    assert [f.request_id for f in listed] == ["latest", "earlier", "old"]
    assert await request_failures.purge(db, 7) == 1
    assert [f.request_id for f in await request_failures.recent(db, Owner(mine), 1)] == ["latest"]


async def test_tenant_secrets_are_sealed_rotate_with_grace_and_expire(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    first = await tenants.signing_secret(db, Owner(tenant_id), BOX)
    stored = await db.fetchval("SELECT signing_secret FROM tenants WHERE id = $1", tenant_id)
    assert first is not None and first.startswith("whsec_") and first not in stored
    rotated = await tenants.rotate_signing_secret(db, Owner(tenant_id), 60, BOX)
    assert rotated.secret != first and rotated.previous_secret_expires_at is not None
    # A job's own webhook is signed with both while the old secret is in its grace.
    job = await submit(db, tenant_id, webhook_url="https://hooks.example/x")
    async with db.acquire() as conn, conn.transaction():
        await events.emit(
            conn,
            tenant_id=tenant_id,
            type=EventType.JOB_COMPLETED,
            data=job,
            job_id=job.id,
            job_webhook_url=job.webhook_url,
        )
    [due] = await deliveries.claim(db, 1, 60, [], per_url=4, busy={}, box=BOX)
    assert due.secrets == [rotated.secret, first]
    assert await tenants.forget_expired_secrets(db) == 0
    await db.execute(
        "UPDATE tenants SET previous_signing_secret_expires_at = now() WHERE id = $1", tenant_id
    )
    assert await tenants.forget_expired_secrets(db) == 1
    previous = await db.fetchval(
        "SELECT previous_signing_secret FROM tenants WHERE id = $1", tenant_id
    )
    assert previous is None
    # No grace: the old secret is forgotten at once.
    instant = await tenants.rotate_signing_secret(db, Owner(tenant_id), 0, BOX)
    assert instant.previous_secret_expires_at is None


async def test_reseal_moves_every_secret_to_the_newest_key(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    created = await endpoints.create(
        db,
        Owner(tenant_id),
        url="https://h.example/",
        events=["*"],
        description="",
        default_limit=5,
        box=BOX,
    )
    assert isinstance(created, endpoints.Created)
    await endpoints.rotate_secret(db, Owner(tenant_id), created.endpoint.id, 60, BOX)
    # A secret written before sealing existed, in plaintext.
    legacy = await tenant(db)
    await db.execute("UPDATE tenants SET signing_secret = 'whsec_legacy' WHERE id = $1", legacy)
    new_key = generate_key()
    newer = SecretBox([new_key, BOX_KEY])
    async with db.acquire() as conn, conn.transaction():
        count = await tenants.reseal(conn, newer) + await endpoints.reseal(conn, newer)
    assert count >= 3
    only_new = SecretBox([new_key])
    assert await tenants.signing_secret(db, Owner(legacy), only_new) == "whsec_legacy"
    stored = await db.fetchval("SELECT signing_secret FROM tenants WHERE id = $1", legacy)
    assert not stored.startswith("whsec_")
    row = await db.fetchrow(
        "SELECT secret, previous_secret FROM webhook_endpoints WHERE id = $1", created.endpoint.id
    )
    assert row is not None
    assert only_new.open(row["secret"]).startswith("whsec_")
    assert only_new.open(row["previous_secret"]) == created.secret
