"""`/v1/account`: the calling key's tenant, its keys, plan, usage, jobs' metrics and failed
requests, its signing secret and its IP allowlist."""

import ipaddress
import logging
import time
from datetime import UTC, datetime, timedelta

from aiohttp import web

from api.addresses import IpAddress, client_address, in_networks, unmapped, unmapped_network
from api.context import BOX, DB, SETTINGS
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
    text_header,
)
from api.ratelimit import RATE_WINDOW, RateWindow, current_window
from api.responses import json_response
from schemas.account import (
    DEFAULT_PERIOD,
    MAX_ALLOWED_IPS,
    MAX_LOG_LIMIT,
    PERIOD_LENGTH,
    Account,
    AccountMetrics,
    AccountSecurity,
    AccountSecurityUpdate,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyInfo,
    ApiKeyList,
    CrewMetrics,
    CurrentKey,
    IpAllowlist,
    JobMetrics,
    KeyMode,
    MetricsPeriod,
    Percentiles,
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
from shared.store.tenants import Allowlist, IpNetwork
from shared.store.usage import Measures

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


# Only failures are kept, so "error" is all there is: read (and refused when unknown), unused.
FILTER = enum_query("filter", RequestFilter, "Which requests.")
LOG_LIMIT = limit_param(100, MAX_LOG_LIMIT)
PERIOD = enum_query("period", MetricsPeriod, f"How far back from now; {DEFAULT_PERIOD} if absent.")
IF_MATCH = text_header(
    "If-Match",
    "The `version` (ETag) the allowlist was read at: the change is made only if it still is.",
    max_length=100,
)


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


def _metrics(measures: Measures) -> JobMetrics:
    return JobMetrics(
        jobs=measures.jobs,
        by_status=measures.by_status,
        run_seconds=Percentiles(p50=measures.run_p50, p95=measures.run_p95),
        queue_seconds=Percentiles(p50=measures.wait_p50, p95=measures.wait_p95),
        usage=measures.spent,
    )


@routes.get("/v1/account/metrics")
@operation(
    Operation(
        "The period's jobs per crew: states, run time, queue wait, tokens and cost",
        Scope.ACCOUNT_READ,
        {200: AccountMetrics},
        query=[PERIOD],
        tags=["account"],
    )
)
async def account_metrics(request: web.Request, call: Call[None]) -> web.Response:
    """The calling key's mode's jobs created in the period, per crew and in total."""
    period = call[PERIOD] or DEFAULT_PERIOD
    owner = call.principal.owner
    found = await usage.metrics(request.app[DB], owner, PERIOD_LENGTH[period])
    return json_response(
        AccountMetrics(
            period=period,
            since=found.since,
            until=found.until,
            livemode=owner.livemode,
            totals=_metrics(found.totals),
            crews=[
                CrewMetrics(crew=crew, **_metrics(m).model_dump())
                for crew, m in found.crews.items()
            ],
        )
    )


def _security(allowlist: Allowlist, address: IpAddress | None) -> web.Response:
    networks = allowlist.networks or ()
    body = AccountSecurity(
        ip_allowlist=IpAllowlist(enabled=bool(networks), ips=[str(n) for n in networks]),
        max_ips=MAX_ALLOWED_IPS,
        client_address=str(address) if address is not None else None,
        version=allowlist.version,
    )
    return json_response(body, headers={"ETag": f'"{allowlist.version}"'})


@routes.get("/v1/account/security")
@operation(
    Operation(
        "Where the tenant's keys may be used from (its IP allowlist)",
        Scope.ACCOUNT_READ,
        {200: AccountSecurity},
        tags=["account"],
    )
)
async def account_security(request: web.Request, call: Call[None]) -> web.Response:
    found = await tenants.allowlist(request.app[DB], call.principal.tenant_id)
    assert found is not None  # the key's tenant
    return _security(found, client_address(request, request.app[SETTINGS].trusted_proxies))


def _expected_version(if_match: str | None) -> str | None:
    """The version `If-Match` names (`"v"` or `v`); None: none, or `*` (any)."""
    if if_match is None or if_match.strip() == "*":
        return None
    return if_match.strip().removeprefix("W/").strip('"')


def _allowlist(ips: list[str]) -> tuple[IpNetwork, ...]:
    """The networks as requests are compared with them (an IPv4-mapped one as the IPv4
    network it is, api/addresses.py), each once, in the order given."""
    return tuple(dict.fromkeys(unmapped_network(ipaddress.ip_network(ip)) for ip in ips))


@routes.put("/v1/account/security")
@operation(
    Operation(
        "Replace the tenant's IP allowlist",
        Scope.ADMIN,
        {200: AccountSecurity},
        body=AccountSecurityUpdate,
        headers=[IF_MATCH],
        errors=[Code.LIVE_MODE_REQUIRED, Code.WOULD_LOCK_OUT_CALLER, Code.PRECONDITION_FAILED],
        tags=["account"],
    )
)
async def update_security(request: web.Request, call: Call[AccountSecurityUpdate]) -> web.Response:
    """Replaces the allowlist whole, for every key of the tenant (live and test) from their
    next request on: authentication reads it from Postgres for each request, uncached."""
    principal, body = call.principal, call.body
    if not principal.livemode:
        raise ApiError(
            Code.LIVE_MODE_REQUIRED,
            "a test key cannot change the allowlist, which live keys obey too; use a live"
            " admin key",
        )
    networks = _allowlist(body.ip_allowlist.ips)
    address = client_address(request, request.app[SETTINGS].trusted_proxies)
    locked_out = bool(networks) and (address is None or not in_networks(address, networks))
    confirmed = (
        body.confirm_lockout is not None
        and unmapped(ipaddress.ip_address(body.confirm_lockout)) == address
    )
    if locked_out and address is None:
        # No address to compare (nor to confirm): any allowlist would refuse this caller.
        raise ApiError(
            Code.WOULD_LOCK_OUT_CALLER,
            "this request's address is unknown, so no allowlist would let it in; change the"
            " allowlist from an address crewq sees, or ask the operator",
            {"client_address": None},
        )
    if locked_out and not confirmed:
        raise ApiError(
            Code.WOULD_LOCK_OUT_CALLER,
            f"this allowlist leaves out {address}, where this request comes from: its keys"
            f' would stop working here. Add {address}, or send "confirm_lockout":'
            f' "{address}" to lock it out.',
            {"client_address": str(address)},
        )
    replaced = await tenants.replace_allowlist(
        request.app[DB], principal.tenant_id, networks, _expected_version(call[IF_MATCH])
    )
    if replaced is None:
        raise ApiError(
            Code.PRECONDITION_FAILED,
            "the allowlist changed since the version If-Match names; read it again",
        )
    # The audit trail of a security change: who, from where, what it was and is now.
    log.info(
        "ip allowlist replaced by key %s from %s: %s (was %s)",
        principal.key_id,
        address,
        ", ".join(str(n) for n in networks) or "any address",
        ", ".join(str(n) for n in replaced.before.networks or ()) or "any address",
    )
    return _security(replaced.after, address)
