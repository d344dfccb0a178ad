"""The worker's and the dispatcher's own parts against real Postgres, no process started:
the heartbeat's lease, a result that cannot be stored, an attempt record that cannot be
made."""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest_asyncio

from schemas.events import EventType, WebhookTest
from schemas.jobs import JobResult
from shared.domain.crews import CrewRegistry
from shared.domain.owners import Owner
from shared.runtime.db import create_pool
from shared.runtime.secret_box import generate_key
from shared.runtime.settings import Settings
from shared.store import deliveries, events, jobs
from tests.fakes import TcpProxy, postgres_proxy
from tests.integration.factories import BOX, endpoint, reap, start, submit, tenant
from worker.checkpoints import CheckpointKeeper
from worker.crew.pool import CrewPool
from worker.dispatcher.delivery import Answer
from worker.dispatcher.main import Dispatcher
from worker.runner import ActiveJob, JobRunner, StopReason

FAST = Settings(heartbeat_interval=0.2, heartbeat_timeout=2.0)


def _runner(db: asyncpg.Pool, settings: Settings = FAST) -> JobRunner:
    async def after_commit(after: jobs.AfterCommit) -> None:
        assert not after.queue, f"nothing should be queued here, got {after.job_ids}"

    registry = CrewRegistry.load([Path(__file__).parent.parent / "crews"])
    crews = CrewPool(1, max_jobs=1, max_rss_mb=64)  # never started: no process here
    keeper = CheckpointKeeper(db, None, 1 << 20)
    return JobRunner(settings, db, crews, registry, "w-test", after_commit, keeper)


@pytest_asyncio.fixture
async def proxied(db_url: str) -> AsyncIterator[tuple[TcpProxy, asyncpg.Pool]]:
    """A pool whose every connection goes through a proxy the test can cut."""
    proxy, through = postgres_proxy(db_url)
    await proxy.start()
    pool = await create_pool(through(proxy.port), role="test", min_size=1, max_size=2)
    yield proxy, pool
    proxy.restore()
    pool.terminate()
    await proxy.stop()


async def test_a_heartbeat_that_cannot_run_stops_its_crew_at_once(db: asyncpg.Pool) -> None:
    job = await submit(db, await tenant(db))
    active = ActiveJob(await start(db, job.id), asyncio.get_running_loop().time())
    heartbeat = asyncio.create_task(_runner(db)._heartbeat(active))
    await db.execute(
        """
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'heartbeats refused'; END $$;
        CREATE TRIGGER refuse BEFORE UPDATE ON jobs FOR EACH ROW
            WHEN (OLD.status = 'running' AND NEW.status = 'running') EXECUTE FUNCTION refuse();
        """
    )
    async with asyncio.timeout(1.5):  # well within the lease
        await active.stop.wait()
    assert active.reason is StopReason.LOST
    await asyncio.wait_for(heartbeat, 1)  # it ended by itself, without raising


async def test_a_heartbeat_cut_off_from_postgres_stops_its_crew_before_the_lease_ends(
    db: asyncpg.Pool, proxied: tuple[TcpProxy, asyncpg.Pool]
) -> None:
    proxy, pool = proxied
    job = await submit(db, await tenant(db))
    claimed_at = asyncio.get_running_loop().time()
    active = ActiveJob(await start(db, job.id), claimed_at)
    heartbeat = asyncio.create_task(_runner(pool)._heartbeat(active))
    await asyncio.sleep(0.5)  # a few renewals go through
    renewed = await db.fetchval("SELECT last_activity_at FROM jobs WHERE id = $1", job.id)
    proxy.cut()
    cut_at = time.monotonic()
    async with asyncio.timeout(FAST.heartbeat_timeout):
        await active.stop.wait()
    stopped_after = time.monotonic() - cut_at
    assert active.reason is StopReason.LOST
    # Stopped once renewals had failed for a while, and before the reaper's bound: from
    # the last renewal Postgres saw, less than heartbeat_timeout had passed.
    assert stopped_after > FAST.heartbeat_interval
    silent_for = await db.fetchval("SELECT extract(epoch FROM now() - $1::timestamptz)", renewed)
    assert silent_for < FAST.heartbeat_timeout
    assert await reap(db, FAST.heartbeat_timeout, 30) == jobs.AfterCommit()  # not yet due
    await asyncio.wait_for(heartbeat, 1)


async def test_a_result_that_cannot_be_stored_fails_the_job_instead_of_leaving_it_running(
    db: asyncpg.Pool,
) -> None:
    job = await submit(db, await tenant(db))
    claim = await start(db, job.id)
    nested: dict[str, object] = {}
    deep = nested
    for _ in range(300):
        deep["x"] = {}
        deep = deep["x"]  # type: ignore[assignment]
    result = JobResult(raw="r", structured=nested, tasks=[], models=[], offline=False)
    assert await _runner(db)._complete(claim, result, None) == "failed"
    got = await jobs.get(db, Owner(claim.tenant_id), job.id)
    assert got is not None and got.status == "failed" and got.error is not None
    assert got.error.code == "CREW_ERROR"
    assert got.error.message.startswith("the crew's result could not be stored")


async def _claimed(db: asyncpg.Pool) -> deliveries.Due:
    tenant_id = await tenant(db)
    await endpoint(db, tenant_id, "https://a.example/x")
    async with db.acquire() as conn:
        await events.emit(
            conn, tenant_id=tenant_id, type=EventType.JOB_FAILED, data=WebhookTest(endpoint_id="-")
        )
    [due] = await deliveries.claim(db, 1, 60, [], per_url=4, busy={}, box=BOX)
    return due


def _answer(status: int, body: str) -> Answer:
    record = deliveries.AttemptRecord(7, status, None, body)
    ok = 200 <= status < 300
    return Answer(record, succeeded=ok, gone=False, retry_after_s=None, timed_out=False)


async def test_an_attempt_that_cannot_be_stored_is_recorded_as_failed(db: asyncpg.Pool) -> None:
    due = await _claimed(db)
    await db.execute(
        """
        CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
            IF NEW.response_body LIKE '%poison%' THEN RAISE EXCEPTION 'unstorable'; END IF;
            RETURN NEW; END $$;
        CREATE TRIGGER poison BEFORE INSERT ON delivery_attempts FOR EACH ROW
            EXECUTE FUNCTION poison();
        """
    )
    dispatcher = Dispatcher(Settings(webhook_backoff=[0, 5], secret_key=generate_key()))
    await dispatcher._record(db, due, _answer(200, "poison"), time.monotonic())
    delivery = await deliveries.get(db, Owner(due.tenant_id), due.id)
    assert delivery is not None and delivery.status == "pending"  # retried, never lost
    [attempt] = delivery.attempts
    assert attempt.status_code == 200 and attempt.response_body is None
    assert attempt.error == "the attempt could not be stored: RaiseError"


async def test_recording_gives_up_before_the_lease_runs_out(
    db: asyncpg.Pool, proxied: tuple[TcpProxy, asyncpg.Pool]
) -> None:
    proxy, pool = proxied
    due = await _claimed(db)
    dispatcher = Dispatcher(Settings(webhook_timeout=1, secret_key=generate_key()))
    # Claimed long enough ago that 1.5 s of its lease is left before the record's margin.
    claimed_at = time.monotonic() - dispatcher.lease_s + 5 + 1.5
    proxy.cut()
    started = time.monotonic()
    await dispatcher._record(pool, due, _answer(200, "ok"), claimed_at)
    assert time.monotonic() - started < 3  # it stopped trying; it did not raise
    row = await db.fetchrow("SELECT status, attempt_count FROM webhook_deliveries")
    # Still owed: made again once the lease runs out.
    assert row is not None and (row["status"], row["attempt_count"]) == ("pending", 1)
