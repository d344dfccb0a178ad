"""Issue 19: the dispatcher's per-receiver limit and circuit breaker count receivers by
origin (scheme, host, port), so URLs that differ only in path, query string, letter case or
an explicit default port share one limit and one breaker: varying a query string no longer
makes a receiver new."""

import asyncpg

from schemas.events import EventType, WebhookTest
from shared.store import deliveries, events
from shared.webhooks.urls import origin
from tests.integration.factories import BOX, endpoint, tenant
from worker.dispatcher.main import EndpointGuard

LEASE_S = 60.0
ORIGIN = "https://hooks.example.com:443"
# One receiver, written four ways.
URLS = [
    "https://hooks.example.com/a?attempt=1",
    "https://HOOKS.example.com:443/b?attempt=2",
    "https://hooks.example.com./c#x",
]


async def _owe_to_one_receiver(db: asyncpg.Pool) -> str:
    tenant_id = await tenant(db)
    for url in URLS:
        await endpoint(db, tenant_id, url)
    async with db.acquire() as conn:
        await events.emit(
            conn,
            tenant_id=tenant_id,
            type=EventType.JOB_FAILED,
            data=WebhookTest(endpoint_id="-", message="owed"),
            job_webhook_url="https://hooks.example.com/own?token=4",
        )
    return tenant_id


async def test_urls_differing_in_path_or_query_share_one_in_flight_limit(
    db: asyncpg.Pool,
) -> None:
    await _owe_to_one_receiver(db)
    assert {r["origin"] for r in await db.fetch("SELECT origin FROM webhook_deliveries")} == {
        ORIGIN
    }
    [first] = await deliveries.claim(db, 10, LEASE_S, [], per_url=1, busy={}, box=BOX)
    assert first.origin == ORIGIN
    # One already in flight to that receiver: with a limit of 2, one more, not three.
    more = await deliveries.claim(db, 10, LEASE_S, [], per_url=2, busy={ORIGIN: 1}, box=BOX)
    assert len(more) == 1
    # Its circuit open (or its limit reached): none of its URLs is claimed, nor waited for.
    assert await deliveries.claim(db, 10, LEASE_S, [ORIGIN], per_url=9, busy={}, box=BOX) == []
    assert await deliveries.seconds_until_due(db, [ORIGIN]) is None
    rest = await deliveries.claim(db, 10, LEASE_S, [], per_url=9, busy={}, box=BOX)
    assert len(rest) == 2


async def test_an_endpoint_moved_elsewhere_takes_its_owed_deliveries_origin_along(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    hook = await endpoint(db, tenant_id, "https://old.example/x")
    async with db.acquire() as conn:
        await events.emit(
            conn,
            tenant_id=tenant_id,
            type=EventType.JOB_FAILED,
            data=WebhookTest(endpoint_id="-", message="owed"),
        )
    async with db.acquire() as conn:  # what a URL change of the endpoint does
        await deliveries.follow_url(conn, hook, "https://new.example:8443/x?v=2")
    [due] = await deliveries.claim(db, 10, LEASE_S, [], per_url=1, busy={}, box=BOX)
    assert due.url == "https://new.example:8443/x?v=2"
    assert due.origin == "https://new.example:8443"


def test_the_circuit_breaker_opened_by_one_url_holds_for_every_url_of_its_receiver() -> None:
    guard = EndpointGuard(per_endpoint=1, threshold=2, cooldown_s=3600)
    receiver = [origin(url) for url in URLS]
    assert guard.admit(receiver[0])
    assert not guard.admit(receiver[1])  # the limit is the receiver's, not the URL's
    guard.done(receiver[0], succeeded=False)
    assert guard.admit(receiver[1])
    guard.done(receiver[1], succeeded=False)  # the second failure opens the circuit
    assert not guard.admit(receiver[2])
    assert not guard.admit(origin("https://hooks.example.com/?fresh=query"))
    assert guard.blocked() == [ORIGIN]
    assert guard.admit(origin("https://other.example.com/a"))
