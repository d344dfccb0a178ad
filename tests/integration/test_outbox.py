"""The outbox against real Postgres: what `emit` owes, how dispatchers claim it (fairly,
never twice, never to a disabled endpoint), and what an attempt records."""

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from schemas.events import EventType, WebhookTest
from schemas.webhooks import DeliveryStatus, DisabledReason
from shared.domain.owners import Owner
from shared.store import deliveries, endpoints, events
from shared.store.deliveries import AttemptRecord, Due
from tests.integration.factories import BOX, endpoint, tenant

LEASE_S = 60.0


async def _owe(db: asyncpg.Pool, tenant_id: str, n: int = 1) -> list[str]:
    """Owe `n` job.failed events to the tenant's subscribed endpoints; their event ids."""
    ids = []
    async with db.acquire() as conn:
        for _ in range(n):
            emitted = await events.emit(
                conn,
                tenant_id=tenant_id,
                type=EventType.JOB_FAILED,
                data=WebhookTest(endpoint_id="-", message="owed"),
            )
            ids.append(emitted.event.id)
    return ids


async def _claim(db: asyncpg.Pool, limit: int, per_url: int = 100) -> list[Due]:
    return await deliveries.claim(db, limit, LEASE_S, [], per_url=per_url, busy={}, box=BOX)


async def test_emit_owes_one_delivery_per_subscribed_endpoint_and_job_url(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    everything = await endpoint(db, tenant_id, "https://a.example/x")
    await endpoint(db, tenant_id, "https://b.example/x", ["job.started"])
    async with db.acquire() as conn:
        emitted = await events.emit(
            conn,
            tenant_id=tenant_id,
            type=EventType.JOB_FAILED,
            data=WebhookTest(endpoint_id="-"),
            job_webhook_url="https://own.example/hook",
        )
    rows = await db.fetch(
        "SELECT id, endpoint_id, url FROM webhook_deliveries WHERE event_id = $1 ORDER BY url",
        emitted.event.id,
    )
    assert sorted(emitted.deliveries) == sorted(r["id"] for r in rows)
    assert [(r["endpoint_id"], r["url"]) for r in rows] == [
        (everything, "https://a.example/x"),
        (None, "https://own.example/hook"),
    ]


async def test_a_test_send_goes_through_emit_to_one_endpoint_even_disabled(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    target = await endpoint(db, tenant_id, "https://a.example/x")
    await endpoint(db, tenant_id, "https://b.example/x")
    await endpoints.update(
        db, Owner(tenant_id), target, url=None, events=None, description=None, enabled=False
    )
    async with db.acquire() as conn:
        sent = await events.send_test(conn, Owner(tenant_id), target)
        assert await events.send_test(conn, Owner(await tenant(db)), target) is None
    assert sent is not None
    event_id, delivery_id = sent
    row = await db.fetchrow("SELECT * FROM webhook_deliveries WHERE event_id = $1", event_id)
    assert row is not None and row["id"] == delivery_id and row["endpoint_id"] == target
    [due] = await _claim(db, 10)  # a test is how to see a disabled receiver is back
    assert due.id == delivery_id and due.event_type is EventType.WEBHOOK_TEST


async def test_delivery_ids_are_time_ordered(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    await endpoint(db, tenant_id, "https://a.example/x")
    for _ in range(5):
        await _owe(db, tenant_id)
        await asyncio.sleep(0.002)
    rows = await db.fetch("SELECT id FROM webhook_deliveries ORDER BY created_at")
    ids = [r["id"] for r in rows]
    assert ids == sorted(ids) and all(i.startswith("dlv_") and len(i) == 30 for i in ids)


async def test_claims_go_round_the_tenants(db: asyncpg.Pool) -> None:
    """One tenant's backlog, older than anyone else's, never delays another tenant."""
    noisy, quiet, late = await tenant(db), await tenant(db), await tenant(db)
    for i in range(10):
        await endpoint(db, noisy, f"https://noisy{i}.example/x")
    await endpoint(db, quiet, "https://quiet.example/x")
    await endpoint(db, late, "https://late.example/x")
    await _owe(db, noisy, 30)  # 300 deliveries, all due first
    await db.execute("UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 hour'")
    await _owe(db, quiet)
    await _owe(db, late)
    first = await _claim(db, 3)
    assert sorted(d.tenant_id for d in first) == sorted([noisy, quiet, late])
    rest = await _claim(db, 1000)
    assert len(rest) == 299 and {d.tenant_id for d in rest} == {noisy}


async def test_claims_respect_the_per_url_limit_and_never_hand_out_a_row_twice(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    await endpoint(db, tenant_id, "https://one.example/x")
    await _owe(db, tenant_id, 10)
    first = await deliveries.claim(
        db, 10, LEASE_S, [], per_url=4, busy={"https://one.example:443": 1}, box=BOX
    )
    assert len(first) == 3  # 4 in flight at most, one already busy
    racing = await asyncio.gather(*[_claim(db, 10) for _ in range(4)])
    ids = [d.id for batch in racing for d in batch] + [d.id for d in first]
    assert len(ids) == len(set(ids)) == 10
    assert await _claim(db, 10) == []  # all leased
    skipped = await deliveries.claim(
        db, 10, LEASE_S, ["https://one.example:443"], per_url=4, busy={}, box=BOX
    )
    assert skipped == []


async def test_a_delivery_owed_to_an_endpoint_disabled_since_is_failed_not_sent(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    hook = await endpoint(db, tenant_id, "https://gone.example/x")
    await _owe(db, tenant_id)
    # Disabled by a transaction that did not see the delivery (emit and disable racing).
    await db.execute(
        "UPDATE webhook_endpoints SET disabled_at = now(), disabled_reason = $2 WHERE id = $1",
        hook,
        DisabledReason.GONE,
    )
    assert await _claim(db, 10) == []
    row = await db.fetchrow("SELECT status, last_error FROM webhook_deliveries")
    assert row is not None
    assert (row["status"], row["last_error"]) == ("failed", DisabledReason.GONE)
    assert await deliveries.seconds_until_due(db, []) is None


async def test_recording_an_attempt_stores_what_can_be_stored(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    await endpoint(db, tenant_id, "https://nul.example/x")
    await _owe(db, tenant_id)
    [due] = await _claim(db, 1)
    answer = AttemptRecord(12, 200, None, "ok\x00 \udcff bytes")
    assert await endpoints.record_attempt(
        db, due, answer, DeliveryStatus.SUCCEEDED, None, disable=None, disable_after_s=60
    )
    delivery = await deliveries.get(db, Owner(tenant_id), due.id)
    assert delivery is not None and delivery.status == "succeeded"
    assert delivery.attempts[0].response_body == "ok \ufffd bytes"
    # Compare-and-set: a late second record of the same attempt changes nothing.
    assert not await endpoints.record_attempt(
        db, due, answer, DeliveryStatus.FAILED, None, disable=None, disable_after_s=60
    )


async def test_a_410_disables_the_endpoint_and_fails_what_it_is_owed(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    hook = await endpoint(db, tenant_id, "https://gone.example/x")
    await _owe(db, tenant_id, 3)
    [due] = await deliveries.claim(db, 1, LEASE_S, [], per_url=1, busy={}, box=BOX)
    await endpoints.record_attempt(
        db,
        due,
        AttemptRecord(5, 410, "HTTP 410", ""),
        DeliveryStatus.FAILED,
        None,
        disable=DisabledReason.GONE,
        disable_after_s=60,
    )
    shown = await endpoints.get(db, Owner(tenant_id), hook)
    assert shown is not None and not shown.enabled and shown.disabled_reason is DisabledReason.GONE
    statuses = await db.fetch("SELECT status FROM webhook_deliveries")
    assert {r["status"] for r in statuses} == {"failed"}


async def test_an_endpoint_failing_too_long_is_disabled(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    hook = await endpoint(db, tenant_id, "https://down.example/x")
    await _owe(db, tenant_id, 2)
    await db.execute("UPDATE webhook_endpoints SET failing_since = now() - interval '6 days'")
    [due] = await deliveries.claim(db, 1, LEASE_S, [], per_url=1, busy={}, box=BOX)
    retry_at = datetime.now(UTC) + timedelta(minutes=5)
    await endpoints.record_attempt(
        db,
        due,
        AttemptRecord(5, 503, "HTTP 503", ""),
        DeliveryStatus.PENDING,
        retry_at,
        disable=None,
        disable_after_s=5 * 86400,
    )
    shown = await endpoints.get(db, Owner(tenant_id), hook)
    assert shown is not None and shown.disabled_reason is DisabledReason.FAILING


async def test_pages_of_deliveries_walk_newest_first_by_id(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    hook = await endpoint(db, tenant_id, "https://a.example/x")
    await _owe(db, tenant_id, 5)
    seen, cursor = [], None
    while True:
        page, more = await deliveries.endpoint_page(
            db, Owner(tenant_id), hook, status=None, before=cursor, limit=2
        )
        seen += [d.id for d in page]
        if not more:
            break
        cursor = page[-1].id
    assert seen == sorted(seen, reverse=True) and len(seen) == 5
    none, _ = await deliveries.endpoint_page(
        db, Owner(await tenant(db)), hook, status=None, before=None, limit=10
    )
    assert none == []  # another tenant sees nothing


async def test_seconds_until_due_skips_blocked_urls(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    await endpoint(db, tenant_id, "https://a.example/x")
    await endpoint(db, tenant_id, "https://b.example/x")
    await _owe(db, tenant_id)
    await db.execute(
        "UPDATE webhook_deliveries SET next_attempt_at = now() + interval '100 seconds'"
        " WHERE url = 'https://b.example/x'"
    )
    assert (await deliveries.seconds_until_due(db, []) or 0) <= 0
    later = await deliveries.seconds_until_due(db, ["https://a.example:443"])
    assert later is not None and 95 < later <= 100


async def test_manual_retry_outcomes(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    await endpoint(db, tenant_id, "https://a.example/x")
    await _owe(db, tenant_id)
    [due] = await _claim(db, 1)
    assert await deliveries.retry(db, Owner(tenant_id), due.id) is deliveries.RetryOutcome.IN_FLIGHT
    await endpoints.record_attempt(
        db,
        due,
        AttemptRecord(1, 200, None, ""),
        DeliveryStatus.SUCCEEDED,
        None,
        disable=None,
        disable_after_s=60,
    )
    assert await deliveries.retry(db, Owner(tenant_id), due.id) is deliveries.RetryOutcome.QUEUED
    [again] = await _claim(db, 1)
    assert again.id == due.id and again.attempt == 2 and again.event_id == due.event_id
    assert (
        await deliveries.retry(db, Owner(await tenant(db)), due.id)
        is deliveries.RetryOutcome.NOT_FOUND
    )
