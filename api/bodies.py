"""Reading request bodies, headers and query strings into typed values, refusing what
cannot be stored or read back exactly with a 400 that names the field. Called by a
route's declaration (`api/operations.py`), never by a handler."""

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from api.errors import ApiError, Code, invalid, validation_error

M = TypeVar("M", bound=BaseModel)
E = TypeVar("E", bound=StrEnum)

# Deeper than this is no crew's input; orjson itself stops at 1024.
MAX_DEPTH = 32
# Beyond ±2^53 a JSON number is no longer exact in JavaScript, and orjson reads integers
# past 64 bits as floats: refuse both rather than store a number the client did not send.
MAX_SAFE_NUMBER = 2**53 - 1


def _refusal(value: object, path: str, depth: int) -> tuple[str, str] | None:
    """The first (field, problem) in a parsed JSON document that crewq refuses."""
    if depth > MAX_DEPTH:
        return path or "body", f"is nested more than {MAX_DEPTH} levels deep"
    if isinstance(value, str):
        # Postgres text and jsonb cannot hold U+0000.
        return (path or "body", "must not contain NUL (\\u0000)") if "\x00" in value else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if abs(value) > MAX_SAFE_NUMBER:
            return (
                path or "body",
                "must lie within ±(2^53 - 1); send larger numbers as strings",
            )
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return path or "body", "keys must not contain NUL (\\u0000)"
            if found := _refusal(item, inner, depth + 1):
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            if found := _refusal(item, f"{path}.{index}" if path else str(index), depth + 1):
                return found
    return None


def is_json(content_type: str) -> bool:
    """`application/json` or a JSON-based type (`application/merge-patch+json`)."""
    kind = content_type.lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)


def duplicate_key(raw: bytes) -> str | None:
    """The first key that appears twice in one object of a valid JSON document, if any.
    orjson keeps the last of duplicates silently, so `{"crew":"a","crew":"b"}` would run
    crew b while a proxy or a log that read the first saw crew a. The standard library's C
    scanner is given a hook that only compares keys: it builds no objects and converts no
    numbers. Measured (benchmarks/json_bodies.py): about twice orjson's parse, 4 µs for a
    small job, 7 ms for a body of 20,000 small objects."""
    try:
        json.loads(
            raw,
            object_pairs_hook=_unique_keys,
            parse_int=_ignored,
            parse_float=_ignored,
            parse_constant=_ignored,
        )
    except _DuplicateKey as exc:
        return exc.key
    return None


def _ignored(_: str) -> None:
    return None


async def read_json(request: web.Request) -> tuple[object, bytes]:
    if request.body_exists and not is_json(request.content_type):
        # Refused unread: a form or text/plain body is one a browser may send cross-site
        # without a preflight, and one crewq would otherwise have to guess the meaning of.
        raise ApiError(
            Code.UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON, with 'Content-Type: application/json'",
            {"content_type": request.content_type},
        )
    raw = await request.read()
    if not raw:
        raise ApiError(Code.INVALID_JSON, "the request body is empty; send a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(Code.INVALID_JSON, f"the request body is not valid JSON: {exc}") from exc
    if refused := _refusal(data, "", 0):
        raise invalid(*refused)
    if (twice := duplicate_key(raw)) is not None:
        raise ApiError(
            Code.INVALID_JSON,
            f"the request body is not valid JSON for crewq: the key {twice!r} appears more"
            " than once in one object",
            {"duplicate_key": twice},
        )
    return data, raw


def parse(model: type[M], data: object) -> M:
    if not isinstance(data, dict):
        raise invalid("body", "must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(model, exc) from exc


def header(request: web.Request, name: str, max_length: int = 255) -> str | None:
    """A header's value, which must be printable ASCII (bytes that are not UTF-8 arrive as
    surrogates and would fail later, deep in a query)."""
    value = request.headers.get(name)
    if value is None:
        return None
    if not (0 < len(value) <= max_length and value.isascii() and value.isprintable()):
        raise invalid(name, f"must be 1 to {max_length} printable ASCII characters")
    return value


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise invalid(name, f"must be an integer between {low} and {high}")
    return number


def query_enum(request: web.Request, name: str, enum: type[E]) -> E | None:
    """A query parameter that must be one of `enum`'s values; None when absent or empty."""
    value = request.query.get(name) or None
    if value is None:
        return None
    try:
        return enum(value)
    except ValueError as exc:
        raise invalid(name, f"must be one of: {', '.join(enum)}") from exc


def query_datetime(request: web.Request, name: str) -> datetime | None:
    """An ISO 8601 instant with its UTC offset (`2026-11-24T10:00:00Z`); None when absent.
    Empty is refused, as its documented `date-time` format says, not read as absent."""
    value = request.query.get(name)
    if value is None:
        return None
    try:
        parsed: datetime | None = datetime.fromisoformat(value)
        # Naive times are refused, not guessed; OverflowError: year 1 shifted before year 1.
        parsed = parsed.astimezone(UTC) if parsed and parsed.tzinfo else None
    except (ValueError, OverflowError):
        parsed = None
    if parsed is None:
        raise invalid(
            name, "must be an ISO 8601 date-time with a UTC offset, like 2026-01-31T12:00:00Z"
        )
    return parsed
