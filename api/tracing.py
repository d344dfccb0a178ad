"""A span for every request, continuing the caller's W3C `traceparent` when it sends one, and
the request's id on every line logged while it is handled."""

from aiohttp import web
from aiohttp.web_log import AccessLogger

from api.auth import PRINCIPAL
from api.errors import Handler, ensure_request_id
from shared.runtime.logs import log_context
from shared.runtime.tracing import span_from
from shared.store.keys import Principal


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource
    name = f"{request.method} {route.canonical if route else request.path}"
    with (
        log_context(request_id=ensure_request_id(request)),
        span_from(
            request.headers.get("traceparent"), name, **{"http.method": request.method}
        ) as span,
    ):
        response = await handler(request)
        span.set_attribute("http.status_code", response.status)
        return response


class RequestAccessLogger(AccessLogger):
    """aiohttp's access log, its lines carrying the request's ids: aiohttp writes them after
    the middlewares, and so the request's log context, have finished."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        principal: Principal | None = request.get(PRINCIPAL)
        with log_context(
            request_id=request.get("request_id"),
            tenant_id=principal.tenant_id if principal is not None else None,
        ):
            super().log(request, response, time)
