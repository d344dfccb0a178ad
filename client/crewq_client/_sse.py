"""Following a job's events live over server-sent events, across dropped connections.

The server sends each event as `id:`, `event:` and `data:` lines and ends the stream once the
job has ended. A connection that breaks (or ends before the job has) is opened again with
`Last-Event-ID`, the last event handed to the caller: the server resumes right after it, so
no event is repeated or lost. A half-received event is dropped with its connection and comes
again whole."""

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx

from crewq_client import _jobs
from crewq_client._transport import RetryPolicy, send, send_async
from crewq_client.errors import ConnectionFailed, error_from, retry_after_of
from schemas.events import Event, EventType
from schemas.jobs import TERMINAL_STATUSES

# The events after which a job has ended (until someone retries it).
ENDING_EVENTS = frozenset(
    {EventType.JOB_COMPLETED, EventType.JOB_FAILED, EventType.JOB_CANCELLED, EventType.JOB_EXPIRED}
)
# The server writes a comment every 15 s on a quiet stream; this much silence means the
# connection is dead even if no error says so.
READ_TIMEOUT_S = 45.0


@dataclass
class Message:
    """One server-sent event, as its fields arrived."""

    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)


class Decoder:
    """The text/event-stream format, fed one line (without its line break) at a time."""

    def __init__(self) -> None:
        self._message = Message()

    def feed(self, line: str) -> Message | None:
        """The message a blank line completes; None otherwise."""
        if not line:
            done, self._message = self._message, Message()
            return done if done.data else None
        if line.startswith(":"):  # a comment: the keep-alive
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._message.data.append(value)
        elif name == "id" and "\0" not in value:
            self._message.id = value
        elif name == "event":
            self._message.event = value
        return None


class _Follow:
    """What following one job has seen, across its connections."""

    def __init__(self, job_id: str, after: str | None, policy: RetryPolicy) -> None:
        self.job_id = job_id
        self.last = after
        self.policy = policy
        self.ended = False
        self.failures = 0

    def headers(self) -> dict[str, str]:
        found = {"Accept": "text/event-stream"}
        if self.last is not None:
            found["Last-Event-ID"] = self.last
        return found

    def take(self, message: Message) -> Event:
        event = Event.model_validate_json("\n".join(message.data))
        self.last = event.id
        self.failures = 0  # progress: the next drop starts its backoff afresh
        if event.type in ENDING_EVENTS:
            self.ended = True
        return event

    def refused(self, response: httpx.Response) -> float:
        """How long to wait after the stream was refused (429 too many streams, 503), or
        raise its error."""
        if response.status_code not in (429, 503):
            raise error_from(response)
        return self.pause(None, retry_after_of(response), response)

    def pause(
        self,
        error: Exception | None,
        retry_after: float | None = None,
        response: httpx.Response | None = None,
    ) -> float:
        """How long to wait before opening the stream again; raises when retries ran out."""
        self.failures += 1
        if self.failures >= self.policy.attempts:
            if response is not None:
                raise error_from(response)
            raise ConnectionFailed(
                f"the event stream of job {self.job_id} dropped {self.failures} times in a row"
                + (f": {error!r}" if error else "")
            ) from error
        if retry_after is not None:
            return min(retry_after, self.policy.max_retry_after)
        return self.policy.backoff_for(self.failures)


def _path(job_id: str) -> str:
    return f"/v1/jobs/{job_id}/events"


def follow(
    http: httpx.Client, job_id: str, after: str | None, policy: RetryPolicy
) -> Iterator[Event]:
    state = _Follow(job_id, after, policy)
    timeout = httpx.Timeout(http.timeout.connect, read=READ_TIMEOUT_S)
    while True:
        error: Exception | None = None
        try:
            with http.stream(
                "GET", _path(job_id), headers=state.headers(), timeout=timeout
            ) as response:
                if response.status_code != 200:
                    response.read()
                    time.sleep(state.refused(response))
                    continue
                decoder = Decoder()
                for line in response.iter_lines():
                    if (message := decoder.feed(line)) is not None:
                        yield state.take(message)
        except httpx.TransportError as exc:
            error = exc
        if state.ended:
            return
        if error is None:
            # The server ended the stream without an ending event we saw: the job had
            # ended before we asked (or the server stopped early). Ask the job.
            job = send(http, _jobs.get(job_id), policy)
            if job.status in TERMINAL_STATUSES:
                return
        time.sleep(state.pause(error))


async def follow_async(
    http: httpx.AsyncClient, job_id: str, after: str | None, policy: RetryPolicy
) -> AsyncIterator[Event]:
    state = _Follow(job_id, after, policy)
    timeout = httpx.Timeout(http.timeout.connect, read=READ_TIMEOUT_S)
    while True:
        error: Exception | None = None
        try:
            async with http.stream(
                "GET", _path(job_id), headers=state.headers(), timeout=timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    await asyncio.sleep(state.refused(response))
                    continue
                decoder = Decoder()
                async for line in response.aiter_lines():
                    if (message := decoder.feed(line)) is not None:
                        yield state.take(message)
        except httpx.TransportError as exc:
            error = exc
        if state.ended:
            return
        if error is None:
            job = await send_async(http, _jobs.get(job_id), policy)
            if job.status in TERMINAL_STATUSES:
                return
        await asyncio.sleep(state.pause(error))
