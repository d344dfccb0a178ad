"""The delivery state machine against real Postgres: each of `deliveries.MOVES` is made by
the store functions that use it, guarded by the states (and the attempt) it may leave; the
`webhook_deliveries_state_machine` trigger (migration 0009) refuses every other change of
status, even one written by hand."""

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from schemas.events import EventType, WebhookTest
from schemas.webhooks import DeliveryStatus, DisabledReason
from shared.domain.owners import Owner
from shared.store import deliveries, endpoints, events
from shared.store.deliveries import AttemptRecord, Due
from tests.integration.factories import BOX, endpoint, tenant

LEASE_S = 60.0
PENDING, SUCCEEDED, FAILED = DeliveryStatus.PENDING, DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED


async def _owe(db: asyncpg.Pool, tenant_id: str) -> str:
    """One job.failed event owed to the tenant's endpoints; the id of its one delivery."""
    async with db.acquire() as conn:
        emitted = await events.emit(
            conn,
            tenant_id=tenant_id,
            type=EventType.JOB_FAILED,
            data=WebhookTest(endpoint_id="-", message="owed"),
        )
    delivery_id = await db.fetchval(
        "SELECT id FROM webhook_deliveries WHERE event_id = $1", emitted.event.id
    )
    assert delivery_id is not None
    return str(delivery_id)


async def _claim(db: asyncpg.Pool) -> Due:
    [due] = await deliveries.claim(db, 1, LEASE_S, [], per_url=10, busy={}, box=BOX)
    return due


async def _row(db: asyncpg.Pool, delivery_id: str) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT status, attempt_count, next_attempt_at, last_status_code, last_error,"
        " delivered_at, url FROM webhook_deliveries WHERE id = $1",
        delivery_id,
    )
    assert row is not None
    return row


async def _answer(db: asyncpg.Pool, due: Due, code: int, status: DeliveryStatus) -> bool:
    retry_at = datetime.now(UTC) + timedelta(minutes=5) if status is PENDING else None
    async with db.acquire() as conn:
        return await deliveries.record_attempt(
            conn, due, AttemptRecord(7, code, f"HTTP {code}", "body"), status, retry_at
        )


async def _claimed(db: asyncpg.Pool) -> tuple[str, Due]:
    """A delivery to a fresh endpoint, claimed once."""
    tenant_id = await tenant(db)
    await endpoint(db, tenant_id, "https://moves.example/x")
    delivery_id = await _owe(db, tenant_id)
    due = await _claim(db)
    assert due.id == delivery_id
    return tenant_id, due


async def _claim_move(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    await endpoint(db, tenant_id, "https://moves.example/x")
    delivery_id = await _owe(db, tenant_id)
    due = await _claim(db)
    row = await _row(db, delivery_id)
    assert (due.id, due.attempt, row["status"], row["attempt_count"]) == (
        delivery_id,
        1,
        PENDING,
        1,
    )
    # Leased: not due again until the lease ends.
    assert row["next_attempt_at"] > datetime.now(UTC) + timedelta(seconds=LEASE_S - 10)
    assert await deliveries.claim(db, 1, LEASE_S, [], per_url=10, busy={}, box=BOX) == []


async def _defer_move(db: asyncpg.Pool) -> None:
    _, due = await _claimed(db)
    until = datetime.now(UTC) + timedelta(minutes=3)
    # A hand-back of an attempt the delivery is no longer at changes nothing.
    await deliveries.defer(db, replace(due, attempt=due.attempt + 1), until)
    assert (await _row(db, due.id))["attempt_count"] == 1
    await deliveries.defer(db, due, until)
    row = await _row(db, due.id)
    assert (row["status"], row["attempt_count"], row["next_attempt_at"]) == (PENDING, 0, until)


async def _succeed_move(db: asyncpg.Pool) -> None:
    _, due = await _claimed(db)
    assert await _answer(db, due, 200, SUCCEEDED)
    row = await _row(db, due.id)
    assert (row["status"], row["last_status_code"]) == (SUCCEEDED, 200)
    assert row["delivered_at"] is not None
    # Compare-and-set: the same attempt recorded again changes nothing.
    assert not await _answer(db, due, 500, FAILED)
    assert (await _row(db, due.id))["status"] == SUCCEEDED


async def _back_off_move(db: asyncpg.Pool) -> None:
    _, due = await _claimed(db)
    assert await _answer(db, due, 503, PENDING)
    row = await _row(db, due.id)
    assert (row["status"], row["last_status_code"], row["last_error"]) == (
        PENDING,
        503,
        "HTTP 503",
    )
    assert row["next_attempt_at"] > datetime.now(UTC) + timedelta(minutes=4)
    assert row["delivered_at"] is None


async def _give_up_move(db: asyncpg.Pool) -> None:
    _, due = await _claimed(db)
    stale = replace(due, attempt=due.attempt - 1)
    assert not await _answer(db, stale, 500, FAILED)
    assert await _answer(db, due, 500, FAILED)
    row = await _row(db, due.id)
    assert (row["status"], row["last_status_code"], row["delivered_at"]) == (FAILED, 500, None)


async def _refuse_move(db: asyncpg.Pool) -> None:
    # Through fail_pending: the endpoint is disabled through the API.
    tenant_id = await tenant(db)
    hook = await endpoint(db, tenant_id, "https://moves.example/x")
    delivery_id = await _owe(db, tenant_id)
    await endpoints.update(
        db, Owner(tenant_id), hook, url=None, events=None, description=None, enabled=False
    )
    row = await _row(db, delivery_id)
    assert (row["status"], row["last_error"]) == (FAILED, DisabledReason.BY_API)
    # Through a claim: disabled by a statement that did not see the delivery; a reason an
    # attempt already wrote is kept.
    other = await tenant(db)
    gone = await endpoint(db, other, "https://gone.example/x")
    owed = await _owe(db, other)
    await _answer(db, await _claim(db), 503, PENDING)
    await db.execute(
        "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE id = $1", owed
    )  # due again
    await db.execute(
        "UPDATE webhook_endpoints SET disabled_at = now(), disabled_reason = $2 WHERE id = $1",
        gone,
        DisabledReason.GONE,
    )
    assert await deliveries.claim(db, 1, LEASE_S, [], per_url=10, busy={}, box=BOX) == []
    row = await _row(db, owed)
    assert (row["status"], row["last_error"]) == (FAILED, "HTTP 503")


async def _resend_move(db: asyncpg.Pool) -> None:
    tenant_id, due = await _claimed(db)
    owner = Owner(tenant_id)
    assert await _answer(db, due, 500, FAILED)
    # From failed, to the endpoint's current URL.
    await db.execute(
        "UPDATE webhook_endpoints SET url = 'https://moved.example/y' WHERE id = $1",
        due.endpoint_id,
    )
    assert await deliveries.retry(db, owner, due.id) is deliveries.RetryOutcome.QUEUED
    row = await _row(db, due.id)
    assert (row["status"], row["url"]) == (PENDING, "https://moved.example/y")
    assert row["next_attempt_at"] <= datetime.now(UTC)
    # From pending (due, not under way): stays pending, due now.
    assert await deliveries.retry(db, owner, due.id) is deliveries.RetryOutcome.QUEUED
    assert (await _row(db, due.id))["status"] == PENDING
    # From succeeded.
    again = await _claim(db)
    assert await _answer(db, again, 200, SUCCEEDED)
    assert await deliveries.retry(db, owner, due.id) is deliveries.RetryOutcome.QUEUED
    row = await _row(db, due.id)
    assert (row["status"], row["attempt_count"]) == (PENDING, 2)


# How the store functions make each move; a move added without a way to make it here fails
# `test_every_move_has_a_test`.
MADE_BY: dict[str, Callable[[asyncpg.Pool], Awaitable[None]]] = {
    "claim": _claim_move,
    "defer": _defer_move,
    "succeed": _succeed_move,
    "back_off": _back_off_move,
    "give_up": _give_up_move,
    "refuse": _refuse_move,
    "resend": _resend_move,
}


def test_every_move_has_a_test() -> None:
    assert set(MADE_BY) == {m.name for m in deliveries.MOVES}


@pytest.mark.parametrize("name", sorted(MADE_BY))
async def test_each_move_is_made_through_the_store_functions(db: asyncpg.Pool, name: str) -> None:
    await MADE_BY[name](db)


# Every change of status some move makes; the trigger must allow exactly these.
EDGES = {(s, m.target) for m in deliveries.MOVES for s in m.sources if s is not m.target}


def test_the_moves_change_status_along_the_documented_edges() -> None:
    assert {
        (PENDING, SUCCEEDED),
        (PENDING, FAILED),
        (SUCCEEDED, PENDING),
        (FAILED, PENDING),
    } == EDGES


async def test_the_trigger_refuses_every_change_of_status_no_move_makes(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    await endpoint(db, tenant_id, "https://moves.example/x")
    for source, target in itertools.permutations(DeliveryStatus, 2):
        delivery_id = await _owe(db, tenant_id)
        if source is not PENDING:  # put it there the way a move does
            await db.execute(
                "UPDATE webhook_deliveries SET status = $2 WHERE id = $1", delivery_id, source
            )
        hand_written = db.execute(
            "UPDATE webhook_deliveries SET status = $2 WHERE id = $1", delivery_id, target
        )
        if (source, target) in EDGES:
            await hand_written
            assert (await _row(db, delivery_id))["status"] == target
        else:
            with pytest.raises(asyncpg.CheckViolationError, match="delivery state machine"):
                await hand_written
            assert (await _row(db, delivery_id))["status"] == source


async def test_an_attempt_waits_for_its_endpoint_before_touching_its_delivery(
    db: asyncpg.Pool,
) -> None:
    """Disabling an endpoint locks it, then fails its deliveries; deleting one locks it, then
    its deliveries go with it. Recording an attempt takes the same two locks in the same
    order, so it waits instead of deadlocking (found by the strict schemathesis run: a
    DELETE of an endpoint failed with Postgres's `deadlock detected` while the dispatcher
    recorded an attempt to it)."""
    _, due = await _claimed(db)
    assert due.endpoint_id is not None
    async with db.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(
                "SELECT 1 FROM webhook_endpoints WHERE id = $1 FOR UPDATE", due.endpoint_id
            )
            recording = asyncio.create_task(
                endpoints.record_attempt(
                    db,
                    due,
                    AttemptRecord(7, 503, "HTTP 503", "body"),
                    FAILED,
                    None,
                    disable=None,
                    disable_after_s=3600,
                )
            )
            await asyncio.sleep(0.5)  # let it reach the lock it waits for
            assert not recording.done()
            # The other order would hold the delivery here: this would wait for it, and
            # Postgres would end one of the two transactions.
            await deliveries.fail_pending(conn, due.endpoint_id, DisabledReason.BY_API)
        finally:
            await tx.commit()
    # It went on once the endpoint was free, and found its delivery already failed.
    assert await asyncio.wait_for(recording, 10) is False
    assert (await _row(db, due.id))["status"] == FAILED
