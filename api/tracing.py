"""A span for every request, continuing the caller's W3C `traceparent` when it sends one."""

from aiohttp import web

from api.errors import Handler
from shared.tracing import span_from


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource
    name = f"{request.method} {route.canonical if route else request.path}"
    with span_from(
        request.headers.get("traceparent"), name, **{"http.method": request.method}
    ) as span:
        response = await handler(request)
        span.set_attribute("http.status_code", response.status)
        return response
