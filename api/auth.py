"""API keys: `Authorization: Bearer <key>` or `X-API-Key: <key>`, and scopes per route."""

from aiohttp import web

from api.context import DB
from api.errors import ApiError, Handler
from shared.keys import Principal, authenticate

PUBLIC_PATHS = frozenset({"/healthz"})


def _presented_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("X-API-Key") or None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    key = _presented_key(request)
    if key is None:
        raise ApiError(
            401,
            "UNAUTHENTICATED",
            "send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = await authenticate(request.app[DB], key)
    if principal is None:
        raise ApiError(
            401,
            "INVALID_API_KEY",
            "the API key is not valid or was revoked",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request["principal"] = principal
    return await handler(request)


def require(request: web.Request, scope: str) -> Principal:
    principal: Principal = request["principal"]
    if scope not in principal.scopes:
        raise ApiError(
            403,
            "INSUFFICIENT_SCOPE",
            f"this API key lacks the {scope!r} scope",
            {"required_scope": scope},
        )
    return principal
