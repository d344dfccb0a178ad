"""How the deployment is: `/livez` (the process answers: for liveness probes), `/health`
(a database ping, for readiness probes and load balancers), `/healthz` (the API and both
stores) and `/health/debug` (every component, for an operator:
`shared/domain/diagnostics.py`)."""

import logging
from datetime import UTC, datetime

from aiohttp import web

from api.auth import PRINCIPAL
from api.context import CREWS, DB, REDIS, SETTINGS
from api.errors import ApiError, Code
from api.headers import secret_matches
from api.operations import Call, Operation, operation
from api.responses import json_response
from schemas.account import Scope
from schemas.health import Alive, DebugReport, Health, Liveness, Verdict
from shared.domain import diagnostics
from shared.runtime.db import ping
from shared.runtime.version import VERSION
from shared.store.keys import Principal

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

DEBUG_TOKEN_HEADER = "X-Debug-Token"


@routes.get("/livez")
@operation(
    Operation(
        "Does the API process answer (no dependency is checked; for liveness probes)",
        None,
        {200: Alive},
        public=True,
        tags=["operations"],
    )
)
async def alive(request: web.Request, call: Call[None]) -> web.Response:
    # Deliberately checks nothing else: a liveness probe that failed with Postgres would
    # restart every API replica during a database outage, which cures nothing.
    return json_response(Alive(status="alive"))


@routes.get("/health")
@operation(
    Operation(
        "Is the API up and its database answering (one ping; for probes)",
        None,
        {200: Liveness},
        errors=[Code.UNHEALTHY],
        public=True,
        tags=["operations"],
    )
)
async def liveness(request: web.Request, call: Call[None]) -> web.Response:
    try:
        await ping(request.app[DB])
    except Exception as exc:
        # Unauthenticated: say what is down, keep the why (hosts, ports) in the log.
        log.warning("health: postgres: %s", exc)
        raise ApiError(
            Code.UNHEALTHY,
            "the database does not answer",
            {"database": "unavailable"},
            {"Retry-After": "5"},
        ) from None
    return json_response(Liveness(status="healthy", version=VERSION, timestamp=datetime.now(UTC)))


@routes.get("/healthz")
@operation(
    Operation(
        "Is the API up, and can it reach Postgres and Redis",
        None,
        {200: Health},
        errors=[Code.UNHEALTHY],
        public=True,
        tags=["operations"],
    )
)
async def health(request: web.Request, call: Call[None]) -> web.Response:
    checks = {}
    try:
        await ping(request.app[DB])
        checks["postgres"] = "ok"
    except Exception as exc:
        log.warning("health: postgres: %s", exc)
        checks["postgres"] = "unavailable"
    try:
        await request.app[REDIS].ping()
        checks["redis"] = "ok"
    except Exception as exc:
        log.warning("health: redis: %s", exc)
        checks["redis"] = "unavailable"
    if any(v != "ok" for v in checks.values()):
        raise ApiError(Code.UNHEALTHY, "a dependency is unavailable", checks, {"Retry-After": "5"})
    return json_response(Health(status="ok", checks=checks))


def _admitted(request: web.Request) -> bool:
    """The debug token (compared in constant time, never logged), or an admin key of an
    operator tenant (`CREWQ_OPERATOR_TENANTS`): the report shows the deployment, every
    tenant's, so a tenant's own admin does not see it, nor a test key (it sees no live
    data)."""
    settings = request.app[SETTINGS]
    given = request.headers.get(DEBUG_TOKEN_HEADER, "")
    if settings.debug_token and given:
        return secret_matches(given, settings.debug_token)
    principal: Principal | None = request.get(PRINCIPAL)
    return (
        principal is not None
        and principal.livemode
        and principal.may(Scope.ADMIN)
        and principal.tenant_name in settings.operator_tenants
    )


@routes.get("/health/debug")
@operation(
    Operation(
        "Every component of the deployment, checked",
        None,
        {200: DebugReport},
        # Not in the OpenAPI document: its existence is not advertised
        # (docs/operations/observability.md).
        listed=False,
    )
)
async def debug(request: web.Request, call: Call[None]) -> web.Response:
    """Every component checked in parallel (3 s each, no writes). Anyone but the holder of
    the debug token or an admin key gets the 404 of a route that does not exist, so the
    probe cannot be found, nor used to make crewq call LLM providers on a stranger's behalf."""
    if not _admitted(request):
        raise web.HTTPNotFound()
    app = request.app
    async with diagnostics.http_session() as http:
        report = await diagnostics.run(
            diagnostics.Probe(app[DB], app[REDIS], app[SETTINGS], app[CREWS], http)
        )
    return json_response(
        report,
        status=503 if report.status is Verdict.FAIL else 200,
        headers={"Cache-Control": "no-store"},
    )
