"""`/openapi.json` and `/docs`: the API described, and rendered in a browser by Swagger UI
served from crewq itself (the `swagger-ui-py` package's files), never from a CDN."""

import importlib.resources
from pathlib import Path

import orjson
from aiohttp import web

from api.openapi import build
from api.operations import Call, Operation, operation

routes = web.RouteTableDef()

_OURS = Path(__file__).resolve().parent.parent / "static"
_SWAGGER = Path(str(importlib.resources.files("swagger_ui") / "static"))
_ASSETS = {
    "swagger-ui.css": _SWAGGER / "swagger-ui.css",
    "swagger-ui-bundle.js": _SWAGGER / "swagger-ui-bundle.js",
    "favicon-32x32.png": _SWAGGER / "favicon-32x32.png",
    "docs.js": _OURS / "docs.js",
}
_DOCUMENT = web.AppKey("openapi_document", bytes)


@routes.get("/openapi.json")
@operation(Operation("This document: the API in OpenAPI 3.1", None, {200: None}, public=True))
async def openapi(request: web.Request, call: Call[None]) -> web.Response:
    return web.Response(body=request.app[_DOCUMENT], content_type="application/json")


async def build_document(app: web.Application) -> None:
    """`on_startup`: built once, from the routes as registered (they do not change)."""
    app[_DOCUMENT] = orjson.dumps(build(app))


# The page and its files are served, not documented: they are not part of the API.
@routes.get("/docs")
@operation(Operation("The API, rendered", None, {200: None}, public=True, listed=False))
async def docs(request: web.Request, call: Call[None]) -> web.FileResponse:
    return web.FileResponse(_OURS / "docs.html")


@routes.get("/docs/{asset}")
@operation(Operation("A file of the docs page", None, {200: None}, public=True, listed=False))
async def docs_asset(request: web.Request, call: Call[None]) -> web.FileResponse:
    path = _ASSETS.get(request.match_info["asset"])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})
