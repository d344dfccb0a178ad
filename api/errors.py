"""Every error leaves the API in one JSON shape with a stable `code` and the request id:
`{"error": {"code", "message", "request_id", "details"}}`."""

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ValidationError

from api.responses import json_response
from schemas.errors import STATUS, ApiErrorCode, ErrorBody, ErrorDetail
from shared.runtime.db import is_connection_error

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Code = ApiErrorCode


class ApiError(Exception):
    def __init__(
        self,
        code: ApiErrorCode,
        message: str,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status or STATUS[code]
        self.message = message
        self.details = details
        self.headers = dict(headers or {})


def request_id(request: web.Request) -> str:
    return str(request["request_id"])


def error_response(request: web.Request, err: ApiError) -> web.Response:
    body = ErrorBody(
        error=ErrorDetail(
            code=err.code, message=err.message, request_id=request_id(request), details=err.details
        )
    )
    response = json_response(body, status=err.status, headers=err.headers)
    response["error_code"] = err.code  # for the tenant's failure log (api/failure_log.py)
    return response


def invalid(field: str, message: str) -> ApiError:
    """A 400 naming one field, in the shape every validation error has."""
    return ApiError(Code.VALIDATION_ERROR, f"{field}: {message}", {field: [message]})


@functools.cache
def _properties(model: type[BaseModel]) -> dict[str, Any]:
    properties: dict[str, Any] = model.model_json_schema().get("properties", {})
    return properties


def _bounds(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[Any, Any] | None:
    """A top-level integer field's (minimum, maximum), when it has both."""
    prop = _properties(model).get(str(loc[0]), {}) if len(loc) == 1 else {}
    for option in (prop, *prop.get("anyOf", ())):
        if option.get("type") == "integer" and {"minimum", "maximum"} <= option.keys():
            return option["minimum"], option["maximum"]
    return None


_INT_ERRORS = frozenset(
    {"int_type", "int_parsing", "int_from_float", "greater_than_equal", "less_than_equal"}
)
_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "dict_type": "must be an object",
    "list_type": "must be an array",
    "int_type": "must be an integer",
    "string_too_short": "must not be empty",
}


def _message(model: type[BaseModel], error: Any) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    bounds = _bounds(model, tuple(error["loc"]))
    if kind in _INT_ERRORS and bounds is not None:
        return f"must be an integer between {bounds[0]} and {bounds[1]}"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} items"
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} items"
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    text = str(error["msg"]).removeprefix("Value error, ")
    return text[:1].lower() + text[1:]


def validation_error(model: type[BaseModel], exc: ValidationError) -> ApiError:
    """400 with `details` naming each field: `{"timeout": ["must be an integer ..."]}`."""
    fields: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(p) for p in error["loc"]) or "body"
        fields.setdefault(name, []).append(_message(model, error))
    summary = "; ".join(f"{k}: {', '.join(v)}" for k, v in fields.items())
    return ApiError(Code.VALIDATION_ERROR, f"the request is not valid: {summary}", fields)


# aiohttp's own HTTP errors (unknown route, wrong method, body too large) in our shape.
_HTTP_CODES = {
    404: Code.NOT_FOUND,
    405: Code.METHOD_NOT_ALLOWED,
    413: Code.PAYLOAD_TOO_LARGE,
    415: Code.UNSUPPORTED_MEDIA_TYPE,
}


def _request_id_of(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    # Surrogates (undecodable bytes) are not printable: such an id is replaced, not echoed.
    if 0 < len(given) <= 128 and given.isprintable() and given.isascii():
        return given
    return f"req_{uuid.uuid4().hex}"


def ensure_request_id(request: web.Request) -> str:
    """The request's id, made by the first middleware that asks (the tracing one, which
    puts it on every log line) and kept for the others."""
    if "request_id" not in request:
        request["request_id"] = _request_id_of(request)
    return request_id(request)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    ensure_request_id(request)
    try:
        _refuse_nul(request)
        response = await handler(request)
    except ApiError as err:
        response = error_response(request, err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Keep what the error must carry (Allow on a 405), not its own body's headers.
        kept = {
            k: v
            for k, v in exc.headers.items()
            if k.lower() not in ("content-type", "content-length")
        }
        if exc.status == 405:
            kept["Allow"] = await _allowed_here(request)
        code = _HTTP_CODES.get(exc.status, Code.HTTP_ERROR)
        response = error_response(
            request, ApiError(code, exc.reason, headers=kept, status=exc.status)
        )
    except (RequestPayloadError, HttpProcessingError) as exc:
        # A body the client broke off or framed wrongly (bad chunking, short of its
        # Content-Length): its fault, one line in the log, no traceback.
        log.info("%s %s: unreadable request body: %s", request.method, request.path, exc)
        response = error_response(
            request, ApiError(Code.INVALID_REQUEST, "the request body could not be read")
        )
    except Exception as exc:
        response = error_response(request, _unexpected(request, exc))
    response.headers["X-Request-Id"] = request_id(request)
    return response


async def _allowed_here(request: web.Request) -> str:
    """The methods of the route that owns this exact path. aiohttp's 405 lists those of
    every route whose pattern matches, so `/v1/jobs/batch` would advertise the GET of
    `/v1/jobs/{job_id}`. The owner is the match aiohttp itself tries first: the longest
    fixed prefix (a path without parameters is all prefix), earlier registered on a tie."""
    best: tuple[int, set[str]] | None = None
    for resource in request.app.router.resources():
        _, allowed = await resource.resolve(request)
        fixed = len(resource.canonical.partition("{")[0])
        if allowed and (best is None or fixed > best[0]):
            best = (fixed, allowed)
    return ",".join(sorted(best[1])) if best else ""


def _shown(name: str) -> str:
    return name.replace("\x00", "\\u0000")


def _refuse_nul(request: web.Request) -> None:
    """Postgres text cannot hold U+0000, and any query parameter (its name too: metadata
    filters use the name) may end up in a query: refuse NUL anywhere in the URL, naming
    where, before it can reach the database as a 500."""
    if "\x00" in request.path:
        raise ApiError(Code.INVALID_REQUEST, "the URL path must not contain NUL characters")
    for name, value in request.query.items():
        if "\x00" in name or "\x00" in value:
            # INVALID_REQUEST, as NUL in the URL always was; `details` names the parameter.
            field, problem = _shown(name), "must not contain NUL (\\u0000)"
            raise ApiError(Code.INVALID_REQUEST, f"{field}: {problem}", {field: [problem]})


def _unexpected(request: web.Request, exc: Exception) -> ApiError:
    if request.transport is None or request.transport.is_closing():
        # The client hung up: nobody is left to answer, and nothing is wrong here.
        log.info("%s %s: the client went away (%s)", request.method, request.path, exc)
        return ApiError(Code.CLIENT_CLOSED, "client went away")
    if is_connection_error(exc):
        log.warning("postgres unavailable: %s", exc)
        return ApiError(
            Code.SERVICE_UNAVAILABLE,
            "the database is unreachable; nothing was changed, try again shortly",
            headers={"Retry-After": "5"},
        )
    # The answer names nothing of the cause; the log has it, under the request id.
    log.error(
        "unhandled error on %s %s (request %s)",
        request.method,
        request.path,
        request_id(request),
        exc_info=exc,
    )
    return ApiError(
        Code.INTERNAL_ERROR,
        f"internal error; quote request id {request_id(request)} to support",
    )
