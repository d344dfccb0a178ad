"""The tenant's log of failed requests: answers with status >= 400 to an authenticated
request are buffered here and written in batches by one supervised task, so that a burst
of refusals (a client hammering past its rate limit) costs the database one INSERT a
batch, not one per request. A full buffer drops new entries (and says so in the log):
the log serves support, it must never slow or block the API.

Refusals with 429 (a rate limit, too many pending jobs or streams) cost the client nothing
to repeat, so they are not kept one row each, or a flood would fill the table for its
seven days: the first of each tenant and code in a minute is kept, to say it happened,
and every one is counted in `crewq_http_requests_total{status="429"}`."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from http import HTTPStatus

import asyncpg
from aiohttp import web

from api.auth import PRINCIPAL
from api.context import DB, SUPERVISOR
from api.errors import Handler, request_id
from shared.runtime.transient import is_transient
from shared.store import request_failures
from shared.store.keys import Principal
from shared.store.request_failures import RequestFailure

log = logging.getLogger(__name__)

_BUFFER = 10_000
_BATCH = 500
_PATH_LENGTH = 500


class FailureLog:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[RequestFailure] = asyncio.Queue(_BUFFER)
        self._dropped = 0
        # Which (tenant, code) already had a 429 kept in `_minute` (minutes since the epoch).
        self._minute = 0
        self._throttled: set[tuple[str, str]] = set()

    def _repeated_refusal(self, failure: RequestFailure) -> bool:
        if failure.status != HTTPStatus.TOO_MANY_REQUESTS:
            return False
        minute = int(failure.at.timestamp() // 60)
        if minute != self._minute:
            self._minute, self._throttled = minute, set()
        seen = (failure.tenant_id, failure.code)
        if seen in self._throttled:
            return True
        self._throttled.add(seen)
        return False

    def note(self, failure: RequestFailure) -> None:
        if self._repeated_refusal(failure):
            return
        try:
            self._queue.put_nowait(failure)
        except asyncio.QueueFull:
            self._dropped += 1

    async def write(self, app: web.Application) -> None:
        """Write what is buffered, batch by batch, until cancelled."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if self._dropped:
                log.warning("request log: %d failures dropped, the buffer was full", self._dropped)
                self._dropped = 0
            try:
                await request_failures.insert_many(app[DB], batch)
            except Exception as exc:
                if is_transient(exc):
                    log.warning("request log: %d failures not written: %s", len(batch), exc)
                    await asyncio.sleep(1)
                elif isinstance(exc, asyncpg.PostgresError):
                    # A row Postgres refuses (its tenant deleted meanwhile) costs its batch,
                    # not the API.
                    log.exception("request log: %d failures refused", len(batch))
                else:
                    raise


FAILURES = web.AppKey("failure_log", FailureLog)


async def failure_log(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: the writer runs, supervised, for the app's lifetime."""
    app[FAILURES] = FailureLog()
    task = app[SUPERVISOR].start("request failure log", app[FAILURES].write(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@web.middleware
async def failure_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outside the error middleware: sees every answer in its final shape."""
    response = await handler(request)
    principal: Principal | None = request.get(PRINCIPAL)
    if response.status >= 400 and principal is not None:
        request.app[FAILURES].note(
            RequestFailure(
                tenant_id=principal.tenant_id,
                key_id=principal.key_id,
                at=datetime.now(UTC),
                method=request.method,
                # Storable text: the path of a refused request may hold NUL or bytes
                # that are not UTF-8.
                path=request.path.encode("utf-8", "replace")
                .decode()
                .replace("\x00", "?")[:_PATH_LENGTH],
                status=response.status,
                code=str(response.get("error_code", "HTTP_ERROR")),
                request_id=request_id(request),
            )
        )
    return response
