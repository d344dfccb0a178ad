"""shared/runtime/queue.py against real Redis: crewq's one-round-trip enqueue writes exactly what
arq's own `enqueue_job` writes with crewq's serializer (JSON, never pickle), so arq's worker
takes it as its own, and holds a job at most once."""

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest_asyncio
from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import Job as ArqJob
from arq.jobs import JobStatus

from shared.runtime import queue


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    client = await queue.connect(redis_url)
    yield client
    await client.aclose()


async def _entry(redis: ArqRedis, job_id: str) -> tuple[float | None, int, dict[str, object]]:
    """The queue score, the job key's TTL (ms) and what arq reads of the job."""
    score = await redis.zscore(queue.QUEUE_NAME, job_id)
    ttl = await redis.pttl(job_key_prefix + job_id)
    info = await _job(redis, job_id).info()
    assert info is not None
    return score, ttl, {"function": info.function, "args": info.args, "kwargs": info.kwargs}


def _job(redis: ArqRedis, job_id: str) -> ArqJob:
    return ArqJob(job_id, redis, _queue_name=queue.QUEUE_NAME, _deserializer=queue.load_job)


async def test_enqueue_writes_what_arq_writes(redis: ArqRedis) -> None:
    before = time.time() * 1000 - 1  # arq rounds to the millisecond
    assert await queue.enqueue(redis, "job_ours")
    await redis.enqueue_job(
        queue.RUN_JOB, "job_arqs", _job_id="job_arqs", _queue_name=queue.QUEUE_NAME
    )
    ours, arqs = await _entry(redis, "job_ours"), await _entry(redis, "job_arqs")
    assert ours[2] == {"function": queue.RUN_JOB, "args": ["job_ours"], "kwargs": {}}
    assert arqs[2] == {"function": queue.RUN_JOB, "args": ["job_arqs"], "kwargs": {}}
    # Byte for byte the same record but for the id and the enqueue time, and JSON.
    raw = [await redis.get(job_key_prefix + job_id) for job_id in ("job_ours", "job_arqs")]
    records = [orjson.loads(payload) for payload in raw]
    assert records[0]["a"] == ["job_ours"] and records[1]["a"] == ["job_arqs"]
    for record in records:
        del record["a"], record["et"]
    assert records[0] == records[1] == {"t": None, "f": queue.RUN_JOB, "k": {}}
    assert ours[0] is not None and before <= ours[0] <= time.time() * 1000 + 1
    # Both keep the job key for arq's default 24 h.
    assert abs(ours[1] - arqs[1]) < 5_000 and ours[1] > 23 * 3600 * 1000
    status = await _job(redis, "job_ours").status()
    assert status is JobStatus.queued


async def test_a_deferred_job_is_due_then_and_kept_past_it(redis: ArqRedis) -> None:
    at = datetime.now(UTC) + timedelta(hours=2)
    assert await queue.enqueue(redis, "job_later", at)
    score, ttl, _ = await _entry(redis, "job_later")
    assert score == round(at.timestamp() * 1000)
    assert ttl > 25 * 3600 * 1000  # 2 h of deferral plus arq's 24 h
    status = await _job(redis, "job_later").status()
    assert status is JobStatus.deferred


async def test_a_due_time_long_past_is_due_now_and_still_kept(redis: ArqRedis) -> None:
    assert await queue.enqueue(redis, "job_old", datetime.now(UTC) - timedelta(days=3))
    _, ttl, _ = await _entry(redis, "job_old")
    assert ttl > 23 * 3600 * 1000  # arq itself would have set a negative expiry here


async def test_a_held_job_or_a_kept_result_is_not_enqueued_again(redis: ArqRedis) -> None:
    assert await queue.enqueue(redis, "job_once")
    first = await redis.zscore(queue.QUEUE_NAME, "job_once")
    assert not await queue.enqueue(redis, "job_once", datetime.now(UTC) + timedelta(hours=1))
    assert await redis.zscore(queue.QUEUE_NAME, "job_once") == first
    await redis.set(result_key_prefix + "job_done", b"x")
    assert not await queue.enqueue(redis, "job_done")
    assert await redis.zscore(queue.QUEUE_NAME, "job_done") is None
    assert await queue.depth(redis) == 1


async def test_the_script_is_loaded_again_after_a_script_flush(redis: ArqRedis) -> None:
    assert await queue.enqueue(redis, "job_a")
    await redis.script_flush()  # a Redis restart or failover forgets loaded scripts
    assert await queue.enqueue(redis, "job_b")
    assert await queue.depth(redis) == 2
