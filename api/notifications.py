"""Postgres notifications for the API's waiting requests: one LISTEN connection per API
process, fanned out to the requests waiting on a key of a channel (a job's new events, a
tenant's new job events, a test delivery's first attempt).

Postgres NOTIFY, not Redis pub/sub, wakes them: it is sent by the same transaction that
writes the row (shared/store/events.py, shared/store/deliveries.py) and delivered only when it
commits,
from every process that writes one, so a request is never told of a row it cannot read
yet, and no path can forget to announce one.
"""

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from functools import partial

from aiohttp import web

from api.context import SETTINGS, SUPERVISOR
from shared.runtime.db import listen
from shared.store.deliveries import ATTEMPTS_CHANNEL
from shared.store.events import JOB_EVENTS_CHANNEL, TENANT_EVENTS_CHANNEL


class NotificationHub:
    def __init__(self, dsn: str, channels: list[str]) -> None:
        self._dsn = dsn
        self._channels = channels
        self._watchers: dict[tuple[str, str], set[asyncio.Event]] = defaultdict(set)
        # Set when the API begins to stop: a waiter that wakes and sees it ends its answer.
        self.stopping = False

    @contextlib.contextmanager
    def watch(self, channel: str, key: str) -> Iterator[asyncio.Event]:
        """An event set whenever `channel` notifies `key`, and whenever the listener
        reconnects (a notification sent meanwhile is lost: look again)."""
        wake = asyncio.Event()
        self._watchers[channel, key].add(wake)
        try:
            yield wake
        finally:
            self._watchers[channel, key].discard(wake)
            if not self._watchers[channel, key]:
                del self._watchers[channel, key]

    def _notify(self, channel: str, key: str) -> None:
        for wake in self._watchers.get((channel, key), set()):
            wake.set()

    def _wake_all(self) -> None:
        for watchers in self._watchers.values():
            for wake in watchers:
                wake.set()

    def stop(self) -> None:
        """Wake every waiter to find `stopping` set."""
        self.stopping = True
        self._wake_all()

    async def listen(self) -> None:
        """Hold the LISTEN connection until cancelled, reconnecting when it drops."""
        callbacks = {channel: partial(self._notify, channel) for channel in self._channels}
        await listen(self._dsn, callbacks, self._wake_all, role="api")


HUB = web.AppKey("notification_hub", NotificationHub)


async def notification_hub(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: run the hub, supervised, for the application's lifetime."""
    app[HUB] = NotificationHub(
        app[SETTINGS].direct_database_url,
        [JOB_EVENTS_CHANNEL, TENANT_EVENTS_CHANNEL, ATTEMPTS_CHANNEL],
    )
    task = app[SUPERVISOR].start("notification listener", app[HUB].listen())
    # At shutdown, before aiohttp waits for open answers and then drops their connections:
    # the WebSocket streams (api/routes/stream.py) close with 1001 now instead. (Registered
    # here, still before the application freezes, so the hub owns its whole lifetime.)
    app.on_shutdown.append(_stop_waiters)
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _stop_waiters(app: web.Application) -> None:
    app[HUB].stop()
