"""shared/store/schedules.py against real Postgres: a tick makes one job however many
schedulers fire at once, missed ticks follow their schedule's policy, a paused schedule
makes none, and a schedule is its owner's (tenant and mode)."""

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest_asyncio

from schemas.schedules import MissedPolicy
from shared.domain.owners import Owner
from shared.runtime import queue
from shared.store import schedules
from tests.integration import factories
from worker.scheduler import fire_due

BOUNDS = schedules.Bounds(max_pending=10_000, cap=10, missed_after_s=60.0)


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[queue.Redis]:
    client = await queue.connect(redis_url)
    yield client
    await client.aclose()


async def _schedule(
    db: asyncpg.Pool,
    owner: Owner,
    *,
    interval_s: int = 60,
    missed: MissedPolicy = MissedPolicy.SKIP,
) -> str:
    made = await schedules.create(
        db,
        owner,
        schedules.NewSchedule(
            crew="echo",
            inputs={"message": "tick"},
            metadata={"team": "red"},
            timeout_s=60,
            max_retries=0,
            timing=schedules.Timing(interval_s=interval_s),
            missed=missed,
        ),
    )
    return made.id


async def _due_since(db: asyncpg.Pool, schedule_id: str, seconds: float) -> None:
    """Make the schedule's next tick due `seconds` ago (as time passing would)."""
    await db.execute(
        "UPDATE schedules SET next_run_at = now() - make_interval(secs => $2) WHERE id = $1",
        schedule_id,
        seconds,
    )


async def _jobs_of(db: asyncpg.Pool, schedule_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT id, metadata, created_at FROM jobs WHERE metadata @> $1 ORDER BY id",
        {"schedule_id": schedule_id},
    )


async def test_many_schedulers_at_once_make_one_job_per_tick(db: asyncpg.Pool) -> None:
    owner = Owner(await factories.tenant(db))
    schedule_id = await _schedule(db, owner)
    for tick in range(1, 4):
        await _due_since(db, schedule_id, 1)
        fired = await asyncio.gather(*(schedules.fire_one(db, BOUNDS) for _ in range(8)))
        made = [f for f in fired if f is not None]
        assert len(made) == 1, made
        assert made[0].job_id is not None and not made[0].missed
        assert len(await _jobs_of(db, schedule_id)) == tick
    jobs = await _jobs_of(db, schedule_id)
    assert jobs[0]["metadata"] == {"team": "red", "schedule_id": schedule_id}
    schedule = await schedules.get(db, owner, schedule_id)
    assert schedule is not None and schedule.last_job_id == jobs[-1]["id"]
    assert schedule.next_run_at is not None and len(schedule.next_runs) == 5
    assert schedule.next_runs[1] - schedule.next_runs[0] == timedelta(seconds=60)


async def test_a_tick_fired_twice_by_two_loops_makes_one_job(
    db: asyncpg.Pool, redis: queue.Redis
) -> None:
    """Two schedulers' whole passes, as two workers run them, racing over the same due tick."""
    owner = Owner(await factories.tenant(db))
    schedule_id = await _schedule(db, owner)
    await _due_since(db, schedule_id, 0.5)
    first, second = await asyncio.gather(fire_due(db, redis, BOUNDS), fire_due(db, redis, BOUNDS))
    assert len(first) + len(second) == 1
    (job,) = await _jobs_of(db, schedule_id)
    assert (await queue.states(redis, [job["id"]]))[0].held


async def test_the_next_tick_keeps_the_interval_phase(db: asyncpg.Pool) -> None:
    owner = Owner(await factories.tenant(db))
    schedule_id = await _schedule(db, owner, interval_s=10)
    await _due_since(db, schedule_id, 3)
    due = await db.fetchval("SELECT next_run_at FROM schedules WHERE id = $1", schedule_id)
    fired = await schedules.fire_one(db, BOUNDS)
    assert fired is not None and fired.due == due
    after = await db.fetchval("SELECT next_run_at FROM schedules WHERE id = $1", schedule_id)
    assert after == due + timedelta(seconds=10)
    (job,) = await _jobs_of(db, schedule_id)
    assert job["created_at"] >= due


async def test_missed_ticks_are_skipped_under_skip(db: asyncpg.Pool) -> None:
    owner = Owner(await factories.tenant(db))
    schedule_id = await _schedule(db, owner, interval_s=60, missed=MissedPolicy.SKIP)
    await _due_since(db, schedule_id, 3600)
    fired = await schedules.fire_one(db, BOUNDS)
    assert fired is not None and fired.missed and fired.job_id is None
    assert await _jobs_of(db, schedule_id) == []
    assert await schedules.fire_one(db, BOUNDS) is None  # the next tick is still to come
    ahead = await db.fetchval(
        "SELECT next_run_at - now() FROM schedules WHERE id = $1", schedule_id
    )
    assert timedelta(0) < ahead <= timedelta(seconds=60)


async def test_missed_ticks_make_one_job_under_run_once(db: asyncpg.Pool) -> None:
    owner = Owner(await factories.tenant(db))
    schedule_id = await _schedule(db, owner, interval_s=60, missed=MissedPolicy.RUN_ONCE)
    await _due_since(db, schedule_id, 3600)
    fired = await schedules.fire_one(db, BOUNDS)
    assert fired is not None and fired.missed and fired.job_id is not None
    assert await schedules.fire_one(db, BOUNDS) is None
    assert len(await _jobs_of(db, schedule_id)) == 1


async def test_a_paused_schedule_makes_no_job_and_resumes_from_a_tick_to_come(
    db: asyncpg.Pool,
) -> None:
    owner = Owner(await factories.tenant(db))
    schedule_id = await _schedule(db, owner, interval_s=60)
    paused = await schedules.pause(db, owner, schedule_id)
    assert paused is not None and paused.paused and paused.next_runs == []
    await _due_since(db, schedule_id, 3600)
    assert await schedules.fire_one(db, BOUNDS) is None
    resumed = await schedules.resume(db, owner, schedule_id)
    assert resumed is not None and not resumed.paused
    now = await db.fetchval("SELECT now()")
    assert resumed.next_run_at is not None and resumed.next_run_at > now
    assert await schedules.fire_one(db, BOUNDS) is None
    assert await _jobs_of(db, schedule_id) == []


async def test_a_tick_the_quota_refuses_makes_no_job_and_moves_on(db: asyncpg.Pool) -> None:
    tenant_id = await factories.tenant(db, monthly_job_limit=1)
    await factories.submit(db, tenant_id, monthly_limit=1)  # the month's one job
    schedule_id = await _schedule(db, Owner(tenant_id))
    await _due_since(db, schedule_id, 1)
    fired = await schedules.fire_one(db, BOUNDS)
    assert fired is not None and fired.job_id is None and fired.refused is not None
    assert await schedules.fire_one(db, BOUNDS) is None
    assert await _jobs_of(db, schedule_id) == []


async def test_a_schedule_is_its_owners_only(db: asyncpg.Pool) -> None:
    tenant_id = await factories.tenant(db)
    live, test = Owner(tenant_id), Owner(tenant_id, livemode=False)
    other = Owner(await factories.tenant(db))
    schedule_id = await _schedule(db, live)
    for stranger in (test, other):
        assert await schedules.get(db, stranger, schedule_id) is None
        assert await schedules.pause(db, stranger, schedule_id) is None
        assert await schedules.resume(db, stranger, schedule_id) is None
        assert not await schedules.delete(db, stranger, schedule_id)
        assert (await schedules.page(db, stranger, before=None, limit=10))[0] == []
    listed, more = await schedules.page(db, live, before=None, limit=10)
    assert [s.id for s in listed] == [schedule_id] and not more
    assert await schedules.delete(db, live, schedule_id)
    assert await schedules.get(db, live, schedule_id) is None
