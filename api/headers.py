"""Headers every answer carries, errors and event streams included: security headers, a
`Server` that names no versions, the rate-limit headers, and CORS for listed origins only.
Set as the answer is prepared, so no handler or middleware can forget them."""

import hmac

from aiohttp import web

from api.addresses import came_over_tls
from api.context import SETTINGS
from api.errors import Handler
from api.ratelimit import RATE_WINDOW, RateWindow

# JSON needs no sources at all; the docs page loads crewq's own script and styles.
_API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none';"
    " form-action 'none'"
)
# The dashboard: its own files only, and not even inline styles (no 'unsafe-inline'). The
# API it calls is this origin ('self').
_UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " img-src 'self' data:; manifest-src 'self'; frame-ancestors 'none'; base-uri 'none';"
    " form-action 'none'"
)
_SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_CORS_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
_CORS_REQUEST_HEADERS = (
    "Authorization, X-API-Key, Content-Type, Idempotency-Key, Last-Event-ID, X-Request-Id"
)
_CORS_EXPOSED = (
    "X-Request-Id, Location, Retry-After, Idempotent-Replayed, X-RateLimit-Limit,"
    " X-RateLimit-Remaining, X-RateLimit-Reset, RateLimit-Limit, RateLimit-Remaining,"
    " RateLimit-Reset"
)


def _allowed_origin(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    return origin if origin is not None and origin in request.app[SETTINGS].cors_origins else None


def _csp(path: str) -> str:
    if path == "/docs" or path.startswith("/docs/"):
        return _DOCS_CSP
    if path == "/ui" or path.startswith("/ui/"):
        return _UI_CSP
    return _API_CSP


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare` signal."""
    headers = response.headers
    headers["Server"] = "crewq"
    headers.update(_SECURITY)
    headers["Content-Security-Policy"] = _csp(request.path)
    if came_over_tls(request, request.app[SETTINGS].trusted_proxies):
        headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    window: RateWindow | None = request.get(RATE_WINDOW)
    if window is not None:
        headers.update(window.headers())
    if (origin := _allowed_origin(request)) is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = _CORS_EXPOSED
        headers.add("Vary", "Origin")


@web.middleware
async def cors_preflight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer a listed origin's preflight before authentication (browsers send none with
    it); any other OPTIONS goes on, to be refused like any unknown method."""
    if (
        request.method == "OPTIONS"
        and "Access-Control-Request-Method" in request.headers
        and _allowed_origin(request) is not None
    ):
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": _CORS_METHODS,
                "Access-Control-Allow-Headers": _CORS_REQUEST_HEADERS,
                "Access-Control-Max-Age": "600",
            },
        )
    return await handler(request)


def secret_matches(given: str, secret: str) -> bool:
    """Whether a header's value is `secret`, compared in constant time. Header values are
    str, holding surrogates for bytes that are not UTF-8, and `hmac.compare_digest` refuses
    non-ASCII str while `.encode()` refuses surrogates: both are compared as the bytes sent,
    so no value a client can send makes the comparison raise (a 500, and for a hidden route
    a different answer than a route that does not exist)."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), secret.encode("utf-8", "surrogateescape")
    )
