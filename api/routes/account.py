"""`/v1/account`: the calling key's tenant, its keys, plan, usage and failed requests, and
its signing secret."""

import logging
import time
from datetime import UTC, datetime, timedelta

from aiohttp import web

from api.context import BOX, DB
from api.errors import ApiError, Code
from api.operations import (
    CURSOR,
    LIMIT,
    Call,
    Link,
    Operation,
    enum_query,
    limit_param,
    operation,
)
from api.ratelimit import RATE_WINDOW, RateWindow, current_window
from api.responses import json_response
from schemas.account import (
    MAX_LOG_LIMIT,
    Account,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyInfo,
    ApiKeyList,
    CurrentKey,
    KeyMode,
    RateLimit,
    RequestFilter,
    RequestLog,
    RequestLogEntry,
    Scope,
    SigningSecret,
    SigningSecretRotate,
    Usage,
)
from shared.store import keys, request_failures, tenants, usage
from shared.store.keys import ApiKey

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


# Only failures are kept, so "error" is all there is: read (and refused when unknown), unused.
FILTER = enum_query("filter", RequestFilter, "Which requests.")
LOG_LIMIT = limit_param(100, MAX_LOG_LIMIT)


def _key_info(key: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo.model_validate(key, from_attributes=True)


@routes.get("/v1/account")
@operation(
    Operation("The calling key's tenant", Scope.ACCOUNT_READ, {200: Account}, tags=["account"])
)
async def account(request: web.Request, call: Call[None]) -> web.Response:
    principal = call.principal
    db = request.app[DB]
    tenant = await tenants.get(db, principal.tenant_id)
    assert tenant is not None  # the key was just authenticated against this tenant
    # The secret lets its holder forge webhooks: only keys that manage them see it.
    secret = (
        await tenants.signing_secret(db, principal.owner, request.app[BOX])
        if principal.may(Scope.WEBHOOKS_MANAGE)
        else None
    )
    return json_response(
        Account(
            tenant_id=tenant.id,
            tenant_name=tenant.name,
            plan=tenant.plan,
            webhook_signing_secret=secret,
            key_id=principal.key_id,
            scopes=sorted(principal.scopes),
            created_at=tenant.created_at,
        )
    )


@routes.get("/v1/account/api-keys/current")
@operation(
    Operation("What the calling key is and may do", None, {200: CurrentKey}, tags=["account"])
)
async def current_key(request: web.Request, call: Call[None]) -> web.Response:
    """What the calling key is and may do: any valid key may ask."""
    principal = call.principal
    return json_response(
        CurrentKey(
            id=principal.key_id,
            mode=principal.mode,
            livemode=principal.livemode,
            scopes=sorted(principal.scopes),
            tenant_id=principal.tenant_id,
            tenant_name=principal.tenant_name,
            plan=principal.plan,
            rate_limit=RateLimit(requests=principal.allowance.requests_per_second),
            monthly_job_limit=principal.allowance.jobs_per_month,
            expires_at=principal.expires_at,
        )
    )


@routes.get("/v1/account/api-keys")
@operation(
    Operation(
        "List the tenant's API keys",
        Scope.ADMIN,
        {200: ApiKeyList},
        query=[LIMIT, CURSOR],
        tags=["account"],
    )
)
async def list_keys(request: web.Request, call: Call[None]) -> web.Response:
    page, has_more = await keys.page(
        request.app[DB], call.principal.owner, before=call[CURSOR], limit=call[LIMIT]
    )
    return json_response(ApiKeyList.of([_key_info(k) for k in page], has_more))


@routes.post("/v1/account/api-keys")
@operation(
    Operation(
        "Create an API key (shown once)",
        Scope.ADMIN,
        {201: ApiKeyCreated},
        body=ApiKeyCreate,
        errors=[Code.LIVE_MODE_REQUIRED],
        links=[Link("revoke_key")],
        tags=["account"],
    )
)
async def create_key(request: web.Request, call: Call[ApiKeyCreate]) -> web.Response:
    principal, body = call.principal, call.body
    mode = body.mode or principal.mode
    if mode is KeyMode.LIVE and not principal.livemode:
        raise ApiError(
            Code.LIVE_MODE_REQUIRED, "a test key makes test keys only; use a live admin key"
        )
    async with request.app[DB].acquire() as conn:
        created = await keys.create_key(
            conn,
            principal.tenant_id,
            body.scopes,
            mode=mode,
            name=body.name,
            expires_in=timedelta(days=body.expires_in_days) if body.expires_in_days else None,
        )
    return json_response(
        ApiKeyCreated(**_key_info(created.info).model_dump(), key=created.key),
        status=201,
        headers={"Location": f"/v1/account/api-keys/{created.info.id}"},
    )


@routes.delete("/v1/account/api-keys/{key_id}")
@operation(
    Operation(
        "Revoke an API key",
        Scope.ADMIN,
        {200: ApiKeyInfo},
        errors=[Code.API_KEY_NOT_FOUND],
        tags=["account"],
    )
)
async def revoke_key(request: web.Request, call: Call[None]) -> web.Response:
    key_id = request.match_info["key_id"]
    revoked = await keys.revoke(request.app[DB], call.principal.owner, key_id)
    if revoked is None:
        raise ApiError(Code.API_KEY_NOT_FOUND, f"no API key {key_id!r} for this tenant")
    return json_response(_key_info(revoked))


@routes.get("/v1/account/usage")
@operation(
    Operation(
        "This month's jobs and model spending against their caps, and this second's requests",
        Scope.ACCOUNT_READ,
        {200: Usage},
        tags=["account"],
    )
)
async def account_usage(request: web.Request, call: Call[None]) -> web.Response:
    principal = call.principal
    month = await usage.this_month(request.app[DB], principal.tenant_id)
    spend = await usage.model_spend_this_month(request.app[DB], principal.tenant_id)
    tenant = await tenants.get(request.app[DB], principal.tenant_id)
    assert tenant is not None  # the key's
    jobs_limit = principal.allowance.jobs_per_month
    rate = principal.allowance.requests_per_second
    window: RateWindow | None = request.get(RATE_WINDOW)
    _, window_ends = current_window(time.time())
    return json_response(
        Usage(
            plan=principal.plan,
            jobs_this_month=month.jobs,
            jobs_limit=jobs_limit,
            jobs_remaining=max(0, jobs_limit - month.jobs) if jobs_limit is not None else None,
            resets_at=month.resets_at,
            rate_limit=rate,
            rate_limit_remaining=window.remaining if window else None,
            rate_limit_resets_at=datetime.fromtimestamp(window_ends, UTC) if rate else None,
            tokens_this_month=spend.tokens,
            cost_usd_this_month=spend.cost_usd,
            max_tokens_per_month=tenant.max_tokens_per_month,
            max_cost_usd_per_month=tenant.max_cost_usd_per_month,
        )
    )


@routes.get("/v1/account/logs")
@operation(
    Operation(
        "The tenant's recent failed requests",
        Scope.ACCOUNT_READ,
        {200: RequestLog},
        query=[FILTER, LOG_LIMIT],
        tags=["account"],
    )
)
async def account_logs(request: web.Request, call: Call[None]) -> web.Response:
    """The tenant's failed requests (status >= 400) of the last days, newest first."""
    found = await request_failures.recent(request.app[DB], call.principal.owner, call[LOG_LIMIT])
    return json_response(
        RequestLog(data=[RequestLogEntry.model_validate(f, from_attributes=True) for f in found])
    )


@routes.post("/v1/account/signing-secret/rotate")
@operation(
    Operation(
        "Rotate the signing secret of the jobs' own webhooks",
        Scope.WEBHOOKS_MANAGE,
        {200: SigningSecret},
        body=SigningSecretRotate,
        body_optional=True,
        tags=["account"],
    )
)
async def rotate_signing_secret(
    request: web.Request, call: Call[SigningSecretRotate]
) -> web.Response:
    rotated = await tenants.rotate_signing_secret(
        request.app[DB], call.principal.owner, call.body.grace_seconds, request.app[BOX]
    )
    return json_response(
        SigningSecret(
            secret=rotated.secret, previous_secret_expires_at=rotated.previous_secret_expires_at
        )
    )
