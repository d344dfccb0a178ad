"""shared/domain/after_commit.py against real Redis: what a job's move leaves to do once it
commits is done by one function, for every caller: each end or retry counted once, each job
queued the way the move asked, and a Redis that is away logged, not raised (the reconciler
queues the job later)."""

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from schemas.jobs import ErrorCode, JobStatus
from shared.domain import after_commit
from shared.runtime import queue
from shared.store.jobs import AfterCommit, Finished, Queueing, Retried, ToQueue, queue_job


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[queue.Redis]:
    client = await queue.connect(redis_url)
    yield client
    await client.aclose()


async def test_counts_each_end_and_retry_once(redis: queue.Redis) -> None:
    crew = "after-commit-counts"
    done = {"crew": crew, "outcome": "completed"}
    cancelled = {"crew": crew, "outcome": "cancelled"}
    after = AfterCommit(
        counts=(
            Finished(crew, JobStatus.COMPLETED, 12.0),
            Finished(crew, JobStatus.CANCELLED, None),
            Retried(crew, ErrorCode.WORKER_LOST),
        )
    )
    await after_commit.carry_out(after, redis)
    assert _value("crewq_jobs_finished_total", **done) == 1
    assert _value("crewq_job_duration_seconds_sum", **done) == 12.0
    assert _value("crewq_jobs_finished_total", **cancelled) == 1
    assert _value("crewq_job_duration_seconds_count", **cancelled) == 0  # never ran: untimed
    assert _value("crewq_job_retries_total", crew=crew, reason="WORKER_LOST") == 1
    assert await queue.depth(redis) == 0  # nothing asked to be queued


async def test_queues_each_job_the_way_its_move_asked(redis: queue.Redis) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    # Both held by the queue already, deferred by an hour (a retry delay).
    for job_id in ("job_kept", "job_forward"):
        assert await queue.enqueue(redis, job_id, later)
    after = queue_job("job_new") + AfterCommit(
        (ToQueue("job_kept", Queueing.QUEUE), ToQueue("job_forward", Queueing.AT_ONCE))
    )
    await after_commit.carry_out(after, redis)
    now_ms = datetime.now(UTC).timestamp() * 1000
    new, kept, forward = [
        await redis.zscore(queue.QUEUE_NAME, j) for j in ("job_new", "job_kept", "job_forward")
    ]
    assert new is not None and new <= now_ms  # queued, due now
    assert kept is not None and kept > now_ms + 3500 * 1000  # held: left as it was
    assert forward is not None and forward <= now_ms  # brought forward


async def test_a_redis_that_is_away_is_logged_and_the_counts_still_made(
    caplog: pytest.LogCaptureFixture,
) -> None:
    crew = "after-commit-away"
    away = queue.client("redis://127.0.0.1:1/0")  # nothing listens there
    after = AfterCommit(
        (ToQueue("job_a", Queueing.QUEUE), ToQueue("job_b", Queueing.AT_ONCE)),
        (Finished(crew, JobStatus.FAILED, 1.0),),
    )
    with caplog.at_level(logging.WARNING, logger="shared.domain.after_commit"):
        await after_commit.carry_out(after, away)
    assert _value("crewq_jobs_finished_total", crew=crew, outcome="failed") == 1
    logged = [r.getMessage() for r in caplog.records if r.name == "shared.domain.after_commit"]
    assert [m.split(" stored")[0] for m in logged] == ["job job_a", "job job_b"]
    await away.aclose()


async def test_any_other_error_is_raised() -> None:
    away = queue.client("redis://127.0.0.1:1/0")
    # A bug is not waited out as Redis being away is: here, a job id that is not a string.
    broken = AfterCommit((ToQueue(None, Queueing.QUEUE),))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await after_commit.carry_out(broken, away)
    await away.aclose()
