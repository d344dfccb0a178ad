"""Per-tenant request rate limit: the plan's requests per second (shared/plans.py),
counted in a one-second window in Redis, shared by every API replica. Answers carry
`X-RateLimit-Limit/-Remaining/-Reset` (reset: a Unix time) and the IETF draft's
`RateLimit-Limit/-Remaining/-Reset` (reset: seconds from now); a 429 carries `Retry-After`.

If Redis is unreachable, requests pass: the limit protects the platform, it must not take
the API down with Redis."""

import logging
import math
import time

from aiohttp import web

from api.auth import PRINCIPAL
from api.context import REDIS
from api.errors import ApiError, Code, Handler
from shared.keys import Principal
from shared.queue import REDIS_UNAVAILABLE

log = logging.getLogger(__name__)
WINDOW_S = 1
RATE_LIMIT_HEADERS = "rate_limit_headers"
RATE_LIMIT_REMAINING = "rate_limit_remaining"


def window_key(tenant_id: str, window: int) -> str:
    return f"crewq:rate:{tenant_id}:{window}"


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    principal: Principal | None = request.get(PRINCIPAL)
    limit = principal.allowance.requests_per_second if principal else None
    if principal is None or limit is None:
        return await handler(request)
    now = time.time()
    window = int(now // WINDOW_S)
    resets_at = (window + 1) * WINDOW_S
    key = window_key(principal.tenant_id, window)
    try:
        async with request.app[REDIS].pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_S * 2)
            count, _ = await pipe.execute()
    except REDIS_UNAVAILABLE as exc:
        log.warning("rate limit not checked, redis unavailable: %s", exc)
        return await handler(request)
    wait_s = str(max(1, math.ceil(resets_at - now)))
    headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, limit - count)),
        "X-RateLimit-Reset": str(resets_at),
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(max(0, limit - count)),
        "RateLimit-Reset": wait_s,
    }
    # Added to whatever answer this request gets, errors and streams too (api/headers.py).
    request[RATE_LIMIT_HEADERS] = headers
    request[RATE_LIMIT_REMAINING] = max(0, limit - count)
    if count > limit:
        raise ApiError(
            Code.RATE_LIMITED,
            f"more than {limit} requests a second for this tenant ({principal.plan} plan);"
            f" retry after {wait_s} s",
            {"limit": limit, "window_seconds": WINDOW_S},
            headers={"Retry-After": wait_s},
        )
    return await handler(request)
