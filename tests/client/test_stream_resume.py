"""A job's live events across a connection cut mid-event: the client opens the stream again
with `Last-Event-ID` and hands the caller every event exactly once, in order."""

import asyncio
import contextlib
from dataclasses import dataclass, field

from crewq_client import AsyncClient, Client

from schemas.events import EventType
from tests.harness import Platform

# Cut the first stream this far into its third event: a half-received event must be dropped.
EVENTS_BEFORE_CUT = 2
BYTES_INTO_NEXT = 15


@dataclass
class CuttingProxy:
    """A TCP proxy on loopback to the API that cuts its first event stream once two whole
    events and part of a third have passed, and records each stream's Last-Event-ID."""

    upstream_port: int
    port: int = 0
    last_event_ids: list[str | None] = field(default_factory=list)
    streams: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for handler in self._handlers:  # connections a client keeps alive
                handler.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        head = await reader.readuntil(b"\r\n\r\n")  # a GET: the head is the whole request
        is_stream = b"text/event-stream" in head.lower()
        cut = False
        if is_stream:
            self.streams += 1
            cut = self.streams == 1
            self.last_event_ids.append(_header(head, b"last-event-id"))
        up_writer.write(head)
        upward = asyncio.create_task(_pump(reader, up_writer))
        try:
            await _down(up_reader, writer, cut)
        finally:
            upward.cancel()
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(ConnectionError):
                    await w.wait_closed()


def _header(head: bytes, name: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode()
    return None


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


async def _down(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cut: bool) -> None:
    """Answer bytes to the client; when `cut`, stop mid-way through the third event."""
    seen = b""
    sent = 0
    while data := await reader.read(65536):
        seen += data
        end = len(seen)
        if cut:
            body_at = seen.find(b"\r\n\r\n")
            at = body_at
            for _ in range(EVENTS_BEFORE_CUT):
                at = seen.find(b"\n\n", at + 1) if at >= 0 else -1
            if body_at >= 0 and at >= 0 and len(seen) >= at + 2 + BYTES_INTO_NEXT:
                end = at + 2 + BYTES_INTO_NEXT
        writer.write(seen[sent:end])
        await writer.drain()
        sent = end
        if end < len(seen):
            return  # the cut: the rest of the answer never reaches the client


async def test_events_resume_after_a_dropped_connection_each_once_in_order(
    stack: Platform,
) -> None:
    proxy = CuttingProxy(stack.port)
    await proxy.start()
    try:
        async with (
            AsyncClient(stack.base_url, stack.key) as direct,
            AsyncClient(f"http://127.0.0.1:{proxy.port}", stack.key) as through,
        ):
            job = await direct.jobs.submit("research", {"topic": "dropped connections"})
            live = [e async for e in through.jobs.events(job.id)]
            stored = [e async for e in direct.jobs.event_history(job.id)]
    finally:
        await proxy.stop()
    assert proxy.streams >= 2, "the stream was never cut"
    assert proxy.last_event_ids[0] is None
    # The second stream resumed after the last whole event the first one delivered.
    assert proxy.last_event_ids[1] == live[EVENTS_BEFORE_CUT - 1].id
    assert [e.id for e in live] == [e.id for e in stored]
    assert len({e.id for e in live}) == len(live)
    assert live[-1].type is EventType.JOB_COMPLETED


async def test_the_sync_iterator_resumes_too(stack: Platform) -> None:
    proxy = CuttingProxy(stack.port)
    await proxy.start()

    def follow(job_id: str) -> list[str]:
        with Client(f"http://127.0.0.1:{proxy.port}", stack.key) as through:
            return [e.id for e in through.jobs.events(job_id)]

    try:
        job = await stack.submit("research", {"topic": "sync resume"})
        live = await asyncio.to_thread(follow, job["id"])
    finally:
        await proxy.stop()
    async with AsyncClient(stack.base_url, stack.key) as direct:
        stored = [e.id async for e in direct.jobs.event_history(job["id"])]
    assert proxy.streams >= 2 and proxy.last_event_ids[1] == live[EVENTS_BEFORE_CUT - 1]
    assert live == stored
