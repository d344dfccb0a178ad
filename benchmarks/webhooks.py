"""Webhook delivery throughput and latency of one dispatcher.

    uv run python -m benchmarks.webhooks [--events 3000] [--urls 1 16] [--jobs 200]

Starts a real platform (embedded Postgres and Redis unless CREWQ_DATABASE_URL /
CREWQ_REDIS_URL are set, the API, one worker, one dispatcher) and a receiver on 127.0.0.1,
then prints:
- deliveries/s one dispatcher sustains: `--events` events owed at once (inserted straight
  into the outbox), spread over each of `--urls` endpoints in turn (one URL is bounded by
  the per-endpoint concurrency; several show the dispatcher's own ceiling);
- job end (`finished_at`) -> webhook received, p50/p99, for `--jobs` real jobs on the
  offline model, each `job.completed` sent to a registered endpoint;
- how long a quiet tenant's delivery waits while another tenant has `--backlog`
  deliveries due to receivers that take 0.5 s to answer.
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from shared.store.deliveries import DELIVERIES_CHANNEL
from tests.fakes import Receiver
from tests.harness import Platform, Services


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def register(platform: Platform, url: str, events: list[str], key: str | None = None) -> str:
    status, body, _ = await platform.request(
        "POST", "/v1/webhooks", key=key, json={"url": url, "events": events}
    )
    assert status == 201, body
    return str(body["id"])


async def owe_in_bulk(
    platform: Platform, tenant_id: str, endpoint_ids: list[str], events: int
) -> None:
    """`events` job.failed events owed at once, spread over the endpoints in turn: inserted
    straight into the outbox, as a backlog would stand after an outage."""
    run = f"b{time.monotonic_ns()}"
    conn = await platform.db()
    try:
        async with conn.transaction():
            await conn.execute(
                """
                INSERT INTO events (id, tenant_id, type, payload)
                SELECT 'evt_' || $3 || '_' || g, $1, 'job.failed',
                       jsonb_build_object('id', 'evt_' || $3 || '_' || g, 'type', 'job.failed',
                                          'created_at', now(), 'data', jsonb_build_object('n', g))
                  FROM generate_series(1, $2) AS g
                """,
                tenant_id,
                events,
                run,
            )
            await conn.execute(
                """
                INSERT INTO webhook_deliveries (id, event_id, tenant_id, endpoint_id, url)
                SELECT 'dlv_' || $3 || '_' || g, 'evt_' || $3 || '_' || g, $1,
                       ($4::text[])[1 + g % cardinality($4::text[])],
                       (SELECT url FROM webhook_endpoints
                         WHERE id = ($4::text[])[1 + g % cardinality($4::text[])])
                  FROM generate_series(1, $2) AS g
                """,
                tenant_id,
                events,
                run,
                endpoint_ids,
            )
            await conn.execute(f"NOTIFY {DELIVERIES_CHANNEL}")
    finally:
        await conn.close()


async def throughput(platform: Platform, receiver: Receiver, events: int, urls: int) -> float:
    """Deliveries/s from the moment `events` deliveries are owed to the last one recorded."""
    names = [f"t{urls}x{time.monotonic_ns()}-{i}" for i in range(urls)]
    endpoint_ids = [await register(platform, receiver.url(n), ["job.failed"]) for n in names]
    await owe_in_bulk(platform, platform.tenant_id, endpoint_ids, events)
    started = time.monotonic()
    conn = await platform.db()
    try:
        while (
            await conn.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = ANY($1)"
                " AND status = 'pending'",
                endpoint_ids,
            )
            > 0
        ):
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        failed = await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = ANY($1)"
            " AND status <> 'succeeded'",
            endpoint_ids,
        )
    finally:
        await conn.close()
    assert failed == 0, f"{failed} deliveries did not succeed"
    got = sum(len(receiver.at(n)) for n in names)
    print(
        f"{events} deliveries over {urls} URL(s): {events / elapsed:.0f} deliveries/s"
        f" ({elapsed:.2f} s; {got} requests received)"
    )
    return events / elapsed


async def tenant_isolation(platform: Platform, receiver: Receiver, backlog: int) -> None:
    """How long one tenant's new delivery waits while another tenant has `backlog`
    deliveries due to 64 receivers that take 0.5 s each to answer."""
    busy_key, busy_tenant, _ = await platform.new_tenant("backlogged")
    names = [f"slow{time.monotonic_ns()}-{i}" for i in range(64)]
    for name in names:
        receiver.configure(name, sleep=0.5)
    endpoint_ids = [
        await register(platform, receiver.url(n), ["job.failed"], key=busy_key) for n in names
    ]
    await owe_in_bulk(platform, busy_tenant, endpoint_ids, backlog)
    await asyncio.sleep(1)  # the dispatcher is busy with the backlog
    quiet_key, quiet_tenant, _ = await platform.new_tenant("quiet")
    quiet = f"quiet{time.monotonic_ns()}"
    await register(platform, receiver.url(quiet), ["job.failed"], key=quiet_key)
    conn = await platform.db()
    try:
        endpoint_id = await conn.fetchval(
            "SELECT id FROM webhook_endpoints WHERE tenant_id = $1", quiet_tenant
        )
    finally:
        await conn.close()
    owed = time.time()
    await owe_in_bulk(platform, quiet_tenant, [endpoint_id], 1)
    [got] = await receiver.wait_for(quiet, 1, timeout=600)
    conn = await platform.db()
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE tenant_id = $1 AND status = 'pending'",
            busy_tenant,
        )
    finally:
        await conn.close()
    print(
        f"a quiet tenant's delivery beside another's backlog of {backlog} to slow receivers:"
        f" received {got.at - owed:.2f} s after it was owed ({left} of the backlog still due)"
    )


async def job_latency(platform: Platform, receiver: Receiver, jobs: int) -> None:
    name = f"jobs-{time.monotonic_ns()}"
    await register(platform, receiver.url(name), ["job.completed"])
    ids = [(await platform.submit("echo", {"message": f"bench {i}"}))["id"] for i in range(jobs)]
    got = await receiver.wait_for(name, jobs, timeout=600)
    received = {r.event["data"]["id"]: r.at for r in got}
    conn = await platform.db()
    try:
        rows = await conn.fetch("SELECT id, finished_at FROM jobs WHERE id = ANY($1)", ids)
    finally:
        await conn.close()
    lags = [(received[r["id"]] - datetime.timestamp(r["finished_at"])) * 1000 for r in rows]
    print(
        f"{jobs} jobs, job finished_at -> webhook received: p50 {pct(lags, 50):.1f} ms,"
        f" p99 {pct(lags, 99):.1f} ms, max {max(lags):.1f} ms"
    )


async def main(events: int, url_counts: list[int], jobs: int, backlog: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="crewq-bench-"))
    services = Services(workdir)
    receiver = Receiver()
    await receiver.start()
    platform = Platform(
        services,
        workdir,
        "",
        OPENAI_API_KEY="",
        OPENAI_BASE_URL="",
        CREWQ_TENANT_MAX_WEBHOOK_ENDPOINTS="1000",
    )
    try:
        await platform.prepare()
        await platform.start_api()
        await platform.start_worker()
        await platform.start_dispatcher()
        s = platform.env
        print(
            "one dispatcher: concurrency"
            f" {s.get('CREWQ_DISPATCHER_CONCURRENCY', '32 (default)')}, per-endpoint"
            f" {s.get('CREWQ_WEBHOOK_ENDPOINT_CONCURRENCY', '4 (default)')};"
            " receiver in this process answers 200 at once"
        )
        await throughput(platform, receiver, 200, 1)  # warm-up: connections, plans
        for urls in url_counts:
            await throughput(platform, receiver, events, urls)
        warm = await platform.submit("echo", {"message": "warm-up"})
        await platform.wait_for_status(warm["id"], {"completed"})
        await job_latency(platform, receiver, jobs)
        await tenant_isolation(platform, receiver, backlog)
    finally:
        await platform.close()
        await receiver.stop()
        services.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--urls", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=3000)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.urls, args.jobs, args.backlog))
