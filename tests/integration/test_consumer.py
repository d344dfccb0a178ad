"""worker/consumer.py with real arq and Redis, no crewq process: a worker whose backstop
poll is a minute away still starts a job the moment it is queued, and the next job the
moment a slot frees."""

import asyncio
import contextlib
import pickle
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from arq.connections import ArqRedis
from arq.constants import job_key_prefix
from arq.worker import func

from shared.runtime import queue
from worker.consumer import PromptWorker, consumer_for, listen

# Far beyond the tests' own waits: a job that starts in time was woken, not polled.
BACKSTOP_S = 60.0
IN_TIME_S = 10.0


class Fleet:
    """One PromptWorker and its listener; `release` lets its running jobs finish."""

    def __init__(self, redis: ArqRedis, max_jobs: int) -> None:
        self.started: asyncio.Queue[str] = asyncio.Queue()
        self.release = asyncio.Event()
        self.cancelled: list[str] = []
        self.wake = asyncio.Event()

        async def run_job(ctx: dict[str, Any], job_id: str) -> None:
            self.started.put_nowait(job_id)
            await self.release.wait()

        self.worker = PromptWorker(
            wake=self.wake,
            functions=[func(run_job, name=queue.RUN_JOB, keep_result=0)],
            redis_pool=redis,
            queue_name=queue.QUEUE_NAME,
            max_jobs=max_jobs,
            keep_result=0,
            poll_delay=BACKSTOP_S,
            handle_signals=False,
        )
        self.tasks = [
            asyncio.create_task(self.worker.async_run()),
            asyncio.create_task(listen(redis, self.wake, self.cancelled.append)),
        ]

    async def next_started(self) -> str:
        async with asyncio.timeout(IN_TIME_S):
            return await self.started.get()

    async def close(self) -> None:
        self.release.set()
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    client = await queue.connect(redis_url)
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def fleet_of(redis: ArqRedis, max_jobs: int, settle_s: float = 1.0) -> AsyncIterator[Fleet]:
    """A fleet, `settle_s` after its start: by default its first poll (of an empty queue) is
    done and the next is a backstop away."""
    fleet = Fleet(redis, max_jobs)
    try:
        await asyncio.sleep(settle_s)
        yield fleet
    finally:
        await fleet.close()


async def test_a_queued_job_starts_without_waiting_for_the_poll(redis: ArqRedis) -> None:
    async with fleet_of(redis, max_jobs=2) as fleet:
        assert await queue.enqueue(redis, "job_now")
        assert await fleet.next_started() == "job_now"


async def test_a_freed_slot_takes_the_next_job_at_once(redis: ArqRedis) -> None:
    async with fleet_of(redis, max_jobs=1) as fleet:
        assert await queue.enqueue(redis, "job_first")
        assert await fleet.next_started() == "job_first"
        assert await queue.enqueue(redis, "job_second")  # its wake-up finds no free slot
        await asyncio.sleep(0.5)
        assert fleet.started.empty()
        fleet.release.set()
        assert await fleet.next_started() == "job_second"


async def test_a_deferred_job_wakes_no_one_and_a_requeue_does(redis: ArqRedis) -> None:
    async with fleet_of(redis, max_jobs=2) as fleet:
        fleet.wake.clear()
        assert await queue.enqueue(redis, "job_later", datetime.now(UTC) + timedelta(hours=1))
        await asyncio.sleep(0.5)
        assert not fleet.wake.is_set() and fleet.started.empty()
        await queue.requeue_now(redis, "job_later")  # arq still holds it: only its score moves
        assert await fleet.next_started() == "job_later"


async def test_a_payload_crewq_did_not_write_is_refused_and_the_next_job_runs(
    redis: ArqRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Only crewq's JSON record is taken up: anything else (here a pickle of arq's own
    record, and a JSON record naming another job) is logged, dropped and never run."""
    pickled = pickle.dumps({"t": None, "f": queue.RUN_JOB, "a": ("job_p",), "k": {}, "et": 1})
    elsewhere = queue.job_record("job_other", 1)
    async with fleet_of(redis, max_jobs=1) as fleet:
        for job_id, payload in (("job_p", pickled), ("job_x", elsewhere)):
            await redis.set(job_key_prefix + job_id, payload)
            await redis.zadd(queue.QUEUE_NAME, {job_id: 1})
        assert await queue.enqueue(redis, "job_ok")
        assert await fleet.next_started() == "job_ok"
        fleet.release.set()
        async with asyncio.timeout(IN_TIME_S):
            while await queue.depth(redis):
                await asyncio.sleep(0.05)
    assert fleet.started.empty()  # neither refused payload ran
    refusals = [r.getMessage() for r in caplog.records if r.name == "worker.consumer"]
    assert sorted(refusals) == [
        "job job_p: refused its queue payload, not JSON (a pickle, perhaps); nothing was run",
        "job job_x: refused its queue payload, it names another job ('job_other'); nothing was run",
    ]
    assert not any([await redis.exists(job_key_prefix + j) for j in ("job_p", "job_x")])


async def test_cancel_requests_reach_the_callback(redis: ArqRedis) -> None:
    async with fleet_of(redis, max_jobs=1) as fleet:
        await queue.publish_cancel(redis, "job_x")
        async with asyncio.timeout(IN_TIME_S):
            while not fleet.cancelled:
                await asyncio.sleep(0.01)
        assert fleet.cancelled == ["job_x"]


async def test_a_cancel_arriving_with_a_wake_up_still_stops_the_worker(redis: ArqRedis) -> None:
    """The worker's shutdown cancels arq's main task; one that met a wake-up at that moment
    was lost, and the worker never stopped (Python 3.11's wait_for, CPython #86296)."""
    for _ in range(10):
        async with fleet_of(redis, max_jobs=1, settle_s=0.1) as fleet:
            main = fleet.worker.main_task
            assert main is not None and not main.done()
            fleet.wake.set()
            await asyncio.sleep(0)  # the wait ends; the poll loop has not resumed yet
            main.cancel()
            # async_run ends with its main task.
            stopped, _ = await asyncio.wait({fleet.tasks[0]}, timeout=IN_TIME_S)
            assert stopped, "the worker went on polling after it was cancelled"


async def test_the_handlers_typed_answers_become_arqs(redis: ArqRedis) -> None:
    """`Requeue(after)` keeps the job on the queue and offers it again once `after` has
    passed; `Done` ends it, and the queue forgets it. The handler never names arq."""
    offered: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()

    async def handle(job_id: str) -> queue.Handled:
        offered.append((job_id, loop.time()))
        return queue.Requeue(0.5) if len(offered) == 1 else queue.Done("completed")

    wake = asyncio.Event()
    worker = consumer_for(redis, wake, handle, max_jobs=1, job_timeout_s=30)
    running = asyncio.create_task(worker.consume())
    try:
        assert await queue.enqueue(redis, "job_twice")
        async with asyncio.timeout(IN_TIME_S):
            while len(offered) < 2 or await redis.exists(job_key_prefix + "job_twice"):
                await asyncio.sleep(0.05)
        assert [job_id for job_id, _ in offered] == ["job_twice", "job_twice"]
        assert offered[1][1] - offered[0][1] >= 0.5  # not before its deferral ran out
        assert await queue.depth(redis) == 0 and worker.running() == []
    finally:
        worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await running
