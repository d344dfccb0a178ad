"""Per-tenant request rate limit: the plan's requests per second (shared/domain/plans.py),
counted in a one-second window in Redis, shared by every API replica. Answers carry
`X-RateLimit-Limit/-Remaining/-Reset` (reset: a Unix time) and the IETF draft's
`RateLimit-Limit/-Remaining/-Reset` (reset: seconds from now); a 429 carries `Retry-After`.

If Redis is unreachable, requests pass: the limit protects the platform, it must not take
the API down with Redis."""

import logging
import math
import time
from dataclasses import dataclass

from aiohttp import web

from api.auth import PRINCIPAL
from api.context import REDIS
from api.errors import ApiError, Code, Handler
from shared.runtime.queue import REDIS_UNAVAILABLE
from shared.store.keys import Principal

log = logging.getLogger(__name__)
WINDOW_S = 1
# The request's `RateWindow`, for the headers of whatever answer it gets (api/headers.py).
RATE_WINDOW = "rate_window"


@dataclass(frozen=True)
class RateWindow:
    limit: int
    remaining: int
    resets_at: int  # Unix time
    wait_s: int  # until then, rounded up

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.resets_at),
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.wait_s),
        }


def current_window(now: float) -> tuple[int, int]:
    """The window holding `now`, and when it ends (Unix time)."""
    window = int(now // WINDOW_S)
    return window, (window + 1) * WINDOW_S


def window_key(tenant_id: str, window: int) -> str:
    return f"crewq:rate:{tenant_id}:{window}"


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    principal: Principal | None = request.get(PRINCIPAL)
    limit = principal.allowance.requests_per_second if principal else None
    if principal is None or limit is None:
        return await handler(request)
    now = time.time()
    window, resets_at = current_window(now)
    key = window_key(principal.tenant_id, window)
    try:
        async with request.app[REDIS].pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_S * 2)
            count, _ = await pipe.execute()
    except REDIS_UNAVAILABLE as exc:
        log.warning("rate limit not checked, redis unavailable: %s", exc)
        return await handler(request)
    counted = RateWindow(
        limit, max(0, limit - count), resets_at, max(1, math.ceil(resets_at - now))
    )
    request[RATE_WINDOW] = counted
    if count > limit:
        raise ApiError(
            Code.RATE_LIMITED,
            f"more than {limit} requests a second for this tenant ({principal.plan} plan);"
            f" retry after {counted.wait_s} s",
            {"limit": limit, "window_seconds": WINDOW_S},
            headers={"Retry-After": str(counted.wait_s)},
        )
    return await handler(request)
