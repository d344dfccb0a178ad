"""The API's Prometheus side: a middleware counting and timing every request by method,
route template and final status (`shared/runtime/metrics.py` defines both). They are served on
`CREWQ_METRICS_PORT` (`shared/runtime/ops_server.py`, started by `api/app.py`), not on the public
port: a scrape shows every route's traffic and errors, which is for operators only."""

import time

from aiohttp import web

from api.auth import HIDDEN_PATHS
from api.errors import Handler
from shared.runtime.metrics import HTTP_DURATION, HTTP_REQUESTS

UNMATCHED = "unmatched"  # the route label of a path no route matches (404, 405)
OTHER_METHOD = "OTHER"
# Methods beyond these (WebDAV's; any token at all with aiohttp's pure-Python parser) share
# one label, so no client can add series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(request: web.Request) -> str:
    """The matched route's template (`/v1/jobs/{job_id}`), never the raw path. A hidden
    route counts as no route: /metrics must not name it to whoever may read them."""
    resource = request.match_info.route.resource
    if resource is None or request.path in HIDDEN_PATHS:
        return UNMATCHED
    return resource.canonical


def _record(request: web.Request, status: int, started: float, *, streamed: bool) -> None:
    method = request.method if request.method in _METHODS else OTHER_METHOD
    route = route_label(request)
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    # An event stream's "duration" is how long the client listened, not how fast we answered.
    if not streamed:
        HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Goes outside `error_middleware`, so it sees the answer every error became."""
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        # error_middleware answers every error itself; what escapes it (a redirect) is sent
        # by aiohttp with the exception's status.
        _record(request, exc.status, started, streamed=False)
        raise
    except Exception:
        # Past every middleware aiohttp answers 500. A cancellation (BaseException) is not
        # counted: the server is stopping, and nobody gets an answer.
        _record(request, 500, started, streamed=False)
        raise
    streamed = isinstance(response, web.WebSocketResponse) or (
        response.content_type == "text/event-stream"
    )
    _record(request, response.status, started, streamed=streamed)
    return response
