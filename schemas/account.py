"""What `/v1/account` answers: the tenant, its keys, its plan and usage, its failed
requests."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.fields import WHOLE
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
