"""Reading events back over HTTP: a job's events as a JSON page or as server-sent events
that resume after `Last-Event-ID`, and every event of a tenant's jobs over a WebSocket."""

import asyncio
import base64
import os
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from shared.store import tenants
from shared.store.events import TENANT_EVENTS_CHANNEL
from tests.harness import Platform

SSE = {"Accept": "text/event-stream"}
Event = dict[str, Any]


def _job_of(event: Event) -> str:
    """The job an event is about: job.* carry the job's state, the others its id."""
    data: dict[str, Any] = event["data"]
    return str(data["id"] if event["type"].startswith("job.") else data["job_id"])


async def _listed(stack: Platform, job_id: str, key: str | None = None) -> list[Event]:
    """Every event of the job, through the JSON pages."""
    found: list[Event] = []
    after = ""
    while True:
        status, page, _ = await stack.request(
            "GET", f"/v1/jobs/{job_id}/events?limit=100{after}", key=key
        )
        assert status == 200, page
        found += page["data"]
        if not page["has_more"]:
            return found
        after = f"&after={page['next_cursor']}"


async def test_a_finished_jobs_events_are_paged_in_order(stack: Platform) -> None:
    job = await stack.submit("research", {"topic": "pages"})
    await stack.wait_for_status(job["id"], {"completed"})
    path = f"/v1/jobs/{job['id']}/events"
    status, page, headers = await stack.request("GET", f"{path}?limit=100")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert page["object"] == "list" and page["has_more"] is False
    events = page["data"]
    types = [e["type"] for e in events]
    assert types[0] == "job.started" and types[-1] == "job.completed"
    assert types.count("task.completed") == 2  # research has two tasks
    assert all(_job_of(e) == job["id"] for e in events)
    assert [e["created_at"] for e in events] == sorted(e["created_at"] for e in events)
    assert len({e["id"] for e in events}) == len(events)
    _, explicit, _ = await stack.request(
        "GET", f"{path}?limit=100", headers={"Accept": "application/json"}
    )
    assert explicit["data"] == events

    walked: list[Event] = []
    after = ""
    while True:
        status, page, _ = await stack.request("GET", f"{path}?limit=2{after}")
        assert status == 200 and len(page["data"]) <= 2
        walked += page["data"]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        assert page["next_cursor"] == page["data"][-1]["id"]
        after = f"&after={page['next_cursor']}"
    assert walked == events

    _, rest, _ = await stack.request("GET", f"{path}?after={events[1]['id']}")
    assert rest["data"] == events[2:22]
    _, none, _ = await stack.request("GET", f"{path}?after={events[-1]['id']}")
    assert none["data"] == [] and none["has_more"] is False
    for query, field in (("after=evt_nope", "after"), ("limit=0", "limit"), ("limit=101", "limit")):
        status, body, _ = await stack.request("GET", f"{path}?{query}")
        assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR", body
        assert field in body["error"]["details"]


async def test_an_sse_client_resumes_mid_job_and_sees_every_event_once_in_order(
    stack: Platform,
) -> None:
    assert stack.http is not None
    job = await stack.submit("research", {"topic": "resuming [[sleep:2]]"})
    path = f"/v1/jobs/{job['id']}/events"
    deadline = time.monotonic() + 60
    while not await _listed(stack, job["id"]):  # mid-job: it has started
        assert time.monotonic() < deadline, "the job never started"
        await asyncio.sleep(0.1)

    async with stack.http.get(path, headers={**stack.headers(), **SSE}) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        first = await asyncio.wait_for(Platform.read_sse(resp, count=2), timeout=30)
    assert (await stack.job(job["id"]))["status"] == "running"  # left, and back, mid-job
    resume = {**stack.headers(), **SSE, "Last-Event-ID": first[-1]["id"]}
    async with stack.http.get(path, headers=resume) as resp:
        assert resp.status == 200
        rest = await asyncio.wait_for(Platform.read_sse(resp), timeout=60)  # to the end

    listed = await _listed(stack, job["id"])
    streamed = first + rest
    assert [e["id"] for e in streamed] == [e["id"] for e in listed]  # each once, in order
    assert [e["event"] for e in streamed] == [e["type"] for e in listed]
    assert [orjson.loads(e["data"]) for e in streamed] == listed
    assert rest[-1]["event"] == "job.completed"  # and the stream ended after it
    assert (await stack.job(job["id"]))["status"] == "completed"


class Socket:
    """A WebSocket client that answers the server's pings itself, to count them."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pings = 0
        self.pongs: list[bytes] = []

    async def next_event(self, timeout: float = 60) -> Event:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.ws.receive()
                if message.type is WSMsgType.PING:
                    self.pings += 1
                    await self.ws.pong(message.data)
                elif message.type is WSMsgType.PONG:
                    self.pongs.append(message.data)
                elif message.type is WSMsgType.TEXT:
                    event: Event = orjson.loads(message.data)
                    return event
                else:
                    raise AssertionError(f"the socket ended: {message}")

    async def until(self, done: Callable[[Event], bool], timeout: float = 60) -> list[Event]:
        events: list[Event] = []
        async with asyncio.timeout(timeout):
            while not events or not done(events[-1]):
                events.append(await self.next_event())
        return events


def _ended(job_id: str) -> Callable[[Event], bool]:
    return lambda e: e["type"] == "job.completed" and _job_of(e) == job_id


async def _connect(
    stack: Platform, query: str = "", key: str | None = None, **options: Any
) -> aiohttp.ClientWebSocketResponse:
    assert stack.http is not None
    ws: aiohttp.ClientWebSocketResponse = await stack.http.ws_connect(
        f"/v1/stream{query}", headers=stack.headers(key), **options
    )
    return ws


async def test_the_tenant_stream_filters_follows_live_and_stays_open(stack: Platform) -> None:
    key, _, _ = await stack.new_tenant("ws")
    everything = Socket(await _connect(stack, key=key, autoping=False))
    connected_at = time.monotonic()
    # The client pings every 2 s and gives up after 1 s without a pong.
    filtered = await _connect(
        stack, "?types=task.completed,job.completed&crew=research", key=key, heartbeat=2
    )
    try:
        echo = await stack.submit("echo", {"message": "live"}, key=key)
        await stack.wait_for_status(echo["id"], {"completed"}, key=key)
        research = await stack.submit("research", {"topic": "filters"}, key=key)
        seen = await everything.until(_ended(research["id"]))
        picked = await Socket(filtered).until(_ended(research["id"]))

        echo_events = await _listed(stack, echo["id"], key)
        research_events = await _listed(stack, research["id"], key)
        assert [e for e in seen if _job_of(e) == echo["id"]] == echo_events
        assert [e for e in seen if _job_of(e) == research["id"]] == research_events
        assert len(seen) == len(echo_events) + len(research_events)
        # Only research's task.completed and job.completed: none of echo's, though they
        # committed first.
        wanted = {"task.completed", "job.completed"}
        assert picked == [e for e in research_events if e["type"] in wanted]
        assert [e["type"] for e in picked] == ["task.completed", "task.completed", "job.completed"]

        # Ping/pong: the client's ping is answered; the server pings within its 20 s
        # heartbeat and the socket stays open across it.
        await everything.ws.ping(b"anyone?")
        while everything.pings == 0 or not everything.pongs:
            assert time.monotonic() - connected_at < 30, "no ping from the server"
            with pytest.raises(TimeoutError):
                await everything.next_event(timeout=1)
        assert everything.pongs == [b"anyone?"]
        later = await stack.submit("echo", {"message": "after the ping"}, key=key)
        assert await everything.until(_ended(later["id"])) == await _listed(stack, later["id"], key)
        assert not filtered.closed  # the server answered every ping of its client

        # Resuming after an event sends what followed it.
        resumed = Socket(await _connect(stack, f"?after={echo_events[0]['id']}", key=key))
        try:
            assert await resumed.until(_ended(echo["id"])) == echo_events[1:]
        finally:
            await resumed.ws.close()
    finally:
        await everything.ws.close()
        await filtered.close()


async def test_the_tenant_stream_refuses_before_it_upgrades(stack: Platform) -> None:
    status, body, _ = await stack.request("GET", "/v1/stream?types=job.completed,job.exploded")
    assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR"
    assert list(body["error"]["details"]) == ["types"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await _connect(stack, "?types=job.exploded")
    assert refused.value.status == 400
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await _connect(stack, "?after=evt_nope")
    assert refused.value.status == 400

    writer, _, _ = await stack.new_tenant("ws-writer", ["jobs:write"])
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await _connect(stack, key=writer)
    assert refused.value.status == 403
    status, body, _ = await stack.request("GET", "/v1/stream", key=writer)
    assert status == 403 and body["error"]["code"] == "INSUFFICIENT_SCOPE"
    assert body["error"]["details"] == {"required_scope": "jobs:read"}

    status, body, headers = await stack.request("GET", "/v1/stream")  # no Upgrade
    assert status == 426 and body["error"]["code"] == "UPGRADE_REQUIRED"
    assert headers["Upgrade"] == "websocket"


async def test_sockets_and_sse_share_the_stream_bound_and_a_close_frees_it(
    stack: Platform,
) -> None:
    key, tenant_id, _ = await stack.new_tenant("ws-bound")
    conn = await stack.db()
    try:
        name = await conn.fetchval("SELECT name FROM tenants WHERE id = $1", tenant_id)
        await tenants.update(conn, name, tenants.Changes(numbers=(("max_event_streams", 1),)))
    finally:
        await conn.close()
    job = await stack.submit("echo", {"message": "bounded"}, key=key)

    held = await _connect(stack, key=key)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await _connect(stack, key=key)
    assert refused.value.status == 429
    status, body, headers = await stack.request(
        "GET", f"/v1/jobs/{job['id']}/events", key=key, headers=SSE
    )
    assert status == 429 and body["error"]["code"] == "TOO_MANY_STREAMS"
    assert headers["Retry-After"]
    # A JSON read is no stream: it is not counted.
    status, _, _ = await stack.request("GET", f"/v1/jobs/{job['id']}/events", key=key)
    assert status == 200

    await held.close()
    closed_at = time.monotonic()
    while True:
        try:
            again = await _connect(stack, key=key)
            break
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 429
            assert time.monotonic() - closed_at < 2, "the closed socket kept its slot"
            await asyncio.sleep(0.05)
    await again.close()


async def test_a_socket_ends_with_1011_when_postgres_is_gone_and_1001_on_stop(
    own_stack: Platform,
) -> None:
    role, url = await own_stack.login_role()
    api = await own_stack.start_api(CREWQ_DATABASE_URL=url)
    other, _, _ = await own_stack.new_tenant("bystander")
    broken = await _connect(own_stack)
    stopped = await _connect(own_stack, key=other)
    conn = await own_stack.db()
    try:
        # The API's pooled connections drop and cannot come back (its LISTEN connection
        # is all its role may hold); then a notification makes the socket read.
        await conn.execute(f"ALTER ROLE {role} CONNECTION LIMIT 1")
        dropped = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE usename = $1 AND application_name NOT LIKE '%-listen'",
            role,
        )
        assert dropped > 0
        await conn.execute("SELECT pg_notify($1, $2)", TENANT_EVENTS_CHANNEL, own_stack.tenant_id)
    finally:
        await conn.close()
    message = await asyncio.wait_for(broken.receive(), timeout=15)
    assert message.type is WSMsgType.CLOSE, message
    assert message.data == aiohttp.WSCloseCode.INTERNAL_ERROR  # 1011
    assert "postgres unavailable" in str(message.extra)
    assert not stopped.closed

    assert api.popen.poll() is None
    await api.stop()
    message = await asyncio.wait_for(stopped.receive(), timeout=15)
    assert message.type is WSMsgType.CLOSE and message.data == aiohttp.WSCloseCode.GOING_AWAY
    log = api.log()
    assert "event stream of" in log and "postgres unavailable" in log
    for leak in ("Error handling request", "Task was destroyed", "never retrieved", "unhandled"):
        assert leak not in log, log[-4000:]


def _upgrade(*protocols: str) -> dict[str, str]:
    """The headers of a WebSocket opening handshake offering `protocols`, for a request made
    by hand: its refusal's JSON body can be read, which a WebSocket client does not show."""
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Protocol": ", ".join(protocols),
    }


async def _unkeyed(
    stack: Platform, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """A request with no `Authorization` or `X-API-Key`: its status and JSON body."""
    assert stack.http is not None
    async with stack.http.get(path, headers=headers) as resp:
        body: dict[str, Any] = await resp.json()
        return resp.status, body


async def test_a_browser_socket_authenticates_with_its_key_as_a_subprotocol(
    stack: Platform,
) -> None:
    assert stack.http is not None
    key, _, _ = await stack.new_tenant("ws-protocol")
    offered = ("crewq.v1", f"crewq.bearer.{key}")
    # No header at all: what `new WebSocket(url, offered)` sends.
    ws = await stack.http.ws_connect("/v1/stream?crew=echo", protocols=offered)
    try:
        assert ws.protocol == "crewq.v1"  # chosen; the key's protocol never echoed back
        job = await stack.submit("echo", {"message": "by subprotocol"}, key=key)
        seen = await Socket(ws).until(_ended(job["id"]))
        assert seen == await _listed(stack, job["id"], key)
    finally:
        await ws.close()

    # Refused as the same key in a header is: status and code.
    wrong = "crq_live_" + "x" * 43
    for presented, refused in (
        (wrong, "INVALID_API_KEY"),
        ((await stack.new_tenant("ws-writer", ["jobs:write"]))[0], "INSUFFICIENT_SCOPE"),
    ):
        by_header = await _unkeyed(
            stack, "/v1/stream", {**_upgrade(), "Authorization": f"Bearer {presented}"}
        )
        by_protocol = await _unkeyed(
            stack, "/v1/stream", _upgrade("crewq.v1", f"crewq.bearer.{presented}")
        )
        assert by_protocol[0] == by_header[0] and by_protocol[0] in (401, 403)
        assert by_protocol[1]["error"]["code"] == by_header[1]["error"]["code"] == refused
        with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
            await stack.http.ws_connect(
                "/v1/stream", protocols=("crewq.v1", f"crewq.bearer.{presented}")
            )
        assert failed.value.status == by_header[0]

    # Not a key anywhere else: a plain GET carrying the header, an upgrade that does not
    # offer crewq.v1 beside it, another route's upgrade, two keys at once.
    good = f"crewq.bearer.{key}"
    for path, headers in (
        ("/v1/stream", {"Sec-WebSocket-Protocol": f"crewq.v1, {good}"}),
        ("/v1/stream", _upgrade(good)),
        ("/v1/stream", _upgrade("crewq.v1", good, f"crewq.bearer.{stack.key}")),
        ("/v1/jobs", _upgrade("crewq.v1", good)),
        ("/v1/jobs", {"Sec-WebSocket-Protocol": f"crewq.v1, {good}"}),
    ):
        status, body = await _unkeyed(stack, path, headers)
        assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED"), (path, headers)

    # The key offered is never written to the API's log (aiohttp logs an offer it cannot
    # match; the access log holds no request header).
    [api] = [p for p in stack.processes if p.role == "api"]
    assert key.split("_", 2)[2] not in api.log()
