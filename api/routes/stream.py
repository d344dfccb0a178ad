"""`/v1/stream`: every event of the tenant's jobs, live, over a WebSocket; and the bound on
the event streams (this one and a job's server-sent events) a tenant holds open at once.

The socket authenticates as every request does, with `Authorization: Bearer <key>` or
`X-API-Key` on the upgrade request; or, since browsers cannot set headers on a WebSocket,
with the key as a subprotocol: `new WebSocket(url, ["crewq.v1", "crewq.bearer." + key])`
(the way Kubernetes takes a bearer token). The server answers choosing `crewq.v1`, never
the key's protocol, and the key is checked, scoped, counted and refused exactly as in a
header (api/auth.py `_protocol_key`). The dashboard's jobs list follows the stream this way.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from api.auth import STREAM_PROTOCOL
from api.context import DB, REDIS, SETTINGS
from api.errors import ApiError, Code, invalid
from api.notifications import HUB
from api.operations import Call, Operation, Param, operation, text_query
from api.stream_slots import REDIS_UNAVAILABLE, StreamSlot
from schemas.account import Scope
from schemas.events import EventType
from shared.runtime.db import is_connection_error
from shared.store import tenants
from shared.store.events import TENANT_EVENTS_CHANNEL, TenantFilter, TenantTail

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

# aiohttp pings the client this often and closes the socket when no pong comes back within
# half of it: a peer that vanished without closing frees its slot within 30 s, and the ping
# keeps idle proxies from closing a quiet socket.
HEARTBEAT_S = 20.0
# How often a quiet socket wakes to renew its slot (renewed when due, api/stream_slots.py).
_RENEW_CHECK_S = 5.0
# When a tenant over its bound may try again to open a stream.
_RETRY_AFTER_S = "30"
# The types a stream may ask for: every event of a job (`webhook.test` belongs to none).
_JOB_EVENT_TYPES = [t for t in EventType if t is not EventType.WEBHOOK_TEST]


@contextlib.asynccontextmanager
async def hold_stream_slot(
    request: web.Request, tenant_id: str
) -> AsyncIterator[StreamSlot | None]:
    """Hold one of the tenant's event stream slots (counted across API replicas in Redis)
    for the block; 429 TOO_MANY_STREAMS when it holds its bound already. Yields None when
    Redis cannot be reached: the stream is let through uncounted rather than refused."""
    app = request.app
    tenant = await tenants.get(app[DB], tenant_id)
    assert tenant is not None  # its key was just authenticated
    limit = tenant.max_event_streams or app[SETTINGS].tenant_max_event_streams
    slot = StreamSlot(app[REDIS], tenant_id)
    try:
        held: bool | None = await slot.acquire(limit)
    except REDIS_UNAVAILABLE as exc:
        log.warning("open streams not counted, redis unavailable: %s", exc)
        held = None
    if held is None:  # yielded here, not in the except: the stream's errors are its own
        yield None
        return
    if not held:
        raise ApiError(
            Code.TOO_MANY_STREAMS,
            f"this tenant already holds {limit} event streams open, as many as it may",
            {"limit": limit},
            headers={"Retry-After": _RETRY_AFTER_S},
        )
    try:
        yield slot
    finally:
        try:
            await slot.release()
        except REDIS_UNAVAILABLE as exc:
            log.warning("a stream slot of %s not released (it expires): %s", tenant_id, exc)


async def renew(slot: StreamSlot | None) -> None:
    """Keep a stream's slot held while it runs; a Redis outage only lets it expire."""
    if slot is None:
        return
    try:
        await slot.renew_if_due()
    except REDIS_UNAVAILABLE as exc:
        log.warning("stream slot not renewed: %s", exc)


def _types(request: web.Request, name: str) -> frozenset[EventType] | None:
    """`types=task.completed,job.completed` (or `types` given more than once); None: all."""
    names = [n.strip() for given in request.query.getall(name, []) for n in given.split(",")]
    types: set[EventType] = set()
    for each in filter(None, names):
        if each not in _JOB_EVENT_TYPES:
            raise invalid(
                name, f"{each!r} is not an event type; use: {', '.join(_JOB_EVENT_TYPES)}"
            )
        types.add(EventType(each))
    return frozenset(types) if types else None


TYPES = Param(
    "types",
    {"type": "array", "items": {"type": "string", "enum": list(_JOB_EVENT_TYPES)}},
    "Only these event types: `types=task.completed&types=job.completed`, or"
    " comma-separated in one: `types=task.completed,job.completed`.",
    _types,
)
CREW = text_query("crew", "Only events of this crew's jobs.")
AFTER = text_query(
    "after", "Resume after this event id (the last one received) instead of starting now."
)


@routes.get("/v1/stream")
@operation(
    Operation(
        "Follow every event of the tenant's jobs live (WebSocket)",
        Scope.JOBS_READ,
        {101: None},
        query=[TYPES, CREW, AFTER],  # refused with a 400 before any upgrade
        errors=[Code.UPGRADE_REQUIRED, Code.TOO_MANY_STREAMS],
        tags=["jobs"],
        description=(
            "Authenticate with `Authorization: Bearer <key>` or `X-API-Key` on the upgrade"
            " request or, where a client cannot set headers (a browser's `WebSocket`), by"
            " offering the subprotocols `crewq.v1, crewq.bearer.<key>`"
            ' (`new WebSocket(url, ["crewq.v1", "crewq.bearer." + key])`): the answer'
            " chooses `crewq.v1`. A key is read from a subprotocol on this upgrade only."
        ),
    )
)
async def stream_tenant_events(request: web.Request, call: Call[None]) -> web.StreamResponse:
    """A WebSocket that sends each event of the tenant's jobs as a text message (the JSON
    envelope a webhook carries) as it commits: from now on, or after the event `after`.
    Events of one job arrive in order. The server pings every 20 s and answers pings;
    messages from the client are ignored.

    Authenticate with the `Authorization` or `X-API-Key` header on the upgrade request or,
    where headers cannot be set (a browser's `WebSocket`), by offering the subprotocols
    `crewq.v1, crewq.bearer.<key>`: the server then chooses `crewq.v1`, never the key's
    protocol. A key is taken from a subprotocol only on this upgrade, never from a plain
    request. Counted against the tenant's bound on open event
    streams; ends with close code 1011 when Postgres cannot be reached (reconnect with
    `after`), 1001 when the API stops."""
    principal, after = call.principal, call[AFTER]
    where = TenantFilter(types=call[TYPES], crew=call[CREW])
    # `crewq.v1` is chosen when offered (beside a key it must be: api/auth.py); the key's own
    # protocol is not in the list, so it is never chosen and never echoed back.
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, protocols=(STREAM_PROTOCOL,))
    if not ws.can_prepare(request).ok:
        raise ApiError(
            Code.UPGRADE_REQUIRED,
            "GET /v1/stream is a WebSocket: connect with a WebSocket client",
            headers={"Upgrade": "websocket"},
        )
    db = request.app[DB]
    if after is None:
        tail = await TenantTail.from_now(db, principal.owner, where)
    else:
        resumed = await TenantTail.after_event(db, principal.owner, where, after)
        if resumed is None:
            raise invalid("after", f"no event {after!r} of this tenant")
        tail = resumed
    async with hold_stream_slot(request, principal.tenant_id) as slot:
        await ws.prepare(request)
        await _serve(ws, request.app, tail, slot)
    return ws


async def _serve(
    ws: web.WebSocketResponse, app: web.Application, tail: TenantTail, slot: StreamSlot | None
) -> None:
    """Send until the client leaves or sending fails. Reading runs beside sending: only a
    reader sees the client's close (and its pongs), so a closed socket ends the stream and
    frees its slot at once, even while a read of Postgres is under way."""
    reader = asyncio.create_task(_drain(ws))
    sender = asyncio.create_task(_send(ws, app, tail, slot))
    try:
        await asyncio.wait((reader, sender), return_when=asyncio.FIRST_COMPLETED)
        if sender.done() and (exc := sender.exception()) is not None:
            await _close_after(ws, tail.tenant_id, exc)
        elif sender.done() and app[HUB].stopping:
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"the API is stopping")
    finally:
        for task in (reader, sender):
            task.cancel()
        # Awaited, not left behind: neither outlives the request.
        await asyncio.gather(reader, sender, return_exceptions=True)


async def _close_after(ws: web.WebSocketResponse, tenant_id: str, exc: BaseException) -> None:
    """End a socket whose sending failed with 1011: the upgrade has been answered, so no
    error body can follow, and an exception left to aiohttp would only be logged."""
    if is_connection_error(exc):
        log.warning("event stream of %s ended: postgres unavailable (%s)", tenant_id, exc)
        message = b"postgres unavailable; reconnect with after=<last event id>"
    else:
        log.error("event stream of %s failed", tenant_id, exc_info=exc)
        message = b"internal error"
    try:
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=message)
    except Exception as closing:  # the client left meanwhile: nobody to tell
        log.debug("event stream of %s not closed cleanly: %s", tenant_id, closing)


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read until the socket closes. aiohttp answers pings and notes pongs as it reads."""
    while True:
        message = await ws.receive()
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return
        if message.type is WSMsgType.ERROR:
            log.debug("event stream socket failed: %s", ws.exception())
            return


async def _send(
    ws: web.WebSocketResponse, app: web.Application, tail: TenantTail, slot: StreamSlot | None
) -> None:
    """Send the tail's events as they commit, until the client has gone or the API stops."""
    db = app[DB]
    hub = app[HUB]
    try:
        with hub.watch(TENANT_EVENTS_CHANNEL, tail.tenant_id) as wake:
            while not hub.stopping:
                wake.clear()
                more = True
                while more:
                    found, more = await tail.read(db)
                    for event in found:
                        await ws.send_str(orjson.dumps(event.model_dump(mode="json")).decode())
                while not wake.is_set():
                    await renew(slot)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_RENEW_CHECK_S):
                            await wake.wait()
    except ConnectionResetError:
        log.debug("event stream of %s: the client went away", tail.tenant_id)
