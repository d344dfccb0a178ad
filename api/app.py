"""The aiohttp application: HTTP in, Postgres and Redis behind. No crew runs here."""

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from api.auth import auth_middleware
from api.context import CREWS, DB, REDIS, SETTINGS
from api.errors import error_middleware
from api.job_events import job_event_hub
from api.ratelimit import rate_limit_middleware
from api.routes import account, crews, jobs, webhooks
from api.tracing import tracing_middleware
from shared import queue
from shared.crews import CrewRegistry
from shared.db import create_pool
from shared.settings import Settings

log = logging.getLogger(__name__)


async def _connections(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[DB] = await create_pool(settings.require_database_url, max_size=20)
    app[REDIS] = await queue.connect(settings.require_redis_url)
    yield
    await app[REDIS].close(close_connection_pool=True)
    await app[DB].close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[tracing_middleware, error_middleware, auth_middleware, rate_limit_middleware],
        client_max_size=settings.api_max_body_bytes,
    )
    app[SETTINGS] = settings
    registry = CrewRegistry.load(settings.crew_dirs)
    for name, error in registry.errors.items():
        log.error("crew %s not loaded: %s", name, error)
    app[CREWS] = registry
    app.cleanup_ctx.append(_connections)
    app.cleanup_ctx.append(job_event_hub)
    for module in (jobs, crews, account, webhooks):
        app.add_routes(module.routes)
    return app


async def serve(settings: Settings) -> None:
    """Run the API until cancelled."""
    runner = web.AppRunner(
        create_app(settings),
        access_log=logging.getLogger("crewq.access"),
        # Open event streams end when the API stops; do not wait a minute for them.
        shutdown_timeout=5,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.api_host, settings.api_port)
    await site.start()
    log.info("API listening on http://%s:%d", settings.api_host, settings.api_port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
