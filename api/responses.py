"""JSON responses serialised with orjson."""

from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel


def json_response(
    body: BaseModel | dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    data = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )
