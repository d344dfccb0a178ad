"""A route's declaration, which is also its behaviour: `@operation(Operation(...))` names
the scope, the body, the query parameters and the headers of a route, and the same
declaration both enforces them and documents them (`api/openapi.py` renders it).

Before the handler runs, the declaration checks the scope it names against the key the
auth middleware authenticated, then reads each declared header and query parameter and the
body into typed values, refusing what it cannot read with the 400 (or 415) that names it.
The handler receives them as a `Call`: `call.principal`, `call.body`, `call[LIMIT]`. So the
scope a route documents is the scope it enforces, and no handler parses its own input.
"""

import functools
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel

from api.auth import PRINCIPAL, principal_of, require
from api.bodies import header, parse, query_datetime, query_enum, query_int, read_json
from schemas.account import Scope
from schemas.errors import ApiErrorCode
from shared.store.keys import Principal

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)
B = TypeVar("B", bound=BaseModel | None)
R = TypeVar("R", bound=web.StreamResponse)

# How a parameter's value is read from a request: given its name, its typed value, or an
# ApiError (400 naming it) when the client sent something it cannot be.
Reader = Callable[[web.Request, str], T]


@dataclass(frozen=True)
class Param(Generic[T]):
    """One query parameter or header: its name, its documented schema, and how it is read.
    Made by the constructors below, which derive the schema from the reading."""

    name: str
    schema: Mapping[str, Any]
    description: str
    read: Reader[T] = field(repr=False, compare=False)
    style: Literal["form", "deepObject"] = "form"


@dataclass(frozen=True)
class Link:
    """Where a successful answer leads: its value at `at` (a JSON pointer into the body;
    `/id` by default) is the path parameter of the operation `to` (its handler's name, the
    operationId). Rendered as an OpenAPI link, which clients and the stateful phase of
    tests/acceptance/test_openapi_strict.py follow from the answer that made a resource to
    the operations on it."""

    to: str
    at: str = "/id"


# Given the running app and the body's schema as its model renders it, the schema to
# document instead: for what only the app knows once started (the registered crews).
BodyRefinement = Callable[[web.Application, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Operation:
    summary: str
    scope: Scope | None  # None: any valid key (or no key at all, when public)
    answers: Mapping[int, type[BaseModel] | None]  # success status -> body (None: empty)
    body: type[BaseModel] | None = None
    body_optional: bool = False
    query: Sequence[Param[Any]] = ()
    headers: Sequence[Param[Any]] = ()
    errors: Sequence[ApiErrorCode] = ()
    links: Sequence[Link] = ()
    refine_body: BodyRefinement | None = field(default=None, compare=False)
    public: bool = False
    event_stream: bool = False  # answers text/event-stream
    tags: Sequence[str] = field(default_factory=tuple)
    # More for the OpenAPI description, after the scope it needs (markdown).
    description: str = ""
    # False: served, but not in the OpenAPI document (the docs page itself, the hidden
    # debug report, whose existence is not advertised).
    listed: bool = True

    def __post_init__(self) -> None:
        names = [p.name.lower() for p in (*self.query, *self.headers)]
        if len(names) != len(set(names)):
            raise ValueError(f"{self.summary!r}: a parameter is declared twice")
        if self.links and all(model is None for model in self.answers.values()):
            raise ValueError(f"{self.summary!r}: links lead from an answer, and none has a body")

    async def call(self, request: web.Request) -> "Call[Any]":
        """Everything the handler needs, checked: the first refusal is the answer."""
        # Set by auth_middleware: absent on a public path, and on a hidden one without a key.
        principal: Principal | None = request.get(PRINCIPAL)
        if self.scope is not None:
            principal = principal_of(request)
            require(principal, self.scope)
        values = {p.name: p.read(request, p.name) for p in (*self.headers, *self.query)}
        body: BaseModel | None = None
        raw = b""
        if self.body is not None:
            if self.body_optional and not request.body_exists:
                body = self.body()  # none sent: the model's defaults
            else:
                data, raw = await read_json(request)
                body = parse(self.body, data)
        return Call(principal, body, raw, values)


class Call(Generic[B]):
    """What one request brings a handler, read as its operation declares."""

    def __init__(
        self, principal: Principal | None, body: B, raw_body: bytes, values: Mapping[str, Any]
    ) -> None:
        self._principal = principal
        self.body = body
        self.raw_body = raw_body  # the body's bytes as sent (b"" when none)
        self._values = values

    @property
    def principal(self) -> Principal:
        if self._principal is None:
            raise RuntimeError("no key was presented: a public operation has no principal")
        return self._principal

    def __getitem__(self, param: Param[T]) -> T:
        if param.name not in self._values:
            raise KeyError(f"{param.name!r} is not a parameter this operation declares")
        value: T = self._values[param.name]
        return value


Endpoint = Callable[[web.Request, Call[B]], Awaitable[R]]


def operation(op: Operation) -> Callable[[Endpoint[B, R]], Callable[[web.Request], Awaitable[R]]]:
    """Declares a handler's operation and wraps it into the aiohttp handler that enforces it."""

    def declare(endpoint: Endpoint[B, R]) -> Callable[[web.Request], Awaitable[R]]:
        _check_body_type(op, endpoint)

        @functools.wraps(endpoint)
        async def handler(request: web.Request) -> R:
            return await endpoint(request, await op.call(request))

        handler._operation = op  # type: ignore[attr-defined]
        return handler

    return declare


def declared(handler: object) -> Operation | None:
    """The operation a registered handler declares, if it declares one."""
    op: Operation | None = getattr(handler, "_operation", None)
    return op


def _check_body_type(op: Operation, endpoint: Endpoint[Any, Any]) -> None:
    """`Call[JobCreate]` in the handler's signature must be the body its operation reads:
    checked at import, so a mismatch never reaches a request."""
    hint = typing.get_type_hints(endpoint).get("call")
    wanted = op.body if op.body is not None else type(None)
    if typing.get_origin(hint) is not Call or typing.get_args(hint) != (wanted,):
        raise TypeError(
            f"{endpoint.__qualname__}: its `call` must be Call[{wanted.__name__}], as its"
            f" operation declares, not {hint}"
        )


# The readers, each with the schema that documents exactly what it accepts.

# Any string but one holding NUL, which no URL may carry (api/errors.py `_refuse_nul`):
# Postgres text cannot store it.
NO_NUL = "^[^\\u0000]*$"


def int_query(name: str, description: str, *, default: int, low: int, high: int) -> Param[int]:
    return Param(
        name,
        {"type": "integer", "minimum": low, "maximum": high, "default": default},
        description,
        lambda request, n: query_int(request, n, default, low, high),
    )


def limit_param(default: int = 20, high: int = 100) -> Param[int]:
    return int_query("limit", "How many to answer.", default=default, low=1, high=high)


def text_query(name: str, description: str) -> Param[str | None]:
    """Any string; None when absent or empty."""
    return Param(
        name,
        {"type": "string", "pattern": NO_NUL},
        description,
        lambda r, n: r.query.get(n) or None,
    )


def enum_query(name: str, enum: type[E], description: str) -> Param[E | None]:
    """One of `enum`'s values; None when absent or empty (`?status=` filters nothing)."""
    return Param(
        name,
        {"type": "string", "enum": [*enum, ""]},
        description,
        lambda r, n: query_enum(r, n, enum),
    )


def datetime_query(name: str, description: str) -> Param[datetime | None]:
    return Param(name, {"type": "string", "format": "date-time"}, description, query_datetime)


# Printable ASCII, neither starting nor ending with a space: a header's value as `header`
# (api/bodies.py) reads it, once HTTP has trimmed the spaces around it.
PRINTABLE_ASCII = "^[!-~]([ -~]*[!-~])?$"


def text_header(name: str, description: str, *, max_length: int = 255) -> Param[str | None]:
    """Printable ASCII of 1 to `max_length` characters; None when absent."""
    return Param(
        name,
        {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": PRINTABLE_ASCII},
        description,
        lambda r, n: header(r, n, max_length),
    )


LIMIT = limit_param()
CURSOR = text_query("cursor", "The `next_cursor` of the previous page.")
