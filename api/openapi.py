"""The OpenAPI 3.1 document, generated from what the handlers themselves declare: each
route's `@operation(...)` (`api/operations.py`) names its scope, body, parameters, answers
and the error codes it may give, as the same pydantic models and readers the route parses
with. No copy is kept by hand."""

import copy
from collections.abc import Mapping
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.bodies import MAX_DEPTH, MAX_SAFE_NUMBER
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


# What api/bodies.py refuses in any body, wherever in it, stated in every body's schema:
# strings and keys holding NUL, numbers beyond ±(2^53 - 1), nesting past MAX_DEPTH. A body's
# free-form parts (a job's `inputs`) take any JSON value within those bounds.
_JSON_VALUE = "JsonValue"
_JSON_VALUE_REF = {"$ref": f"#/components/schemas/{_JSON_VALUE}"}
_SAFE_BOUNDS = {"minimum": -MAX_SAFE_NUMBER, "maximum": MAX_SAFE_NUMBER}
_JSON_VALUE_SCHEMA: dict[str, Any] = {
    "description": (
        "Any JSON value: strings and keys without NUL, numbers within ±(2^53 - 1) (send"
        f" larger ones as strings), objects and arrays nested at most {MAX_DEPTH} deep in"
        " the body."
    ),
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "number", **_SAFE_BOUNDS},
        {"type": "string", "pattern": NO_NUL},
        {"type": "array", "items": _JSON_VALUE_REF},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": _JSON_VALUE_REF,
        },
    ],
}
# Keys of a schema that only annotate it: a schema of nothing else is free-form (`Any`).
_ANNOTATIONS = {"title", "description", "default", "examples"}


def _free_form(schema: object) -> bool:
    return schema is True or (isinstance(schema, dict) and set(schema) <= _ANNOTATIONS)


def _bounded(schema: Any, reached: set[str]) -> Any:
    """`schema` with the body bounds stated in it, and the components it refers to added to
    `reached` (bounded in turn by the caller)."""
    if isinstance(schema, list):
        return [_bounded(item, reached) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if _free_form(schema):
        reached.add(_JSON_VALUE)
        return {**schema, **_JSON_VALUE_REF}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "$defs"):
            out[key] = {name: _bounded(sub, reached) for name, sub in value.items()}
        elif key in ("additionalProperties", "items") and _free_form(value):
            reached.add(_JSON_VALUE)
            out[key] = dict(_JSON_VALUE_REF)
        elif key in ("enum", "const", "default", "examples"):
            out[key] = value  # values, not schemas
        else:
            out[key] = _bounded(value, reached)
    if isinstance(ref := out.get("$ref"), str) and ref.startswith("#/components/schemas/"):
        reached.add(ref.rsplit("/", 1)[1])
    kind = out.get("type")
    if kind == "string" and "pattern" not in out and not {"enum", "const"} & set(out):
        out["pattern"] = NO_NUL
    if kind in ("number", "integer"):
        out.setdefault("minimum", -MAX_SAFE_NUMBER)
        out.setdefault("maximum", MAX_SAFE_NUMBER)
    open_keys = out.get("additionalProperties", False) is not False
    if kind == "object" and open_keys and "propertyNames" not in out:
        out["propertyNames"] = {"pattern": NO_NUL}
    elif isinstance(names := out.get("propertyNames"), dict) and "pattern" not in names:
        out["propertyNames"] = {**names, "pattern": NO_NUL}
    return out


def _bound_bodies(schemas: dict[str, Any], bodies: set[str]) -> None:
    """Bound, in place, every component a body reaches. A component an answer shares is
    bounded too: nothing crewq answers lies outside what it accepts."""
    todo, done = set(bodies), set[str]()
    while todo:
        name = todo.pop()
        done.add(name)
        if name == _JSON_VALUE:
            continue  # bounded as written
        reached: set[str] = set()
        schemas[name] = _bounded(schemas[name], reached)
        todo |= reached - done
    if _JSON_VALUE in done:
        schemas[_JSON_VALUE] = copy.deepcopy(_JSON_VALUE_SCHEMA)


def _component(refs: Refs, model: type[BaseModel], mode: Mode) -> str:
    ref: str = refs[model, mode]["$ref"]
    return ref.rsplit("/", 1)[1]


def _links(op: Operation, op_id: str, targets: Mapping[str, list[str]]) -> dict[str, Any]:
    links: dict[str, Any] = {}
    for link in op.links:
        params = targets.get(link.to)
        if params is None or len(params) != 1:
            raise ValueError(
                f"{op_id}: links to {link.to!r}, which is no documented operation with one"
                " path parameter"
            )
        links[link.to] = {
            "operationId": link.to,
            "parameters": {params[0]: f"$response.body#{link.at}"},
        }
    return links


def _operation_doc(
    app: web.Application,
    op: Operation,
    path_params: list[str],
    op_id: str,
    refs: Refs,
    components: Mapping[str, Any],
    targets: Mapping[str, list[str]],
) -> dict[str, Any]:
    doc: dict[str, Any] = {"operationId": op_id, "summary": op.summary, "tags": list(op.tags)}
    said = [f"Needs the `{op.scope.value}` scope (or `admin`)."] if op.scope is not None else []
    if op.description:
        said.append(op.description)
    if said:
        doc["description"] = " ".join(said)
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
        body = _json(refs, op.body, "validation")
        if op.refine_body is not None:
            own = copy.deepcopy(components[_component(refs, op.body, "validation")])
            body["application/json"]["schema"] = op.refine_body(app, own)
        doc["requestBody"] = {"required": not op.body_optional, "content": body}
    responses: dict[str, Any] = {}
    for status, model in op.answers.items():
        answer: dict[str, Any] = {"description": _HTTP_REASONS.get(status, str(status))}
        content: dict[str, Any] = _json(refs, model, "serialization") if model else {}
        if op.event_stream and status == 200:  # beside the JSON answer, when there is one
            content["text/event-stream"] = {"schema": {"type": "string"}}
        if content:
            answer["content"] = content
        if model is not None and op.links:
            answer["links"] = _links(op, op_id, targets)
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
    components: dict[str, Any] = schemas.get("$defs", {})
    bodies = {_component(refs, op.body, "validation") for _, _, op, _ in documented if op.body}
    _bound_bodies(components, bodies)
    targets = {
        op_id: [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        for path, _, _, op_id in documented
    }
    paths: dict[str, dict[str, Any]] = {}
    for path, method, op, op_id in documented:
        paths.setdefault(path, {})[method] = _operation_doc(
            app, op, targets[op_id], op_id, refs, components, targets
        )
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
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
