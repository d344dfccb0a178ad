"""The arq queue on Redis: transport only. Postgres decides what runs; Redis carries the
wake-ups. arq's job id is always the crewq job id, so a job is on the queue at most once."""

import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlparse

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

QUEUE_NAME = "crewq:queue"
RUN_JOB = "run_job"
CANCEL_CHANNEL = "crewq:cancel"
# Only these mean "Redis is away for now", worth waiting out; any other error is a bug or a
# broken Redis, and ends the task that met it (its supervisor then stops the process).
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


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


def client(url: str) -> ArqRedis:
    """A client that connects on first use, without arq's connect-and-retry: for a probe
    that must report a Redis that is down, not wait for it."""
    redis: ArqRedis = ArqRedis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    return redis


async def enqueue(redis: ArqRedis, job_id: str, run_after: datetime | None = None) -> bool:
    """Put the job on the queue; False when arq already holds it (queued or running)."""
    job = await redis.enqueue_job(
        RUN_JOB, job_id, _job_id=job_id, _queue_name=QUEUE_NAME, _defer_until=run_after
    )
    return job is not None


@dataclass(frozen=True)
class ArqState:
    held: bool  # arq will run it: its job key exists and it is queued (or deferred) or running
    in_progress: bool


async def arq_state(redis: ArqRedis, job_ids: list[str]) -> list[ArqState]:
    """What arq holds of each job. A job key without a queue entry or an in-progress claim
    (a Redis restart that kept one but not the other) is not held: nothing would run it."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.exists(job_key_prefix + job_id)
            pipe.zscore(QUEUE_NAME, job_id)
            pipe.exists(in_progress_key_prefix + job_id)
        found = await pipe.execute()
    states = []
    for i in range(0, len(found), 3):
        keyed, queued, in_progress = bool(found[i]), found[i + 1] is not None, bool(found[i + 2])
        states.append(ArqState(held=keyed and (queued or in_progress), in_progress=in_progress))
    return states


async def requeue_now(redis: ArqRedis, job_id: str, at: datetime | None = None) -> None:
    """Make a job runnable at `at` (now when None) whatever arq holds of it: drop a dead
    worker's in-progress claim (which arq would otherwise keep until job timeout + 10 s),
    queue it, and if arq still has its job key, (re)place its queue entry."""
    await redis.delete(in_progress_key_prefix + job_id)
    if not await enqueue(redis, job_id, at):
        # arq still has the job key: set its queue entry's due time (arq skips a score of 0).
        when = at.timestamp() if at else time.time()
        await redis.zadd(QUEUE_NAME, {job_id: int(when * 1000)})


async def publish_cancel(redis: ArqRedis, job_id: str) -> None:
    await redis.publish(CANCEL_CHANNEL, job_id)


async def depth(redis: ArqRedis) -> int:
    """Jobs waiting in arq's queue (due now or deferred)."""
    return int(await redis.zcard(QUEUE_NAME))
