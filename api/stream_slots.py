"""How many event streams each tenant holds open, counted in Redis so that every API
replica sees the same count.

Each open stream holds a member of its tenant's sorted set, scored with the time its hold
expires; the stream renews it while it runs and removes it when it ends, and a replica that
dies without removing its members frees them once they expire. Redis is a counter here, as
for rate limits: when it cannot be reached, streams are let through rather than refused.
"""

import time
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError

# What a slot's Redis calls raise when Redis cannot be reached.
REDIS_UNAVAILABLE = (RedisError, OSError)

# Whole seconds a hold lasts unless renewed; a stream renews it well within that.
HOLD_S = 60
RENEW_EVERY_S = 15.0

# Drop expired holds, then take one if fewer than the limit are held.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


def _key(tenant_id: str) -> str:
    return f"crewq:streams:{tenant_id}"


class StreamSlot:
    """One stream's hold on one of its tenant's slots."""

    def __init__(self, redis: Redis, tenant_id: str) -> None:
        self._redis = redis
        self._key = _key(tenant_id)
        self._member = uuid.uuid4().hex
        self._renewed = 0.0

    async def acquire(self, limit: int) -> bool:
        """Hold a slot; False when the tenant already holds `limit`."""
        now = time.time()
        args = (now, now + HOLD_S, limit, self._member, HOLD_S * 2)
        taken = await self._redis.eval(  # type: ignore[misc]
            _ACQUIRE, 1, self._key, *(str(a) for a in args)
        )
        self._renewed = time.monotonic()
        return bool(taken)

    async def renew_if_due(self) -> None:
        if time.monotonic() - self._renewed < RENEW_EVERY_S:
            return
        await self._redis.zadd(self._key, {self._member: time.time() + HOLD_S}, xx=True)
        self._renewed = time.monotonic()

    async def release(self) -> None:
        await self._redis.zrem(self._key, self._member)
