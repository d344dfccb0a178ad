"""No job lost when a worker, Redis or Postgres fails, and a clean drain on SIGTERM.

Each scenario runs on a platform of its own and records how long recovery took."""

import asyncio
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from crewq.embedded import EmbeddedPostgres, EmbeddedRedis
from tests.fakes import FakeLLM
from tests.harness import Platform, Process, Services

pytestmark = pytest.mark.slow


def _owner(workers: list[Process], worker_id: str) -> Process:
    return next(w for w in workers if f"-{w.pid}-" in worker_id)


async def test_worker_killed_mid_job_is_recovered_by_another(
    own_stack: Platform, llm: FakeLLM, measure: Callable[[str, float], None]
) -> None:
    await own_stack.start_api()
    workers = [await own_stack.start_worker(), await own_stack.start_worker()]
    job = await own_stack.submit("echo", {"message": "[[sleep:3]] survive-kill"})
    running = await own_stack.wait_for_status(job["id"], {"running"}, timeout=30)
    victim = _owner(workers, running["worker_id"])
    while not llm.requests_with("survive-kill"):
        await asyncio.sleep(0.05)

    victim.kill()
    killed_at = time.time()
    done = await own_stack.wait_for_status(job["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed"
    restarted = datetime.fromisoformat(done["attempts"][1]["started_at"]).timestamp()
    measure("worker SIGKILL: job restarted on another worker after", restarted - killed_at)
    survivor = next(w for w in workers if w is not victim)
    assert f"-{survivor.pid}-" in done["worker_id"]
    assert [a["outcome"] for a in done["attempts"]] == ["lost", "completed"]
    assert done["attempts"][0]["error"]["code"] == "WORKER_LOST"
    assert await own_stack.job_events(job["id"]) == [
        "job.started",
        "job.retrying",
        "job.started",
        "job.completed",
    ]


async def test_flushed_redis_loses_no_pending_job(
    own_stack: Platform, measure: Callable[[str, float], None]
) -> None:
    await own_stack.start_api()
    jobs = [await own_stack.submit("echo", {"message": f"flushed {i}"}) for i in range(10)]
    client = aioredis.Redis.from_url(own_stack.redis_url)
    try:
        assert await client.zcard("crewq:queue") == 10
        await client.flushdb()
    finally:
        await client.aclose()
    flushed_at = time.monotonic()
    await own_stack.start_worker()
    done = [
        await own_stack.wait_for_status(j["id"], {"completed", "failed"}, timeout=60) for j in jobs
    ]
    measure(
        "redis FLUSHDB with 10 pending jobs: all completed after", time.monotonic() - flushed_at
    )
    assert {j["status"] for j in done} == {"completed"}
    assert all(j["attempt"] == 1 for j in done), "a job ran twice"
    for job in jobs:
        assert await own_stack.job_events(job["id"]) == ["job.started", "job.completed"]


async def test_everything_reconnects_when_redis_restarts(
    services: Services, workdir: Path, llm: FakeLLM, measure: Callable[[str, float], None]
) -> None:
    own_redis = EmbeddedRedis(workdir / "restarting-redis", persist=False)
    platform = Platform(services, workdir, llm.base_url, CREWQ_REDIS_URL=own_redis.url)
    platform.redis_url = own_redis.url
    try:
        await platform.prepare()
        await platform.start_api()
        await platform.start_worker()
        await platform.start_dispatcher()
        first = await platform.submit("echo", {"message": "before restart"})
        await platform.wait_for_status(first["id"], {"completed"})

        own_redis.stop()
        await asyncio.sleep(2)
        during = await platform.submit(
            "echo", {"message": "while redis is down"}
        )  # stored, not queued
        own_redis = EmbeddedRedis(workdir / "restarting-redis", persist=False, port=own_redis.port)
        back_at = time.monotonic()
        after = await platform.submit("echo", {"message": "after restart"})
        for job in (during, after):
            done = await platform.wait_for_status(job["id"], {"completed", "failed"}, timeout=60)
            assert done["status"] == "completed" and done["attempt"] == 1
        measure(
            "redis restart: jobs submitted during/after the outage completed after",
            time.monotonic() - back_at,
        )
        assert all(p.popen.poll() is None for p in platform.processes), "a process died with Redis"
    finally:
        await platform.close()
        own_redis.stop()


async def test_dropped_postgres_connections_do_not_lose_the_outcome(own_stack: Platform) -> None:
    await own_stack.start_api()
    await own_stack.start_worker()
    job = await own_stack.submit("echo", {"message": "[[sleep:2]] pg-drop"})
    await own_stack.wait_for_status(job["id"], {"running"}, timeout=30)
    assert await own_stack.terminate_backends() > 0
    done = await own_stack.wait_for_status(job["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed" and done["attempt"] == 1


async def test_postgres_outage_gives_503_and_the_job_still_finishes(
    workdir: Path, llm: FakeLLM, measure: Callable[[str, float], None]
) -> None:
    data = workdir / "outage"
    postgres = EmbeddedPostgres(data)
    services = Services.__new__(Services)
    services.database_url = postgres.url
    services.redis_url = ""
    redis_server = EmbeddedRedis(data, persist=False)
    services.redis_url = redis_server.url
    services._postgres, services._redis = None, None
    # A lease long enough to outlast the outage: the crew finishing meanwhile keeps its
    # outcome. (A lease that runs out stops the crew instead: tests/integration.)
    platform = Platform(services, workdir, llm.base_url, CREWQ_HEARTBEAT_TIMEOUT="30")
    try:
        await platform.prepare()
        await platform.start_api()
        await platform.start_worker()
        job = await platform.submit("echo", {"message": "[[sleep:4]] outage"})
        await platform.wait_for_status(job["id"], {"running"}, timeout=30)

        postgres.stop()
        status, body, headers = await platform.request("GET", f"/v1/jobs/{job['id']}")
        assert status == 503
        assert body["error"]["code"] == "SERVICE_UNAVAILABLE" and headers["Retry-After"]
        status, body, _ = await platform.request(
            "POST", "/v1/jobs", json={"crew": "echo", "inputs": {"message": "x"}}
        )
        assert status == 503 and body["error"]["request_id"]
        await asyncio.sleep(5)  # the crew finishes while Postgres is down

        postgres = EmbeddedPostgres(data)
        back_at = time.monotonic()
        done = await platform.wait_for_status(job["id"], {"completed", "failed"}, timeout=60)
        measure(
            "postgres outage: outcome recorded after postgres came back", time.monotonic() - back_at
        )
        assert done["status"] == "completed" and done["attempt"] == 1, done
    finally:
        await platform.close()
        redis_server.stop()
        postgres.stop()


async def test_sigterm_drains_then_hands_back_without_spending_an_attempt(
    own_stack: Platform, measure: Callable[[str, float], None]
) -> None:
    await own_stack.start_api()
    draining = await own_stack.start_worker(CREWQ_DRAIN_TIMEOUT="5")
    quick = await own_stack.submit("echo", {"message": "[[sleep:0.5]] quick"})
    slow = await own_stack.submit("echo", {"message": "[[sleep:20]] slow"}, max_retries=0)
    await own_stack.wait_for_status(slow["id"], {"running"}, timeout=30)
    await own_stack.wait_for_status(quick["id"], {"running", "completed"}, timeout=30)

    assert await draining.stop() == 0
    quick_done = await own_stack.job(quick["id"])
    assert quick_done["status"] == "completed", "a crew within the drain timeout must finish"
    handed_back = await own_stack.job(slow["id"])
    assert handed_back["status"] == "pending"
    assert handed_back["attempts"][0]["outcome"] == "released"

    conn: asyncpg.Connection = await own_stack.db()
    try:  # let the second run be quick: the crew reads the same inputs again
        await conn.execute(
            'UPDATE jobs SET inputs = \'{"message": "[[sleep:0.5]] slow"}\' WHERE id = $1',
            slow["id"],
        )
    finally:
        await conn.close()
    started = time.monotonic()
    await own_stack.start_worker()
    done = await own_stack.wait_for_status(slow["id"], {"completed", "failed"}, timeout=60)
    measure("drain: handed-back job completed on a new worker after", time.monotonic() - started)
    # max_retries=0: had the hand-back spent an attempt, there would be none left.
    assert done["status"] == "completed" and done["attempt"] == 2


async def test_draining_worker_still_heartbeats_and_honours_cancels(own_stack: Platform) -> None:
    await own_stack.start_api()
    draining = await own_stack.start_worker(CREWQ_DRAIN_TIMEOUT="20")
    job = await own_stack.submit("echo", {"message": "[[sleep:30]] drain-cancel"})
    await own_stack.wait_for_status(job["id"], {"running"}, timeout=30)
    draining.popen.send_signal(signal.SIGTERM)
    await draining.wait_for_log("draining")
    before = (await own_stack.job(job["id"]))["last_activity_at"]
    await asyncio.sleep(2)
    during = await own_stack.job(job["id"])
    assert during["status"] == "running" and during["last_activity_at"] > before, "no heartbeat"

    asked = time.monotonic()
    status, _, _ = await own_stack.request("POST", f"/v1/jobs/{job['id']}/cancel")
    assert status == 202
    done = await own_stack.wait_for_status(
        job["id"], {"cancelled", "completed", "failed"}, timeout=10
    )
    assert done["status"] == "cancelled" and time.monotonic() - asked < 5
    assert await asyncio.wait_for(asyncio.to_thread(draining.popen.wait), timeout=20) == 0


async def test_cancel_of_a_job_whose_worker_died_is_not_lost(own_stack: Platform) -> None:
    await own_stack.start_api()
    first = await own_stack.start_worker()
    job = await own_stack.submit("echo", {"message": "[[sleep:30]] cancel-dead"})
    await own_stack.wait_for_status(job["id"], {"running"}, timeout=30)
    first.kill()
    status, _, _ = await own_stack.request("POST", f"/v1/jobs/{job['id']}/cancel")
    assert status == 202  # still running as far as Postgres knows
    await own_stack.start_worker()
    done = await own_stack.wait_for_status(job["id"], {"cancelled", "completed", "failed"}, 60)
    assert done["status"] == "cancelled"
    assert await own_stack.job_events(job["id"]) == ["job.started", "job.retrying", "job.cancelled"]
