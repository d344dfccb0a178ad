"""The request-description layer: each API operation is built once, as an `ApiRequest`
that says what to send and how to read the answer; `Client` and `AsyncClient` only send it.
So the sync and async clients cannot drift apart in what they ask."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

Params = dict[str, str | int]


@dataclass(frozen=True)
class ApiRequest(Generic[T]):
    """One call of the API. `idempotent`: sending it twice does what sending it once does
    (reads, and a submission with its Idempotency-Key), so a broken connection may be
    retried; otherwise only a connection that was never made is."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Params = field(default_factory=dict)
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = False

    def with_params(self, **params: str | int) -> "ApiRequest[T]":
        return replace(self, params={**self.params, **params})


def model(kind: type[M]) -> Callable[[httpx.Response], M]:
    """Read the answer as the wire model `kind`."""

    def read(response: httpx.Response) -> M:
        return kind.model_validate_json(response.content)

    return read


def nothing(response: httpx.Response) -> None:
    """A 204's empty answer."""
    return None


def get(path: str, kind: type[M], params: Params | None = None) -> ApiRequest[M]:
    return ApiRequest("GET", path, model(kind), params=params or {}, idempotent=True)


def post(
    path: str,
    kind: type[M],
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    idempotent: bool = False,
) -> ApiRequest[M]:
    return ApiRequest(
        "POST", path, model(kind), json=body, headers=headers or {}, idempotent=idempotent
    )


def jsonable(value: Any) -> Any:
    """A keyword argument as JSON: models as their wire form, enums as their values, times
    as ISO 8601, None fields left out (the server's default applies)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def body(**fields: Any) -> dict[str, Any]:
    """A JSON body of the fields given, without those left None."""
    return {name: jsonable(value) for name, value in fields.items() if value is not None}


def query(**fields: Any) -> Params:
    """Query parameters of the fields given, without those left None."""
    found: Params = {}
    for name, value in fields.items():
        if value is None:
            continue
        found[name] = value if isinstance(value, int) else str(jsonable(value))
    return found
