"""Every error leaves the API in one JSON shape with a stable `code` and the request id:
`{"error": {"code", "message", "request_id", "details"}}`."""

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from api.responses import json_response
from schemas.errors import ErrorBody, ErrorDetail
from shared.db import is_connection_error

log = logging.getLogger(__name__)

REQUEST_ID = web.AppKey("request_id_header", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def request_id(request: web.Request) -> str:
    return str(request["request_id"])


def _error_response(request: web.Request, err: ApiError) -> web.Response:
    body = ErrorBody(
        error=ErrorDetail(
            code=err.code, message=err.message, request_id=request_id(request), details=err.details
        )
    )
    return json_response(body, status=err.status, headers=err.headers)


def validation_error(exc: ValidationError) -> ApiError:
    details = [
        {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return ApiError(422, "VALIDATION_ERROR", "the request body is not valid", details)


# aiohttp's own HTTP errors (unknown route, wrong method, body too large) in our shape.
_HTTP_CODES = {
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.headers.get("X-Request-Id", "")
    request["request_id"] = (
        rid if 0 < len(rid) <= 128 and rid.isprintable() else f"req_{uuid.uuid4().hex}"
    )
    try:
        if "\x00" in request.path or any("\x00" in v for v in request.query.values()):
            raise ApiError(400, "INVALID_REQUEST", "the URL must not contain NUL characters")
        response = await handler(request)
    except ApiError as err:
        response = _error_response(request, err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, f"HTTP_{exc.status}")
        # Keep what the error must carry (Allow on a 405), not its own body's headers.
        kept = {
            k: v
            for k, v in exc.headers.items()
            if k.lower() not in ("content-type", "content-length")
        }
        response = _error_response(request, ApiError(exc.status, code, exc.reason, headers=kept))
    except Exception as exc:
        if request.transport is None or request.transport.is_closing():
            # The client hung up: nobody is left to answer, and nothing is wrong here.
            log.info("%s %s: the client went away (%s)", request.method, request.path, exc)
            response = _error_response(request, ApiError(499, "CLIENT_CLOSED", "client went away"))
        elif is_connection_error(exc):
            log.warning("postgres unavailable: %s", exc)
            response = _error_response(
                request,
                ApiError(
                    503,
                    "SERVICE_UNAVAILABLE",
                    "the database is unreachable; nothing was changed, try again shortly",
                    headers={"Retry-After": "5"},
                ),
            )
        else:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = _error_response(request, ApiError(500, "INTERNAL_ERROR", "internal error"))
    response.headers["X-Request-Id"] = request_id(request)
    return response
