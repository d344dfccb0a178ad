"""Who is asking: an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`, from an
address its tenant allows, with the scope each route needs.

Presentations of keys that do not authenticate (unknown, revoked, expired, or not even
shaped like a crewq key) are counted per client address in Redis; past
`CREWQ_AUTH_FAILURE_LIMIT` a minute the address gets 429 for them instead of 401. The
count never refuses a key that authenticates: behind an ingress every client may share one
address, and one client's bad keys must not lock the others out. So every plausible key is
looked up (one indexed query by its hash, as any authenticated request costs) before the
count is consulted. Guessing stays hopeless rather than merely slow: a key carries 256 random
bits, and what is not shaped like a key never reaches the database at all.
"""

import contextlib
import logging
import time

from aiohttp import web

from api.addresses import IpAddress, client_address, in_networks
from api.context import DB, REDIS, SETTINGS
from api.errors import ApiError, Code, Handler
from schemas.account import Scope
from shared.runtime.logs import bind
from shared.runtime.queue import REDIS_UNAVAILABLE
from shared.store.keys import Principal, Refusal, authenticate

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/livez", "/health", "/healthz", "/openapi.json", "/docs", "/ui"})
HIDDEN_PATHS = frozenset({"/health/debug"})
# The dashboard's pages and files hold no data: the page asks for a key and sends it.
PUBLIC_PREFIXES = ("/docs/", "/ui/")
PRINCIPAL = "principal"
_FAILURE_WINDOW_S = 60
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="crewq"'}
_REFUSALS = {
    Refusal.UNKNOWN: (Code.INVALID_API_KEY, "the API key is not valid"),
    Refusal.REVOKED: (Code.API_KEY_REVOKED, "the API key was revoked; use another"),
    Refusal.EXPIRED: (Code.API_KEY_EXPIRED, "the API key has expired; create a new one"),
}


def _presented_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("X-API-Key", "").strip() or None


def _plausible(key: str) -> bool:
    """A key crewq could have made: ASCII (undecodable header bytes arrive as surrogates),
    its prefix, a sane length. Anything else is refused without a look-up."""
    return key.isascii() and key.isprintable() and key.startswith("crq_") and len(key) <= 128


def _failure_key(address: IpAddress | None) -> str:
    return f"crewq:authfail:{address}:{int(time.time() // _FAILURE_WINDOW_S)}"


async def _count_failure(request: web.Request, address: IpAddress | None) -> int:
    """Counts one presentation that did not authenticate; how many this address made in
    the current window (0 when Redis cannot say: the guard must not take the API down)."""
    try:
        async with request.app[REDIS].pipeline(transaction=True) as pipe:
            pipe.incr(_failure_key(address))
            pipe.expire(_failure_key(address), _FAILURE_WINDOW_S * 2)
            count, _ = await pipe.execute()
    except REDIS_UNAVAILABLE as exc:
        log.warning("failed login not counted, redis unavailable: %s", exc)
        return 0
    return int(count)


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in HIDDEN_PATHS and request.match_info.http_exception is not None:
        raise web.HTTPNotFound()  # not the 405 that would tell another method it exists
    if is_public(request.path) or request.match_info.http_exception is not None:
        # A route that does not exist is a 404 whoever asks (error_middleware answers it).
        return await handler(request)
    if request.path in HIDDEN_PATHS:
        # Its handler admits whom it will and answers everyone else as a route that does
        # not exist: no challenge and no refusal code tell a scanner it is there.
        with contextlib.suppress(ApiError):
            request[PRINCIPAL] = await _authenticate(request)
        return await handler(request)
    request[PRINCIPAL] = await _authenticate(request)
    return await handler(request)


async def _authenticate(request: web.Request) -> Principal:
    key = _presented_key(request)
    if key is None:
        raise ApiError(
            Code.UNAUTHENTICATED,
            "send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers=_CHALLENGE,
        )
    settings = request.app[SETTINGS]
    address = client_address(request, settings.trusted_proxies)
    # Look-up first, count after: the limit applies to what fails, never to a good key.
    found = await authenticate(request.app[DB], key) if _plausible(key) else Refusal.UNKNOWN
    if isinstance(found, Refusal):
        if await _count_failure(request, address) > settings.auth_failure_limit:
            raise ApiError(
                Code.RATE_LIMITED,
                f"too many requests with invalid API keys from {address}; wait a minute",
                headers={"Retry-After": str(_FAILURE_WINDOW_S)},
            )
        code, message = _REFUSALS[found]
        raise ApiError(code, message, headers=_CHALLENGE)
    if found.allowed_ips is not None and not (
        address is not None and in_networks(address, found.allowed_ips)
    ):
        raise ApiError(
            Code.IP_NOT_ALLOWED,
            f"this tenant's keys may not be used from {address}; ask its admin to allow it",
        )
    # Into the request's log context, not a nested one: the outer middlewares' lines about
    # this request (its error, its failure log) carry the tenant too.
    bind(tenant_id=found.tenant_id)
    return found


def principal_of(request: web.Request) -> Principal:
    principal: Principal = request[PRINCIPAL]
    return principal


def require(principal: Principal, scope: Scope) -> None:
    """Refuses a key without `scope` (or `admin`). Called by the route's declaration
    (`api/operations.py`), never by a handler: the scope enforced is the one documented."""
    if not principal.may(scope):
        raise ApiError(
            Code.INSUFFICIENT_SCOPE,
            f"this API key lacks the {scope.value!r} scope",
            {"required_scope": scope.value},
            headers={
                "WWW-Authenticate": (
                    f'Bearer realm="crewq", error="insufficient_scope", scope="{scope.value}"'
                )
            },
        )
