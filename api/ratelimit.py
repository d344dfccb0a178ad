"""Per-key request rate limit: a fixed one-minute window counted in Redis, shared by every
API replica. If Redis is unreachable, requests pass: the limit protects the platform, it
must not take the API down with Redis."""

import logging
import time

from aiohttp import web

from api.context import REDIS, SETTINGS
from api.errors import ApiError, Handler

log = logging.getLogger(__name__)
WINDOW_S = 60


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    limit = request.app[SETTINGS].api_rate_limit
    principal = request.get("principal")
    if not limit or principal is None:
        return await handler(request)
    now = time.time()
    window = int(now // WINDOW_S)
    reset = int((window + 1) * WINDOW_S - now) + 1
    key = f"crewq:ratelimit:{principal.key_id}:{window}"
    try:
        redis = request.app[REDIS]
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_S * 2)
            count, _ = await pipe.execute()
    except Exception as exc:
        log.warning("rate limit not checked, redis unavailable: %s", exc)
        return await handler(request)
    headers = {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(max(0, limit - count)),
        "RateLimit-Reset": str(reset),
    }
    if count > limit:
        raise ApiError(
            429,
            "RATE_LIMITED",
            f"more than {limit} requests this minute for this API key",
            {"limit": limit, "window_seconds": WINDOW_S},
            headers={**headers, "Retry-After": str(reset)},
        )
    try:
        response = await handler(request)
    except ApiError as err:
        err.headers = {**headers, **err.headers}
        raise
    response.headers.update(headers)
    return response
