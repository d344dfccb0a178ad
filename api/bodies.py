"""Reading request bodies and query strings into schema models."""

from enum import StrEnum
from typing import TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from api.errors import ApiError, validation_error

M = TypeVar("M", bound=BaseModel)
E = TypeVar("E", bound=StrEnum)


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


async def read_json(request: web.Request) -> tuple[object, bytes]:
    raw = await request.read()
    if not raw:
        raise ApiError(400, "INVALID_JSON", "the request body is empty; send a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "INVALID_JSON", f"the request body is not valid JSON: {exc}") from exc
    # Postgres text and jsonb cannot hold U+0000; refuse it here rather than fail later.
    if _has_nul(data):
        raise ApiError(422, "VALIDATION_ERROR", "strings must not contain NUL (\\u0000)")
    return data, raw


def parse(model: type[M], data: object) -> M:
    if not isinstance(data, dict):
        raise ApiError(422, "VALIDATION_ERROR", "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise ApiError(
            422,
            "VALIDATION_ERROR",
            f"{name} must be an integer from {low} to {high}",
            [{"field": name, "message": "out of range", "type": "query"}],
        )
    return number


def query_enum(request: web.Request, name: str, enum: type[E]) -> E | None:
    """A query parameter that must be one of `enum`'s values; None when absent or empty."""
    value = request.query.get(name) or None
    if value is None:
        return None
    try:
        return enum(value)
    except ValueError as exc:
        raise ApiError(422, "VALIDATION_ERROR", f"{name} must be one of {', '.join(enum)}") from exc
