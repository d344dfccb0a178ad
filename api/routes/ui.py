"""`/ui`: the web dashboard, a single page of plain ES modules and one stylesheet shipped in
the package (`api/static/ui/`), never from a CDN, under a CSP without `'unsafe-inline'`
(`api/headers.py`). It holds no key: the page asks for one and calls the API with it, so
every page path and asset is public, and the same `index.html` answers each page path
(the page reads its own path to know which view to show).

Assets are read into memory once, with their gzip, so a page load costs no disk read and
a browser that accepts gzip is sent ~4 times fewer bytes. Each carries its ETag and
`Cache-Control: no-cache`: revalidated on every load (a 304 when unchanged), so a new
release is picked up at once."""

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from api.operations import Call, Operation, operation

routes = web.RouteTableDef()

UI_DIR = Path(__file__).resolve().parent.parent / "static" / "ui"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The views the page routes to; any other path under /ui is a 404.
VIEWS = ("webhooks", "schedules", "keys", "usage", "health")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str


def _load(path: Path) -> Asset:
    body = path.read_bytes()
    return Asset(
        body=body,
        # mtime=0: the same bytes on every start, so an ETag holds across restarts.
        gzipped=gzip.compress(body, compresslevel=9, mtime=0),
        content_type=_TYPES[path.suffix],
        etag=f'"{hashlib.sha256(body).hexdigest()[:20]}"',
    )


def load_assets(folder: Path = UI_DIR) -> dict[str, Asset]:
    """Every file the page uses, by name (the folder is flat)."""
    return {p.name: _load(p) for p in sorted(folder.iterdir()) if p.suffix in _TYPES}


_ASSETS = load_assets()
_PAGE = _ASSETS["index.html"]


def _serve(request: web.Request, asset: Asset) -> web.Response:
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    accepts = request.headers.get("Accept-Encoding", "").lower()
    if "gzip" in accepts:
        headers["Content-Encoding"] = "gzip"
        body = asset.gzipped
    else:
        body = asset.body
    headers["Content-Type"] = asset.content_type
    return web.Response(body=body, headers=headers)


# Served, not documented: the page is not part of the API (as /docs).
_PAGE_OP = Operation("The dashboard", None, {200: None}, public=True, listed=False)


@routes.get("/ui")
@operation(_PAGE_OP)
async def page(request: web.Request, call: Call[None]) -> web.Response:
    return _serve(request, _PAGE)


@routes.get("/ui/jobs/{job_id}")
@operation(_PAGE_OP)
async def job_page(request: web.Request, call: Call[None]) -> web.Response:
    return _serve(request, _PAGE)


@routes.get("/ui/{view:" + "|".join(VIEWS) + "}")
@operation(_PAGE_OP)
async def view_page(request: web.Request, call: Call[None]) -> web.Response:
    return _serve(request, _PAGE)


@routes.get("/ui/assets/{asset}")
@operation(Operation("A file of the dashboard", None, {200: None}, public=True, listed=False))
async def asset(request: web.Request, call: Call[None]) -> web.Response:
    found = _ASSETS.get(request.match_info["asset"])
    if found is None or found is _PAGE:
        raise web.HTTPNotFound()
    return _serve(request, found)
