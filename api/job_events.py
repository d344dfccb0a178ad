"""Live job events for the API's streams: one Postgres LISTEN connection per API process,
fanned out to the requests watching each job.

Postgres NOTIFY, not Redis pub/sub, wakes the streams: it is sent by the same transaction
that writes the event (shared/events.py) and delivered only when it commits, from every
place that emits one (worker, reaper, API), so a stream is never told of an event it
cannot read yet, and no path can forget to announce one.
"""

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator

from aiohttp import web

from api.context import SETTINGS
from shared.db import listen
from shared.events import JOB_EVENTS_CHANNEL


class JobEventHub:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._watchers: dict[str, set[asyncio.Event]] = defaultdict(set)

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever `job_id` gets a new event (or the listener reconnected)."""
        wake = asyncio.Event()
        self._watchers[job_id].add(wake)
        try:
            yield wake
        finally:
            self._watchers[job_id].discard(wake)
            if not self._watchers[job_id]:
                del self._watchers[job_id]

    def _notify(self, job_id: str) -> None:
        for wake in self._watchers.get(job_id, set()):
            wake.set()

    def _wake_all(self) -> None:
        for watchers in self._watchers.values():
            for wake in watchers:
                wake.set()

    async def listen(self) -> None:
        """Hold the LISTEN connection until cancelled, reconnecting when it drops; on each
        (re)connection wake every stream, for what committed while nobody listened."""
        await listen(self._dsn, JOB_EVENTS_CHANNEL, self._notify, self._wake_all)


HUB = web.AppKey("job_event_hub", JobEventHub)


async def job_event_hub(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: run the hub for the application's lifetime."""
    app[HUB] = JobEventHub(app[SETTINGS].require_database_url)
    task = asyncio.create_task(app[HUB].listen())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
