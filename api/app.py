"""The aiohttp application: HTTP in, Postgres and Redis behind. No crew runs here."""

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from api.auth import auth_middleware
from api.context import BOX, CREWS, DB, REDIS, SETTINGS, SUPERVISOR, URLS
from api.errors import error_middleware
from api.failure_log import failure_log, failure_log_middleware
from api.headers import add_headers, cors_preflight_middleware
from api.metrics import metrics_middleware
from api.notifications import notification_hub
from api.ratelimit import rate_limit_middleware
from api.routes import (
    account,
    amp,
    bulk,
    crews,
    docs,
    health,
    jobs,
    schedules,
    stream,
    ui,
    webhooks,
)
from api.server import GuardedRunner, Limits
from api.tracing import RequestAccessLogger, tracing_middleware
from shared.domain.crews import CrewRegistry
from shared.runtime import metrics, queue
from shared.runtime.db import pool_for
from shared.runtime.role import Life
from shared.runtime.secret_box import SecretBox
from shared.runtime.settings import Settings
from shared.runtime.supervisor import Supervisor
from shared.webhooks.urls import UrlPolicy

log = logging.getLogger(__name__)


async def _connections(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[DB] = await pool_for(settings, "api", default_size=20)
    app[REDIS] = await queue.connect(settings.require_redis_url)
    app[URLS] = UrlPolicy.from_settings(settings)
    yield
    app[URLS].resolver.cancel()
    await app[REDIS].close(close_connection_pool=True)
    await app[DB].close()


def create_app(settings: Settings, supervisor: Supervisor) -> web.Application:
    app = web.Application(
        middlewares=[
            tracing_middleware,
            metrics_middleware,
            failure_log_middleware,
            error_middleware,
            cors_preflight_middleware,
            auth_middleware,
            rate_limit_middleware,
        ],
        client_max_size=settings.api_max_body_bytes,
    )
    app[SETTINGS] = settings
    app[SUPERVISOR] = supervisor
    app[BOX] = SecretBox.from_setting(settings.secret_key)
    app.on_response_prepare.append(add_headers)
    registry = CrewRegistry.load(settings.crew_dirs)
    for name, error in registry.errors.items():
        log.error("crew %s not loaded: %s", name, error)
    app[CREWS] = registry
    app.cleanup_ctx.append(_connections)
    app.cleanup_ctx.append(notification_hub)
    app.cleanup_ctx.append(failure_log)
    for module in (bulk, jobs, schedules, stream, crews, account, webhooks, amp, health, docs, ui):
        app.add_routes(module.routes)
    app.on_startup.append(docs.build_document)
    return app


class ApiService:
    """The API's part of its life (shared/runtime/role.py): its site on the public port. The metrics
    port is the one every role has; here it serves `/metrics` and `/livez` only."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runner: GuardedRunner | None = None

    async def start_up(self, life: Life) -> None:
        settings = self.settings
        self.runner = GuardedRunner(
            create_app(settings, life.supervisor),
            limits=Limits(settings.api_header_timeout, settings.api_max_connections),
            access_log=logging.getLogger("crewq.access"),
            access_log_class=RequestAccessLogger,
            # Open event streams end when the API stops; do not wait a minute for them.
            shutdown_timeout=5,
            # aiohttp's default (3,630 s) lets idle connections pile up for an hour.
            keepalive_timeout=settings.api_keepalive_timeout,
        )
        await self.runner.setup()
        try:
            site = web.TCPSite(self.runner, settings.api_host, settings.api_port)
            await site.start()
        except BaseException:
            # The port is taken, say: close the connections and tasks setup opened.
            await self.runner.cleanup()
            raise
        log.info("API listening on http://%s:%d", settings.api_host, settings.api_port)

    async def wind_down(self, failed: bool) -> None:
        # Stops the site and runs the app's cleanup (connections, listener, request log).
        assert self.runner is not None
        await self.runner.cleanup()

    async def close(self) -> None:
        pass  # `wind_down` has closed everything


async def serve(settings: Settings) -> int:
    """Run the API until SIGTERM/SIGINT (exit 0) or until a supervised task ends (exit 1)."""
    return await Life(metrics.Role.API, settings).serve(ApiService(settings))
