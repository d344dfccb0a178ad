"""The API's HTTP server: aiohttp's, with the limits a public port needs and aiohttp lacks.

aiohttp (3.14) closes a connection idle past its keep-alive timeout, but has no deadline
for a request head: a client sending one header byte every few seconds holds a connection
and its task for as long as the keep-alive timeout allows, and any number of clients may
do so at once. So each connection here:

- must complete a request head within `CREWQ_API_HEADER_TIMEOUT` of opening or of the first
  byte of that head (a body is not timed here: it is read by the handler, as it needs);
- is refused with 503, in the one error shape, when `CREWQ_API_MAX_CONNECTIONS` are open;
- when its request is not HTTP that aiohttp can parse (a bad header line, a line too long),
  gets a 400 in the one error shape and costs one INFO line in the log, not aiohttp's
  ERROR with a traceback: anyone can send those, and they are the sender's fault.
"""

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from api.responses import json_response
from schemas.errors import ApiErrorCode, ErrorBody, ErrorDetail

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    head_timeout: float  # seconds
    max_connections: int


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


def _error(code: ApiErrorCode, message: str, request_id: str) -> ErrorBody:
    return ErrorBody(error=ErrorDetail(code=code, message=message, request_id=request_id))


def _busy_answer() -> bytes:
    """A whole HTTP answer, written before any request is read: the connection is refused."""
    request_id = _request_id()
    body = orjson.dumps(
        _error(
            ApiErrorCode.SERVICE_UNAVAILABLE,
            "the API has too many open connections; retry shortly",
            request_id,
        ).model_dump(mode="json")
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        f"X-Request-Id: {request_id}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class _GuardedHandler(RequestHandler):
    """aiohttp's protocol for one connection, with a request-head deadline and the cap."""

    def __init__(self, manager: "_GuardedServer", **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = manager.limits
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        manager = self._manager
        if manager is not None and len(manager.connections) > self._limits.max_connections:
            log.warning("connection refused: %d open", self._limits.max_connections)
            if self.transport is not None:
                self.transport.write(_busy_answer())
            self.force_close()
            return
        self._arm()  # a connection that never completes a head is closed too

    def data_received(self, data: bytes) -> None:
        # Waiting for a request: these bytes begin (or continue) a head. While a request
        # is being handled, bytes are its body (or a pipelined request, which the
        # keep-alive timer covers once the answer is sent).
        waiting = self._waiter is not None and not self._waiter.done()
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:
            self._disarm()
        elif waiting and self._head_timer is None:
            self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self._loop.call_later(self._limits.head_timeout, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        # Debug only: a slow-header flood would otherwise be a log flood as well.
        log.debug("closing a connection: no request head within %s s", self._limits.head_timeout)
        self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        # aiohttp's messages span lines (the bad line, a caret under it): one line here.
        said = " ".join(str(exc.message).split())[:300]
        # Non-HTTP bytes (TLS to a plain port) as a first request are a scanner's noise.
        quiet = self._request_count == 1 and isinstance(exc, BadHttpMethod)
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "malformed request from %s: %s",
            request.remote,
            said,
        )
        if request.writer.output_size > 0:  # an answer was begun: nothing more can be said
            raise ConnectionError("answer already begun; closing")
        code = ApiErrorCode.PAYLOAD_TOO_LARGE if status == 413 else ApiErrorCode.INVALID_REQUEST
        request_id = _request_id()
        response = json_response(
            _error(code, f"the request is not valid HTTP: {said}", request_id),
            status=status,
            headers={"X-Request-Id": request_id},
        )
        response.force_close()
        return response


class _GuardedServer(web.Server):
    def __init__(self, handler: Any, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits

    def __call__(self) -> RequestHandler:
        return _GuardedHandler(self, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """`web.AppRunner` whose connections are `_GuardedHandler`s."""

    def __init__(self, app: web.Application, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _GuardedServer(
            made.request_handler,
            limits=self._limits,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )
