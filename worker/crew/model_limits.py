"""The limiter every LLM call of every crew process goes through before each attempt
(worker/crew/llm_retry.py): per-model requests and tokens a minute, shared in Redis by all
workers, and a shared pause set from a provider's 429 `Retry-After`.

The algorithm is a sliding-window log (one sorted set of admitted calls per model, scored
by Redis's own clock), not GCRA or a token bucket: those admit a burst on top of the steady
rate, so "never more than N requests in any 60-second window" would not hold, and that is
the promise operators set a limit for (the provider counts the same way). Its cost is one
set entry per call in the last minute, a few thousand at most for any real limit.

Tokens are reserved before the call (the prompt's characters / 4, plus the model's
`max_tokens` when set) and settled after it with what the provider counted: counting only
afterwards would let every process waiting on a nearly full window pass it at once.

One Lua script per attempt decides atomically, so racing processes cannot both take the
last place; the caller sleeps (in steps of at most a second) for as long as the script says
a place frees, however long: at the job's timeout the worker kills the crew process, so
nothing waits past it. Redis away: the call proceeds unthrottled (a stalled job is worse
than a refused call, which llm_retry retries), logged at most once a minute and reported as
an `Unthrottled` step, which the worker counts.

Keys, per model: `crewq:model:<model>:requests` and `:tokens` (sorted sets, expiring a
minute after their last entry), `:tokens_held` (the tokens' window total) and `:pause`
(until when, ms of Redis's clock).
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script

from shared.runtime.model_limits import ModelLimit
from worker.crew.protocol import Step, Throttled, Unthrottled

log = logging.getLogger(__name__)

WINDOW_MS = 60_000
# Admission is timed on Redis's clock, arrival on the provider's: a call admitted just as
# the window moved on may reach the provider a little sooner after an earlier call than it
# was admitted (network and client jitter). Each call holds its place this much longer, so
# the provider's own count of a minute stays within the limit; under 1% of throughput.
SEND_MARGIN_MS = 500
MAX_SLEEP_S = 1.0  # sleep in steps: a place freed early (a settled reservation) is taken soon
REDIS_WARN_EVERY_S = 60.0

# KEYS: requests, tokens, pause, tokens held. ARGV: rpm (0: none), tpm (0: none), tokens to
# reserve, id, the window in ms (a minute; shorter in tests).
# Returns {1, 0} when admitted, else {0, ms to wait before trying again}.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pause = tonumber(redis.call('GET', KEYS[3]) or '0')
if pause > now then return {0, pause - now} end
local rpm, tpm, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window = tonumber(ARGV[5])
local since = now - window
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, math.max(1, tonumber(oldest[2]) + window - now + 1)}
  end
end
if tpm > 0 then
  -- The window's total is kept beside it, less what leaves the window: no sum over every
  -- call of the minute on each acquire.
  local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', since)
  if #gone > 0 then
    local freed = 0
    for i = 1, #gone do freed = freed + tonumber(string.match(gone[i], ':(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since)
    redis.call('DECRBY', KEYS[4], freed)
  end
  local used = tonumber(redis.call('GET', KEYS[4]) or '0')
  -- A call larger than the whole limit still runs, alone in its window: it could never
  -- run otherwise.
  if used > 0 and used + want > tpm then
    local held = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = 1, #held, 2 do
      used = used - tonumber(string.match(held[i], ':(%d+)$'))
      if used + want <= tpm then
        return {0, math.max(1, tonumber(held[i + 1]) + window - now + 1)}
      end
    end
  end
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window + 1000)
end
if tpm > 0 then
  redis.call('ZADD', KEYS[2], now, ARGV[4] .. ':' .. want)
  redis.call('INCRBY', KEYS[4], want)
  redis.call('PEXPIRE', KEYS[2], window + 1000)
  redis.call('PEXPIRE', KEYS[4], window + 1000)
end
return {1, 0}
"""

# KEYS: tokens, tokens held. ARGV: id, tokens reserved, tokens used. The reservation keeps
# its time; gone from the window already, there is nothing to settle.
SETTLE = """
local member = ARGV[1] .. ':' .. ARGV[2]
local at = redis.call('ZSCORE', KEYS[1], member)
if not at then return 0 end
redis.call('ZREM', KEYS[1], member)
redis.call('ZADD', KEYS[1], at, ARGV[1] .. ':' .. ARGV[3])
redis.call('INCRBY', KEYS[2], tonumber(ARGV[3]) - tonumber(ARGV[2]))
return 1
"""

# KEYS: pause. ARGV: ms. Only ever pushed later: a shorter Retry-After does not cut a pause.
PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local till = now + tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[1]) or '0') < till then
  redis.call('SET', KEYS[1], till, 'PX', tonumber(ARGV[1]))
end
return till
"""


def keys(model: str) -> tuple[str, str, str, str]:
    prefix = f"crewq:model:{model}:"
    return prefix + "requests", prefix + "tokens", prefix + "pause", prefix + "tokens_held"


def estimate_tokens(messages: Any, max_tokens: int | None) -> int:
    """What a call may spend, reserved before it: a common rule of thumb of four characters
    a token for the prompt, and the most the model may answer."""
    text = messages if isinstance(messages, str) else repr(messages)
    return max(1, len(text) // 4 + (max_tokens or 0))


@dataclass(frozen=True)
class Ticket:
    """An admitted call; settle it with the tokens it used."""

    model: str
    id: str
    reserved: int  # 0: tokens not limited, nothing to settle
    waited_s: float


class Limiter:
    """One per crew process; thread-safe (CrewAI may call models from several threads)."""

    def __init__(
        self,
        url: str | None,
        *,
        window_ms: int = WINDOW_MS + SEND_MARGIN_MS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.window_ms = window_ms
        self._client = (
            redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
            if url
            else None
        )
        self._acquire: Script | None = None
        self._settle: Script | None = None
        self._pause: Script | None = None
        if self._client is not None:
            self._acquire = self._client.register_script(ACQUIRE)
            self._settle = self._client.register_script(SETTLE)
            self._pause = self._client.register_script(PAUSE)
        self._sleep = sleep
        self._warned_at = -REDIS_WARN_EVERY_S
        self._lock = threading.Lock()
        self.limits: dict[str, ModelLimit] = {}
        self.report: Callable[[Step], None] = lambda step: None

    def begin(self, limits: dict[str, ModelLimit], report: Callable[[Step], None]) -> None:
        """The limits of the job this process now runs, and where its steps go."""
        self.limits = limits
        self.report = report

    def acquire(self, model: str, messages: Any, max_tokens: int | None = None) -> Ticket:
        """Wait until `model` has a place for this call (always at once when it has no
        limit and no pause); returns the ticket to settle."""
        limit = self.limits.get(model, ModelLimit())
        call_id = uuid.uuid4().hex
        want = estimate_tokens(messages, max_tokens) if limit.tpm else 0
        if self._acquire is None:
            return Ticket(model, call_id, 0, 0.0)
        started, slept = time.monotonic(), False
        while True:
            try:
                admitted, wait_ms = self._acquire(
                    keys=keys(model),
                    args=[limit.rpm or 0, limit.tpm or 0, want, call_id, self.window_ms],
                )
            except redis.RedisError as exc:
                self._redis_away(model, exc)
                return Ticket(model, call_id, 0, time.monotonic() - started)
            if admitted:
                break
            self._sleep(min(MAX_SLEEP_S, int(wait_ms) / 1000))
            slept = True
        waited = time.monotonic() - started
        if slept:
            self.report(Throttled(model, waited))
        return Ticket(model, call_id, want, waited)

    def settle(self, ticket: Ticket, used: int | None) -> None:
        """Replace the call's reservation by the tokens it used (None: unknown, keep it)."""
        if not ticket.reserved or used is None or used == ticket.reserved or not self._settle:
            return
        try:
            self._settle(keys=keys(ticket.model)[1::2], args=[ticket.id, ticket.reserved, used])
        except redis.RedisError as exc:
            self._redis_away(ticket.model, exc, report=False)

    def pause(self, model: str, seconds: float) -> None:
        """The provider refused a call of `model` for `seconds` (its 429's `Retry-After`):
        no process calls it before then."""
        if self._pause is None or seconds <= 0:
            return
        try:
            self._pause(keys=keys(model)[2:3], args=[max(1, int(seconds * 1000))])
        except redis.RedisError as exc:
            self._redis_away(model, exc, report=False)

    def _redis_away(self, model: str, exc: Exception, *, report: bool = True) -> None:
        if report:
            self.report(Unthrottled(model))
        with self._lock:
            now = time.monotonic()
            if now - self._warned_at < REDIS_WARN_EVERY_S:
                return
            self._warned_at = now
        log.warning(
            "model limits not applied: redis unavailable (%s); LLM calls proceed unthrottled", exc
        )


_limiter: Limiter | None = None


def limiter() -> Limiter:
    """This process's limiter, on the worker's Redis (CREWQ_REDIS_URL)."""
    global _limiter
    if _limiter is None:
        from shared.runtime.settings import get_settings

        _limiter = Limiter(get_settings().redis_url)
    return _limiter
