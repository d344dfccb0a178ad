"""The arq queue on Redis: transport only. Postgres decides what runs; Redis carries the
wake-ups. arq's job id is always the crewq job id, so a job is on the queue at most once.

What crewq puts in Redis carries no code: arq's job record is JSON holding the job id and
nothing else a worker acts on, where arq's default is pickle, which runs whatever code the
payload names as it is read, so anyone able to write to Redis would run code in every
worker (with its database credentials, provider keys and secret key). `load_job` refuses
anything but the record `job_record` writes."""

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.utils import timestamp_ms, to_unix_ms
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# The queue's Redis client. It is arq's; naming it here keeps every other module, bar the
# consumer (worker/consumer.py), free of arq (tests/unit/test_queue_adapter.py checks).
Redis = ArqRedis

QUEUE_NAME = "crewq:queue"
RUN_JOB = "run_job"
CANCEL_CHANNEL = "crewq:cancel"
# Published when a job is queued due now, so idle workers poll at once (worker/consumer.py).
WAKE_CHANNEL = "crewq:wake"
# Only these mean "Redis is away for now", worth waiting out; any other error is a bug or a
# broken Redis, and ends the task that met it (its supervisor then stops the process).
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


# The TLS options a `rediss://` URL may carry in its query string, as redis-py reads them.
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")


def _tls_options(url: str) -> dict[str, Any]:
    """For a `rediss://` URL: its TLS options, checking the server's name against its
    certificate unless `ssl_check_hostname=false` says not to (arq and redis-py 5 do not
    check it by default, and arq ignores every option in the URL)."""
    parsed = urlparse(url)
    if parsed.scheme != "rediss":
        return {}
    query = {name: values[-1] for name, values in parse_qs(parsed.query).items()}
    options: dict[str, Any] = {name: query[name] for name in _TLS_OPTIONS if name in query}
    check = query.get("ssl_check_hostname", "true").lower()
    options["ssl_check_hostname"] = check not in ("0", "f", "false", "n", "no", "off")
    return options


def redis_settings(url: str) -> RedisSettings:
    settings: RedisSettings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 5
    settings.conn_retries = 5
    settings.conn_retry_delay = 1
    # Keep arq's per-connection retries modest; crewq's loops reconnect on their own.
    settings.retry_on_timeout = True
    for name, value in _tls_options(url).items():
        setattr(settings, name, value)
    return settings


@dataclass(frozen=True)
class Done:
    """What a job's handler answers when this delivery of the job is over: the queue drops
    it (whatever the job's outcome, it is in Postgres)."""

    why: str  # for the log: completed, failed, discarded, a reason it did not start


@dataclass(frozen=True)
class Requeue:
    """What a job's handler answers for the queue to offer the job again `after` seconds
    from now, keeping it meanwhile: a retry delay, or a hand-back by a draining worker."""

    after: float


Handled = Done | Requeue


class RefusedPayload(ValueError):
    """A payload in arq's queue that crewq did not write: never run."""


# arq's job record: t (try), f (function), a (args), k (kwargs), et (enqueued at, ms).
_RECORD_KEYS = frozenset({"t", "f", "a", "k", "et"})
# crewq's job ids are `job_` + 26 characters; a record holding more is not crewq's.
_MAX_ID_LENGTH = 64


def job_record(job_id: str, enqueued_ms: int) -> bytes:
    """arq's job record for running `job_id`, as JSON."""
    return orjson.dumps({"t": None, "f": RUN_JOB, "a": [job_id], "k": {}, "et": enqueued_ms})


def load_job(payload: bytes, job_id: str | None = None) -> dict[str, Any]:
    """arq's job record, if `payload` is one `job_record` writes (for `job_id`, when
    given: the id under which arq found it); RefusedPayload otherwise. It only parses JSON,
    so no payload, whatever it holds, runs code as it is read."""
    try:
        record = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise RefusedPayload("not JSON (a pickle, perhaps)") from None
    if not isinstance(record, dict) or record.keys() != _RECORD_KEYS:
        raise RefusedPayload("not arq's job record")
    args, tried, enqueued = record["a"], record["t"], record["et"]
    if record["f"] != RUN_JOB or record["k"] != {}:
        raise RefusedPayload(f"not a call of {RUN_JOB}(job_id)")
    if not (
        isinstance(args, list)
        and len(args) == 1
        and isinstance(args[0], str)
        and 0 < len(args[0]) <= _MAX_ID_LENGTH
    ):
        raise RefusedPayload("its argument is not a job id")
    if job_id is not None and args[0] != job_id:
        raise RefusedPayload(f"it names another job ({args[0]!r})")
    # type(), not isinstance: JSON's true and false would pass as ints.
    if type(enqueued) is not int or not (tried is None or type(tried) is int):
        raise RefusedPayload("its try count or enqueue time is not a number")
    return record


def dump_record(record: dict[str, Any]) -> bytes:
    """arq's serializer: JSON. arq also serializes results with it, a failed job's being an
    exception; that is kept as its text (crewq keeps no results in Redis anyway)."""
    return orjson.dumps(record, default=str)


async def connect(url: str) -> ArqRedis:
    # The pool's serializers serve arq's own reads and writes (enqueue_job, Job.info).
    pool: ArqRedis = await create_pool(
        redis_settings(url),
        default_queue_name=QUEUE_NAME,
        job_serializer=dump_record,
        job_deserializer=load_job,
    )
    return pool


def client(url: str) -> ArqRedis:
    """A client that connects on first use, without arq's connect-and-retry: for a probe
    that must report a Redis that is down, not wait for it."""
    redis: ArqRedis = ArqRedis.from_url(
        url, socket_connect_timeout=2, socket_timeout=2, **_tls_options(url)
    )
    return redis


# arq's `enqueue_job` as one round trip instead of three (WATCH and EXISTS, then MULTI with
# the two writes): a script runs atomically, so the check and the writes need no WATCH.
# It writes exactly what arq writes (with crewq's serializer), so arq's worker reads it as
# its own, and wakes the workers when the job is due now.
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
    payload = job_record(job_id, enqueued_ms)
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
class QueueState:
    held: bool  # arq will run it: its job key exists and it is queued (or deferred) or running
    in_progress: bool


async def states(redis: ArqRedis, job_ids: list[str]) -> list[QueueState]:
    """What arq holds of each job. A job key without a queue entry or an in-progress claim
    (a Redis restart that kept one but not the other) is not held: nothing would run it."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.exists(job_key_prefix + job_id)
            pipe.zscore(QUEUE_NAME, job_id)
            pipe.exists(in_progress_key_prefix + job_id)
        found = await pipe.execute()
    held = []
    for i in range(0, len(found), 3):
        keyed, queued, in_progress = bool(found[i]), found[i + 1] is not None, bool(found[i + 2])
        held.append(QueueState(held=keyed and (queued or in_progress), in_progress=in_progress))
    return held


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
