"""The arq queue on Redis: transport only. Postgres decides what runs; Redis carries the
wake-ups. arq's job id is always the crewq job id, so a job is on the queue at most once."""

import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlparse

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms, to_unix_ms
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

QUEUE_NAME = "crewq:queue"
RUN_JOB = "run_job"
CANCEL_CHANNEL = "crewq:cancel"
# Published when a job is queued due now, so idle workers poll at once (worker/consumer.py).
WAKE_CHANNEL = "crewq:wake"
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


# arq's `enqueue_job` as one round trip instead of three (WATCH and EXISTS, then MULTI with
# the two writes): a script runs atomically, so the check and the writes need no WATCH.
# It writes exactly what arq writes, so arq's worker reads it as its own, and wakes the
# workers when the job is due now.
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
if tonumber(ARGV[2]) <= tonumber(ARGV[5]) then redis.call('PUBLISH', ARGV[6], '') end
return 1
"""


async def enqueue(redis: ArqRedis, job_id: str, run_after: datetime | None = None) -> bool:
    """Put the job on the queue; False when arq already holds it (queued or running) or
    still keeps its result."""
    enqueued_ms = timestamp_ms()
    score = to_unix_ms(run_after) if run_after is not None else enqueued_ms
    payload = serialize_job(RUN_JOB, (job_id,), {}, None, enqueued_ms)
    done = await redis.register_script(_ENQUEUE)(
        keys=[job_key_prefix + job_id, result_key_prefix + job_id, QUEUE_NAME],
        args=[
            job_id,
            score,
            max(score - enqueued_ms, 0) + redis.expires_extra_ms,
            payload,
            enqueued_ms,
            WAKE_CHANNEL,
        ],
    )
    return bool(done)


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
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zadd(QUEUE_NAME, {job_id: int(when * 1000)})
            if when <= time.time():
                pipe.publish(WAKE_CHANNEL, "")
            await pipe.execute()


async def publish_cancel(redis: ArqRedis, job_id: str) -> None:
    await redis.publish(CANCEL_CHANNEL, job_id)


async def depth(redis: ArqRedis) -> int:
    """Jobs waiting in arq's queue (due now or deferred)."""
    return int(await redis.zcard(QUEUE_NAME))
