"""The OpenAPI 3.1 document, generated from what the handlers themselves declare: each
route's `@operation(...)` (`api/operations.py`) names its scope, body, parameters, answers
and the error codes it may give, as the same pydantic models and readers the route parses
with. No copy is kept by hand."""

from collections.abc import Mapping
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.operations import NO_NUL, Operation, declared
from schemas.errors import STATUS, ApiErrorCode, ErrorBody
from shared.runtime.version import VERSION

C = ApiErrorCode

_HTTP_REASONS = {
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
}

_AUTH_ERRORS = (
    C.UNAUTHENTICATED,
    C.INVALID_API_KEY,
    C.API_KEY_EXPIRED,
    C.API_KEY_REVOKED,
    C.IP_NOT_ALLOWED,
    C.RATE_LIMITED,
)
_ALWAYS = (C.INTERNAL_ERROR, C.SERVICE_UNAVAILABLE)


def _errors_of(op: Operation) -> list[ApiErrorCode]:
    codes = list(op.errors) + list(_ALWAYS)
    if not op.public:
        codes += _AUTH_ERRORS
    if op.scope is not None:
        codes.append(C.INSUFFICIENT_SCOPE)
    if op.body is not None:
        codes += [C.INVALID_JSON, C.VALIDATION_ERROR, C.PAYLOAD_TOO_LARGE]
    if op.query or op.headers:
        codes.append(C.VALIDATION_ERROR)
    return list(dict.fromkeys(codes))


Mode = Literal["validation", "serialization"]
Refs = Mapping[tuple[Any, Mode], Any]


def _json(refs: Refs, model: type[BaseModel], mode: Mode) -> dict[str, Any]:
    return {"application/json": {"schema": refs[model, mode]}}


def _operation_doc(op: Operation, path_params: list[str], op_id: str, refs: Refs) -> dict[str, Any]:
    doc: dict[str, Any] = {"operationId": op_id, "summary": op.summary, "tags": list(op.tags)}
    if op.scope is not None:
        doc["description"] = f"Needs the `{op.scope.value}` scope (or `admin`)."
    if op.public:
        doc["security"] = []
    elif op.scope is not None:
        # Scopes of a scheme that is not OAuth are role names (OpenAPI 3.1): the scope the
        # declaration enforces, stated where a client (and tests/acceptance) can read it.
        doc["security"] = [{"bearer": [op.scope.value]}, {"apiKey": [op.scope.value]}]
    params: list[dict[str, Any]] = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string", "pattern": NO_NUL}}
        for p in path_params
    ]
    for where, group in (("query", op.query), ("header", op.headers)):
        for p in group:
            param: dict[str, Any] = {"name": p.name, "in": where, "schema": dict(p.schema)}
            param["description"] = p.description
            if p.style == "deepObject":
                param |= {"style": "deepObject", "explode": True}
            params.append(param)
    if params:
        doc["parameters"] = params
    if op.body is not None:
        doc["requestBody"] = {
            "required": not op.body_optional,
            "content": _json(refs, op.body, "validation"),
        }
    responses: dict[str, Any] = {}
    for status, model in op.answers.items():
        answer: dict[str, Any] = {"description": _HTTP_REASONS.get(status, str(status))}
        content: dict[str, Any] = _json(refs, model, "serialization") if model else {}
        if op.event_stream and status == 200:  # beside the JSON answer, when there is one
            content["text/event-stream"] = {"schema": {"type": "string"}}
        if content:
            answer["content"] = content
        responses[str(status)] = answer
    by_status: dict[int, list[str]] = {}
    for code in _errors_of(op):
        by_status.setdefault(STATUS[code], []).append(code.value)
    for status, codes in sorted(by_status.items()):
        responses[str(status)] = {
            "description": "`error.code`: " + ", ".join(f"`{c}`" for c in codes),
            "content": _json(refs, ErrorBody, "serialization"),
        }
    doc["responses"] = responses
    return doc


def _models(op: Operation) -> list[tuple[type[BaseModel], Mode]]:
    found: list[tuple[type[BaseModel], Mode]] = [(ErrorBody, "serialization")]
    found += [(m, "serialization") for m in op.answers.values() if m is not None]
    return found + ([(op.body, "validation")] if op.body is not None else [])


def build(app: web.Application) -> dict[str, Any]:
    documented: list[tuple[str, str, Operation, str]] = []
    for route in app.router.routes():
        op = declared(route.handler)
        if op is None or not op.listed or route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource else {}
        path = str(info.get("formatter") or info.get("path"))
        documented.append((path, route.method.lower(), op, route.handler.__name__))
    wanted = list(dict.fromkeys(pair for _, _, op, _ in documented for pair in _models(op)))
    refs, schemas = models_json_schema(wanted, ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for path, method, op, op_id in documented:
        path_params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        paths.setdefault(path, {})[method] = _operation_doc(op, path_params, op_id, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "crewq",
            "version": VERSION,
            "description": (
                "Run CrewAI crews as background jobs. Every error has the shape"
                ' `{"error": {"code", "message", "request_id", "details"}}`.'
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
