"""What `/v1/account` answers: the tenant, its keys, its plan and usage, its jobs'
metrics, its failed requests and its security settings."""

import ipaddress
import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from schemas.fields import WHOLE
from schemas.jobs import JobStatus, Spent
from schemas.pages import Page
from schemas.webhooks import DEFAULT_GRACE_S, MAX_GRACE_S

MAX_KEY_DAYS = 3650
MAX_LOG_LIMIT = 1000


class Scope(StrEnum):
    JOBS_READ = "jobs:read"
    JOBS_WRITE = "jobs:write"
    JOBS_CANCEL = "jobs:cancel"  # cancel and retry
    WEBHOOKS_MANAGE = "webhooks:manage"
    ACCOUNT_READ = "account:read"
    ADMIN = "admin"  # everything, and managing the tenant's keys


class KeyMode(StrEnum):
    LIVE = "live"  # crq_live_…
    TEST = "test"  # crq_test_…: a sandbox; its jobs run offline and count against no quota


class Plan(StrEnum):
    FREE = "free"
    PRO = "pro"
    UNLIMITED = "unlimited"


class Account(BaseModel):
    object: Literal["account"] = "account"
    tenant_id: str
    tenant_name: str
    plan: Plan
    webhook_signing_secret: str | None = Field(
        description="Signs the jobs' own webhooks, of the calling key's mode (test jobs'"
        " webhooks are signed with a test secret); shown to keys with webhooks:manage."
    )
    key_id: str
    scopes: list[Scope]
    created_at: datetime


class RateLimit(BaseModel):
    requests: int | None = Field(description="None: not rate-limited.")
    period: Literal["second"] = "second"


class CurrentKey(BaseModel):
    """`GET /v1/account/api-keys/current`: what the calling key is and may do."""

    object: Literal["api_key"] = "api_key"
    id: str
    mode: KeyMode
    livemode: bool
    scopes: list[Scope]
    tenant_id: str
    tenant_name: str
    plan: Plan
    rate_limit: RateLimit
    monthly_job_limit: int | None = Field(description="None: no quota.")
    expires_at: datetime | None


class ApiKeyInfo(BaseModel):
    """A key as lists show it: never the key itself, only its first characters."""

    object: Literal["api_key"] = "api_key"
    id: str
    name: str
    mode: KeyMode
    prefix: str
    scopes: list[Scope]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="Refreshed at most once a minute.")
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyInfo):
    key: str = Field(description="The key itself: shown in this answer only.")


class ApiKeyCreate(BaseModel):
    """Body of `POST /v1/account/api-keys`. Strict but for the enums, which JSON can only
    give as strings."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(strict=True, max_length=100)] = ""
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=len(Scope))]
    mode: KeyMode | None = Field(
        default=None,
        description="None: the calling key's mode. A test key makes test keys only.",
    )
    expires_in_days: Annotated[int, Field(strict=True, ge=1, le=MAX_KEY_DAYS), WHOLE] | None = (
        Field(default=None, description="None: the key never expires.")
    )


ApiKeyList = Page[ApiKeyInfo]


class Usage(BaseModel):
    """`GET /v1/account/usage`: this month's jobs (live keys only) and this second's
    requests."""

    object: Literal["usage"] = "usage"
    plan: Plan
    jobs_this_month: int
    jobs_limit: int | None = Field(description="None: no quota.")
    jobs_remaining: int | None
    resets_at: datetime = Field(description="When the monthly count starts again (UTC).")
    rate_limit: int | None = Field(description="Requests a second; None: not limited.")
    rate_limit_remaining: int | None
    rate_limit_resets_at: datetime | None
    tokens_this_month: int = Field(
        default=0, description="Model tokens this month's live jobs spent."
    )
    cost_usd_this_month: float = Field(
        default=0.0, description="What those tokens cost, in US dollars (per model's price)."
    )
    max_tokens_per_month: int | None = Field(default=None, description="None: no cap.")
    max_cost_usd_per_month: int | None = Field(default=None, description="None: no cap.")


class RequestFilter(StrEnum):
    """`GET /v1/account/logs?filter=`: only failed requests are kept, so `error` is all."""

    ERROR = "error"


class RequestLogEntry(BaseModel):
    object: Literal["request_log"] = "request_log"
    at: datetime
    method: str
    path: str
    status: int
    code: str
    request_id: str
    key_id: str | None


class RequestLog(BaseModel):
    object: Literal["list"] = "list"
    data: list[RequestLogEntry]


class SigningSecretRotate(BaseModel):
    """Body of `POST /v1/account/signing-secret/rotate` (optional)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    grace_seconds: Annotated[int, Field(strict=True, ge=0, le=MAX_GRACE_S), WHOLE] = Field(
        default=DEFAULT_GRACE_S,
        description="How long the old secret keeps signing alongside the new one.",
    )


class SigningSecret(BaseModel):
    object: Literal["signing_secret"] = "signing_secret"
    secret: str = Field(description="The new secret: shown in this answer only.")
    previous_secret_expires_at: datetime | None


class MetricsPeriod(StrEnum):
    """`GET /v1/account/metrics?period=`: how far back, from now."""

    DAY = "24h"
    WEEK = "7d"
    MONTH = "30d"


PERIOD_LENGTH: dict[MetricsPeriod, timedelta] = {
    MetricsPeriod.DAY: timedelta(hours=24),
    MetricsPeriod.WEEK: timedelta(days=7),
    MetricsPeriod.MONTH: timedelta(days=30),
}
DEFAULT_PERIOD = MetricsPeriod.WEEK


class Percentiles(BaseModel):
    """Seconds; None when no job of the group has the measure."""

    p50: float | None
    p95: float | None


class JobMetrics(BaseModel):
    """What a group of the period's jobs did."""

    jobs: int = Field(description="Jobs created in the period, whatever their state now.")
    by_status: dict[JobStatus, int] = Field(
        description="Those jobs by their state now; every state is named, 0 when none.",
        examples=[
            {
                "pending": 3,
                "running": 2,
                "completed": 40,
                "failed": 2,
                "cancelled": 1,
                "awaiting_input": 0,
                "scheduled": 0,
                "expired": 0,
            }
        ],
    )
    run_seconds: Percentiles = Field(
        description="How long the crews of jobs that ended (completed, failed, cancelled) ran:"
        " each job's attempts added up, waits for a retry or a person's input left out."
    )
    queue_seconds: Percentiles = Field(
        description="From when a job was due (submitted, or the start time it asked for) to"
        " its first start. Jobs whose later attempts moved their due time (a retry, a"
        " hand-back, an answer to an input request) are left out of it."
    )
    usage: Spent = Field(description="What the jobs' model calls spent, over all attempts.")


class CrewMetrics(JobMetrics):
    crew: str


class AccountMetrics(BaseModel):
    """`GET /v1/account/metrics`: the calling key's mode's jobs created in the period, per
    crew and in total."""

    object: Literal["account_metrics"] = "account_metrics"
    period: MetricsPeriod
    since: datetime = Field(description="The period's start: jobs created from then on.")
    until: datetime = Field(description="When this was computed.")
    livemode: bool = Field(description="Whose jobs: live keys see live jobs, test keys test ones.")
    totals: JobMetrics
    crews: list[CrewMetrics] = Field(description="By crew name; crews with no job are left out.")


# Bounds of a tenant's IP allowlist. Every request of its keys compares its address with each
# entry, and the longest IPv6 network with its prefix (`ffff:…:ffff/128`) is 43 characters.
MAX_ALLOWED_IPS = 100
_MAX_CIDR_LENGTH = 49
# What the document says a network and an address are, and what the validators below check
# first: an IPv4 address exactly, an IPv6 one by its characters (which of those strings are
# addresses, or networks without host bits, no pattern can say: the 400 names the others).
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = f"{_OCTET}(\\.{_OCTET}){{3}}"
_IPV6 = "[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*"
ADDRESS_PATTERN = f"^({_IPV4}|{_IPV6})$"
CIDR_PATTERN = f"^({_IPV4}(/(3[0-2]|[12]?[0-9]))?|{_IPV6}(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$"


def _cidr(text: str) -> str:
    """A network as `ipaddress` writes it (an address alone is its /32 or /128). Host bits
    set are refused, not cleared: `10.1.2.3/8` may mean 10.0.0.0/8 or a typo of /32."""
    try:
        if not re.fullmatch(CIDR_PATTERN, text):
            raise ValueError("neither an IPv4 nor an IPv6 network")
        return str(ipaddress.ip_network(text))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a network in CIDR notation ({exc})") from exc


def _address(text: str) -> str:
    try:
        if not re.fullmatch(ADDRESS_PATTERN, text):
            raise ValueError("neither an IPv4 nor an IPv6 address")
        return str(ipaddress.ip_address(text))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IP address ({exc})") from exc


Cidr = Annotated[
    str,
    Field(
        strict=True,
        min_length=1,
        max_length=_MAX_CIDR_LENGTH,
        json_schema_extra={"pattern": CIDR_PATTERN},
    ),
    AfterValidator(_cidr),
]
# One address, as `confirm_lockout` names the caller's.
Address = Annotated[
    str,
    Field(
        strict=True,
        min_length=1,
        max_length=_MAX_CIDR_LENGTH,
        json_schema_extra={"pattern": ADDRESS_PATTERN},
    ),
    AfterValidator(_address),
]


class IpAllowlist(BaseModel):
    enabled: bool = Field(description="False: keys may be used from any address.")
    ips: list[str] = Field(
        description="The networks the tenant's keys may be used from.",
        examples=[["203.0.113.10/32", "203.0.113.0/24"]],
    )


class AccountSecurity(BaseModel):
    """`GET /v1/account/security`: where the tenant's keys may be used from."""

    object: Literal["account_security"] = "account_security"
    ip_allowlist: IpAllowlist
    max_ips: int = Field(default=MAX_ALLOWED_IPS, description="How many networks it may hold.")
    client_address: str | None = Field(
        description="This request's address as crewq sees it (behind a trusted proxy: the"
        " client's it forwarded), which the allowlist is compared with.",
        examples=["203.0.113.10"],
    )
    version: str = Field(
        description="Changes whenever the allowlist does; also the ETag. Send it as `If-Match`"
        " with a PUT to change only what you read."
    )


class IpAllowlistUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    ips: Annotated[list[Cidr], Field(max_length=MAX_ALLOWED_IPS)] = Field(
        description="The networks the tenant's keys may be used from, replacing the ones there"
        " are; [] lets them be used from any address. An address alone is its /32 (or /128).",
        examples=[["203.0.113.0/24", "198.51.100.7"]],
    )


class AccountSecurityUpdate(BaseModel):
    """Body of `PUT /v1/account/security`: the allowlist, replaced whole."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ip_allowlist: IpAllowlistUpdate
    confirm_lockout: Address | None = Field(
        default=None,
        description="An allowlist that leaves out the address this request comes from is"
        " refused (409 `WOULD_LOCK_OUT_CALLER`, naming the address) unless this names that"
        " very address: the keys then stop working from it with the next request.",
        examples=["198.51.100.23"],
    )
