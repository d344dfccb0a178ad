"""The port workers and dispatchers answer operators and orchestrators on
(`CREWQ_METRICS_PORT`): `GET /metrics` for Prometheus, `GET /health` for readiness and
container health checks, `GET /livez` for liveness. The API serves `/metrics` and `/livez`
here too (`API_PATHS`), and only here: what Prometheus reads (route names, counts) is for
operators, not for whoever can reach the public port. It answers health on its own port.

An aiohttp site on the process' own event loop rather than prometheus_client's
`start_http_server`: that one is a thread whose shutdown blocks, while this one starts and
stops with the `async with` that owns it, and a port already taken fails right there.
Workers and dispatchers keep their loops free (crews run in child processes), so these are
answered promptly; one that is not says the loop is stuck, which is what `/livez` is for.
"""

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from aiohttp import web

from schemas.health import Alive, ProcessHealth, ProcessRole
from shared.runtime.metrics import metrics_handler
from shared.runtime.version import VERSION

log = logging.getLogger(__name__)

PATHS = ("/metrics", "/health", "/livez")
API_PATHS = ("/metrics", "/livez")  # no Presence: the API's own port answers /health


class Presence:
    """Whether this process is ready for work and still seen by Postgres: its registration
    heartbeat (`processes.keep_registered`) marks each beat recorded. Ready means it has
    registered, and its last beat is younger than `dead_after_s`, the age past which
    `/health/debug` counts it dead."""

    def __init__(self, role: ProcessRole, dead_after_s: float) -> None:
        self.role = role
        self.dead_after_s = dead_after_s
        self.process_id: str | None = None
        self._last_beat: float | None = None  # time.monotonic()

    def beat(self, process_id: str) -> None:
        self.process_id = process_id
        self._last_beat = time.monotonic()

    def health(self) -> ProcessHealth:
        since = None if self._last_beat is None else time.monotonic() - self._last_beat
        status: Literal["healthy", "starting", "unhealthy"]
        if since is None:
            status = "starting"
        elif since <= self.dead_after_s:
            status = "healthy"
        else:
            status = "unhealthy"
        return ProcessHealth(
            status=status,
            role=self.role,
            id=self.process_id,
            version=VERSION,
            seconds_since_heartbeat=None if since is None else round(since, 3),
        )


def _app(presence: Presence | None) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        assert presence is not None
        report = presence.health()
        return web.json_response(
            report.model_dump(mode="json"), status=200 if report.status == "healthy" else 503
        )

    async def livez(request: web.Request) -> web.Response:
        return web.json_response(Alive(status="alive").model_dump(mode="json"))

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    if presence is not None:
        app.router.add_get("/health", health)
    app.router.add_get("/livez", livez)
    return app


@asynccontextmanager
async def ops_server(
    host: str, port: int | None, presence: Presence | None
) -> AsyncIterator[int | None]:
    """Serve `PATHS` (`API_PATHS` without a `presence`) on `host:port` while the block
    runs; yields the port bound (port 0 picks a free one), or None, serving nothing, when
    `port` is None."""
    if port is None:
        yield None
        return
    # No access log: a scrape or a probe every few seconds would drown everything else.
    runner = web.AppRunner(_app(presence), access_log=None, shutdown_timeout=1)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound: int = runner.addresses[0][1]
        for address in runner.addresses:
            shown = f"[{address[0]}]" if ":" in address[0] else address[0]
            log.info("metrics and health served on http://%s:%d", shown, address[1])
        yield bound
    finally:
        await runner.cleanup()
