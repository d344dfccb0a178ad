"""The arq queue on Redis: transport only. Postgres decides what runs; Redis carries the
wake-ups. arq's job id is always the crewq job id, so a job is on the queue at most once."""

import time
from datetime import datetime
from urllib.parse import urlparse

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix

QUEUE_NAME = "crewq:queue"
RUN_JOB = "run_job"
CANCEL_CHANNEL = "crewq:cancel"


def redis_settings(url: str) -> RedisSettings:
    parsed = urlparse(url)
    settings: RedisSettings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 5
    settings.conn_retries = 5
    settings.conn_retry_delay = 1
    # Keep arq's per-connection retries modest; crewq's loops reconnect on their own.
    settings.retry_on_timeout = True
    if parsed.scheme == "rediss":
        settings.ssl = True
    return settings


async def connect(url: str) -> ArqRedis:
    pool: ArqRedis = await create_pool(redis_settings(url), default_queue_name=QUEUE_NAME)
    return pool


async def enqueue(redis: ArqRedis, job_id: str, run_after: datetime | None = None) -> bool:
    """Put the job on the queue; False when arq already holds it (queued or running)."""
    job = await redis.enqueue_job(
        RUN_JOB, job_id, _job_id=job_id, _queue_name=QUEUE_NAME, _defer_until=run_after
    )
    return job is not None


async def arq_state(redis: ArqRedis, job_ids: list[str]) -> list[tuple[bool, bool]]:
    """For each job: (arq still holds it: queued, deferred or in progress; it is in progress)."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.exists(job_key_prefix + job_id)
            pipe.exists(in_progress_key_prefix + job_id)
        found = await pipe.execute()
    return [(bool(found[i]), bool(found[i + 1])) for i in range(0, len(found), 2)]


async def requeue_now(redis: ArqRedis, job_id: str) -> None:
    """Make a job whose worker died runnable at once: drop the dead worker's in-progress
    claim (which arq would otherwise keep until job timeout + 10 s) and queue it again."""
    await redis.delete(in_progress_key_prefix + job_id)
    if not await enqueue(redis, job_id):
        # arq still holds the job: make its queue entry due now (arq skips a score of 0).
        await redis.zadd(QUEUE_NAME, {job_id: int(time.time() * 1000)})


async def publish_cancel(redis: ArqRedis, job_id: str) -> None:
    await redis.publish(CANCEL_CHANNEL, job_id)
