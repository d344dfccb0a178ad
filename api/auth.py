"""Who is asking: an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`, from an
address its tenant allows, with the scope each route needs. On the WebSocket upgrade of
`/v1/stream` only, the key may come as a subprotocol instead (`crewq.bearer.<key>` beside
`crewq.v1`; see `_protocol_key`): a browser cannot set headers on a WebSocket.

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


# The subprotocol a client of `/v1/stream` offers, and the server always chooses, beside the
# one carrying its key (`crewq.bearer.<key>`), which is never chosen, so never echoed back.
STREAM_PROTOCOL = "crewq.v1"
KEY_PROTOCOL_PREFIX = "crewq.bearer."
# The WebSocket routes that take a key as a subprotocol: only these, only on their upgrade.
_KEY_PROTOCOL_PATHS = frozenset({"/v1/stream"})


def offered_protocols(request: web.BaseRequest) -> list[str]:
    """The subprotocols a WebSocket client offers (`Sec-WebSocket-Protocol`, comma-separated,
    possibly over several header lines), in its order."""
    return [
        p.strip()
        for line in request.headers.getall("Sec-WebSocket-Protocol", [])
        for p in line.split(",")
        if p.strip()
    ]


def _is_upgrade(request: web.BaseRequest) -> bool:
    """A WebSocket opening handshake (RFC 6455 4.1): GET, `Upgrade: websocket`, `Connection`
    naming `upgrade`. What aiohttp's `can_prepare` asks, read before the handler runs."""
    connection = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").strip().lower() == "websocket"
        and "upgrade" in connection
    )


def _protocol_key(request: web.BaseRequest) -> str | None:
    """The key offered as the subprotocol `crewq.bearer.<key>`, as Kubernetes takes a bearer
    token on a WebSocket (`base64url.bearer.authorization.k8s.io.<token>`): the JavaScript
    WebSocket API sets no header but this one. Keys are url-safe base64 after `crq_live_`
    or `crq_test_`, all RFC 7230 token characters, so they stand in the header as they are.

    Taken only on the upgrade of a route in `_KEY_PROTOCOL_PATHS`, never from a plain
    request carrying the header: everywhere else a key still comes only as it always did.
    The key is no ambient credential (not a cookie), so a page of another origin can open
    the socket only with a key it already holds. And only beside `crewq.v1`, the protocol
    the server answers with: offered alone, no protocol would be chosen and a browser would
    fail the socket anyway; refused here (401), the offer also never reaches aiohttp's
    handshake, which logs an offer it cannot match (the logs' redaction, shared/runtime/
    logs.py, would mask the key; this way it is not written at all). More than one key
    offered is no key."""
    if request.path not in _KEY_PROTOCOL_PATHS or not _is_upgrade(request):
        return None
    offered = offered_protocols(request)
    keys = [
        p.removeprefix(KEY_PROTOCOL_PREFIX) for p in offered if p.startswith(KEY_PROTOCOL_PREFIX)
    ]
    if STREAM_PROTOCOL not in offered or len(keys) != 1:
        return None
    return keys[0] or None


def _presented_key(request: web.Request) -> str | None:
    """The key in `Authorization: Bearer`, else `X-API-Key`, else (a stream's WebSocket
    upgrade only) the subprotocol: one way in, so the key is checked, counted and refused
    alike whichever way it came."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("X-API-Key", "").strip() or _protocol_key(request)


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
        how = "send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        if request.path in _KEY_PROTOCOL_PATHS:
            how += (
                f" or, opening the WebSocket, as the subprotocols"
                f" '{STREAM_PROTOCOL}, {KEY_PROTOCOL_PREFIX}<key>'"
            )
        raise ApiError(Code.UNAUTHENTICATED, how, headers=_CHALLENGE)
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
