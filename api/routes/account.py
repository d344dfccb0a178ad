"""`/v1/account`: the calling key's tenant and its webhook signing secret; `/healthz`."""

import logging

from aiohttp import web

from api.context import DB, REDIS
from api.errors import ApiError
from api.responses import json_response
from schemas.account import Account
from shared import tenants

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


@routes.get("/v1/account")
async def account(request: web.Request) -> web.Response:
    principal = request["principal"]
    tenant = await tenants.get(request.app[DB], principal.tenant_id)
    assert tenant is not None  # the key was just authenticated against this tenant
    return json_response(
        Account(
            tenant_id=tenant.id,
            tenant_name=tenant.name,
            # The secret lets its holder forge webhooks: only keys that manage them see it.
            webhook_signing_secret=tenant.signing_secret
            if "webhooks:manage" in principal.scopes
            else None,
            key_id=principal.key_id,
            scopes=sorted(principal.scopes),
            created_at=tenant.created_at,
        )
    )


@routes.get("/healthz")
async def health(request: web.Request) -> web.Response:
    checks = {}
    # Unauthenticated: say what is down, keep the why (hosts, ports) in the log.
    try:
        await request.app[DB].fetchval("SELECT 1")
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
        raise ApiError(
            503, "UNHEALTHY", "a dependency is unavailable", checks, {"Retry-After": "5"}
        )
    return json_response({"status": "ok", "checks": checks})
