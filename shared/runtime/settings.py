"""Every crewq setting, read from `CREWQ_*` environment variables."""

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, IPvAnyNetwork, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.account import Plan
from schemas.jobs import InputDefault
from shared.runtime.limits import (
    DEFAULT_MAX_INPUT_BYTES,
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_PAGE_BYTES,
)
from shared.runtime.model_limits import ModelLimit

REPO_CREWS = Path(__file__).resolve().parents[2] / "crews"

# Every variable holding a provider credential: fingerprinted, never shown
# (shared/runtime/llm_providers.py, shared/runtime/logs.py).
PROVIDER_SECRET_VARS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "AZURE_API_KEY",
    "OPENROUTER_API_KEY",
    "DEEPSEEK_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
)
# Variables whose presence means a real LLM provider is configured: a credential, or an
# endpoint that needs none (a local server). AWS counts by its key id, not its secret.
PROVIDER_ENV_VARS = (
    *(name for name in PROVIDER_SECRET_VARS if name != "AWS_SECRET_ACCESS_KEY"),
    "OPENAI_BASE_URL",
    "OPENAI_API_BASE",
    "OLLAMA_HOST",
    "AWS_ACCESS_KEY_ID",
)

OFFLINE_MODEL = "crewq/offline"


class Environment(StrEnum):
    DEVELOPMENT = "development"  # `crewq dev` sets it
    PRODUCTION = "production"


class LogFormat(StrEnum):
    TEXT = "text"  # for a person at a terminal
    JSON = "json"  # one object per line, for a log pipeline


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CREWQ_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description=(
            "Postgres URL. Required by every role except `dev`, which starts an "
            "embedded Postgres when it is unset."
        ),
    )
    database_direct_url: str | None = Field(
        default=None,
        description=(
            "A direct (session) connection to the same database for `LISTEN` and "
            "migrations, when `CREWQ_DATABASE_URL` goes through a pooler in transaction"
            " mode; unset: `CREWQ_DATABASE_URL`."
        ),
    )
    database_pool_size: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Most connections one process's Postgres pool opens; unset: API 20, worker "
            "2 x `CREWQ_WORKER_CONCURRENCY` + 4, dispatcher 10."
        ),
    )
    database_statement_cache: int = Field(
        default=100,
        ge=0,
        description=(
            "Prepared statements cached per connection; `0` through a transaction-mode "
            "pooler that does not carry prepared statements (PgBouncer before 1.21)."
        ),
    )
    redis_url: str | None = Field(
        default=None,
        description=(
            "Redis URL with its password (`redis://:PASSWORD@host:6379/0`, or "
            "`rediss://…` for TLS with options in the query string). Required by every"
            " role except `dev`, which starts an embedded Redis when it is unset."
        ),
    )
    data_dir: Path = Field(
        default=Path(".crewq"),
        description=(
            "Where `crewq dev` keeps embedded Postgres/Redis data, the Redis password, "
            "the secret key and the dev API key; made private to its owner."
        ),
    )

    api_host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(default=8000, description="Port the API listens on.")
    api_max_body_bytes: int = Field(
        default=1000000, description="Largest request body; larger gets `413`."
    )
    api_keepalive_timeout: float = Field(
        default=15.0, gt=0, description="Seconds an idle API connection is kept open."
    )
    api_header_timeout: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Seconds a client has to send a whole request head; then its connection is closed."
        ),
    )
    api_max_connections: int = Field(
        default=1000,
        ge=1,
        description=("Connections the API keeps open at once; more get `503 SERVICE_UNAVAILABLE`."),
    )
    api_max_page_bytes: int = Field(
        default=DEFAULT_MAX_PAGE_BYTES,
        ge=1024,
        description=(
            "Most bytes of jobs or events one list answer (`GET /v1/jobs`, a job's "
            "events, a batch) carries, one item at least; a page stops early there, "
            "with `has_more`."
        ),
    )
    default_plan: Plan = Field(
        default=Plan.PRO,
        description="Plan of a tenant `crewq keys create` makes: `free`, `pro` or `unlimited`.",
    )
    auth_failure_limit: int = Field(
        default=30,
        ge=1,
        description=(
            "Requests with keys that fail one address may make a minute; past it they "
            "get `429` (a key that authenticates is always served)."
        ),
    )
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(
        default=[],
        description="Comma-separated CIDRs whose `X-Forwarded-For`/`-Proto` are believed.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Comma-separated origins browsers may call the API from; none: CORS off.",
    )
    secret_key: str | None = Field(
        default=None,
        description=(
            "Fernet keys sealing signing secrets, comma-separated, newest first. "
            "Required by `api`, `dispatcher`, `keys create`; `crewq dev` makes one."
        ),
    )
    request_log_days: float = Field(
        default=7,
        gt=0,
        description="How long a tenant's failed requests are kept for `GET /v1/account/logs`.",
    )

    crews_path: str = Field(
        default=str(REPO_CREWS),
        description="Directories holding one folder per crew, separated by `os.pathsep`.",
    )
    llm_model: str | None = Field(
        default=None,
        description=(
            "Default CrewAI model string. Unset: `openai/gpt-4o-mini` if a provider "
            "variable is set, else the offline model `crewq/offline`."
        ),
    )

    llm_retry_attempts: int = Field(
        default=5, ge=1, description="Tries per LLM call on 429, 5xx, timeouts, broken connections."
    )
    llm_retry_max_wait: float = Field(
        default=30.0,
        gt=0,
        description="Longest backoff between those tries (a longer `Retry-After` is honoured).",
    )
    model_limits: dict[str, ModelLimit] = Field(
        default_factory=dict,
        description=(
            'Per-model limits shared by every worker, JSON: `{"openai/gpt-4o-mini": '
            '{"rpm": 60, "tpm": 100000}}`; `crewq models set MODEL --rpm N --tpm N` '
            "rows win."
        ),
    )

    job_default_timeout: int = Field(
        default=3600,
        ge=1,
        le=7200,
        description="Job timeout when neither the request nor `crew.yaml` sets one (1 to 7200).",
    )
    job_default_max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries when neither the request nor `crew.yaml` sets them (0 to 10).",
    )
    job_max_input_bytes: int = Field(
        default=DEFAULT_MAX_INPUT_BYTES,
        ge=1024,
        description=(
            "Most bytes a job's `inputs` and `metadata` may take together, as JSON; "
            "more gets `400`."
        ),
    )
    job_max_output_bytes: int = Field(
        default=DEFAULT_MAX_OUTPUT_BYTES,
        ge=1024,
        description=(
            "Most bytes stored of each output of a job (a task's, the crew's final one)"
            " and of each event's `data` (plus 4 KiB); the rest is cut off and marked "
            "`truncated`."
        ),
    )
    job_input_timeout: int = Field(
        default=86400,
        ge=1,
        le=30 * 86400,
        description=(
            "Seconds a job paused for a person's input waits when neither the request "
            "nor `crew.yaml` (`input_timeout`) sets it."
        ),
    )
    job_input_default: InputDefault = Field(
        default=InputDefault.FAIL,
        description=(
            "What an unanswered one comes to: `approve`, `reject` (cancelled) or `fail`"
            " (`INPUT_TIMEOUT`); the request's or `crew.yaml`'s `input_default` first."
        ),
    )
    job_max_tokens: int | None = Field(
        default=None,
        ge=1,
        description=(
            "A job's token budget when neither its request nor `crew.yaml` sets one; unset: none."
        ),
    )
    job_max_cost_usd: float | None = Field(
        default=None, gt=0, description="A job's cost budget in US dollars, likewise."
    )
    job_max_llm_calls: int | None = Field(
        default=None, ge=1, description="A job's budget of model calls, likewise."
    )
    model_prices: dict[str, dict[str, float]] = Field(
        default={},
        description=(
            "Prices per million tokens by model over LiteLLM's table, JSON: "
            '`{"openai/my-model": {"input_usd_per_mtok": 0.5, "output_usd_per_mtok": '
            "1.5}}`."
        ),
    )
    checkpoint_key: str | None = Field(
        default=None,
        description=(
            "Fernet keys sealing crew checkpoints, comma-separated, newest first; "
            "workers only (`crewq dev` makes one). Unset: crews run without checkpoints"
            " and a task asking a person fails its job."
        ),
    )
    checkpoint_max_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description=(
            "Most bytes one crew checkpoint may take; a larger one is not stored (a "
            "resume starts from the one before)."
        ),
    )
    retry_base_delay: float = Field(
        default=5.0,
        ge=0,
        description="Delay before a job's first automatic retry; doubles with each attempt.",
    )
    retry_max_delay: float = Field(default=300.0, ge=0, description="Cap on that delay.")

    worker_concurrency: int = Field(
        default=2, ge=1, description="Crews one worker runs at once, each in its own child process."
    )
    worker_id: str | None = Field(
        default=None,
        description="Worker name in jobs and logs; default `<hostname>-<pid>-<random>`.",
    )
    heartbeat_interval: float = Field(
        default=5.0,
        gt=0,
        description=(
            "How often a worker refreshes a running job's `last_activity_at` and checks"
            " for a cancel."
        ),
    )
    heartbeat_timeout: float = Field(
        default=30.0,
        gt=0,
        description=(
            "A running job silent this long has lost its worker: retried, or failed "
            "with `WORKER_LOST`. A worker that cannot renew its job's heartbeat stops "
            "the crew one interval before this. At least twice the interval."
        ),
    )
    reaper_interval: float = Field(
        default=10.0,
        gt=0,
        description="How often each worker runs the reaper and the queue reconciler.",
    )
    scheduler_interval: float = Field(
        default=0.5,
        gt=0,
        description=(
            "How often each worker fires due schedule ticks (a tick's job is made at "
            "most about this late)."
        ),
    )
    schedule_missed_after: float = Field(
        default=60.0,
        gt=0,
        description=(
            "A tick due longer ago than this was missed (an outage): its schedule's "
            "`missed` policy decides."
        ),
    )
    bulk_interval: float = Field(
        default=1.0, gt=0, description="How often each worker looks for bulk operations to work on."
    )
    timeout_grace: float = Field(
        default=30.0,
        ge=0,
        description=(
            "The reaper fails a job still running this long past its timeout (`TIMEOUT`)."
        ),
    )
    drain_timeout: float = Field(
        default=30.0,
        ge=0,
        description=(
            "On shutdown, how long a worker lets running crews finish before handing them back."
        ),
    )
    child_max_jobs: int = Field(
        default=50,
        ge=1,
        description=(
            "A crew child process is replaced after this many jobs, once its successor "
            "is warm (it serves on until then)."
        ),
    )
    child_max_rss_mb: int = Field(
        default=1024, ge=64, description="…or once its memory (RSS) exceeds this many MB."
    )
    tenant_max_running_jobs: int = Field(
        default=10,
        ge=1,
        description=(
            "Jobs one tenant may have running at once; more wait, parked, as `pending`."
            " `crewq tenants set --tenant NAME --max-running-jobs N` sets a tenant's "
            "own cap."
        ),
    )
    tenant_max_pending_jobs: int = Field(
        default=10000,
        ge=1,
        description="Jobs one tenant may have waiting; more get `429 TOO_MANY_PENDING_JOBS`.",
    )
    tenant_max_webhook_endpoints: int = Field(
        default=20, ge=0, description="Webhook endpoints one tenant may register."
    )
    tenant_max_event_streams: int = Field(
        default=20,
        ge=1,
        description="Event streams one tenant may hold open at once, across all API replicas.",
    )
    retention_days: float = Field(
        default=30,
        ge=0,
        description=(
            "Delete jobs that finished this many days ago, with everything they owe; "
            "`0` keeps everything."
        ),
    )
    retention_interval: float = Field(
        default=300.0, gt=0, description="How often each worker deletes what retention allows."
    )

    webhook_timeout: float = Field(
        default=10.0, gt=0, description="Time limit of one delivery attempt."
    )
    webhook_max_response_bytes: int = Field(
        default=4096, ge=0, description="How much of a receiver's answer is read and stored."
    )
    webhook_backoff: list[float] = Field(
        default=[0, 5, 300, 1800, 7200, 18000, 36000, 36000],
        description=(
            "Wait before each delivery attempt (±20 %); its length is the number of attempts."
        ),
    )
    webhook_throttle_min_delay: float = Field(
        default=60.0, ge=0, description="Least wait after a `429`, `502`, `504` or a timeout."
    )
    webhook_disable_after: float = Field(
        default=5 * 86400,
        gt=0,
        description="Disable a registered endpoint that has failed without a success this long.",
    )
    webhook_endpoint_concurrency: int = Field(
        default=4,
        ge=1,
        description="Requests in flight to one receiver (scheme, host, port), per dispatcher.",
    )
    webhook_breaker_threshold: int = Field(
        default=5,
        ge=1,
        description=(
            "Consecutive failures to one receiver (scheme, host, port) that pause its "
            "deliveries (per dispatcher)…"
        ),
    )
    webhook_breaker_cooldown: float = Field(default=30.0, ge=0, description="…for this long.")
    webhook_allow_http: bool = Field(
        default=False, description="Accept `http://` webhook URLs (`crewq dev`: `true`)."
    )
    webhook_allow_private: bool = Field(
        default=False,
        description=(
            "Allow webhook URLs on loopback, private, link-local or reserved addresses "
            "(`crewq dev`: `true`)."
        ),
    )
    webhook_dns_timeout: float = Field(
        default=5.0, gt=0, le=30, description="Longest a webhook host name may take to resolve."
    )
    webhook_dns_servers: list[str] = Field(
        default=[],
        description="Name servers (`ip` or `ip:port`) for webhook hosts; empty: the system's.",
    )
    dispatcher_concurrency: int = Field(
        default=32, ge=1, description="Deliveries in flight per dispatcher."
    )
    dispatcher_poll_interval: float = Field(
        default=5.0,
        gt=0,
        description=(
            "Longest a dispatcher sleeps between looks for due deliveries; new ones "
            "wake it at once."
        ),
    )

    environment: Environment = Field(
        default=Environment.PRODUCTION,
        description=(
            "`development` under `crewq dev`; shown by `/health/debug`, picks the log format."
        ),
    )
    log_level: str = Field(default="INFO", description="Log level of every process.")
    log_format: LogFormat | None = Field(
        default=None,
        description=(
            "`json`: one object per line; `text`: for a terminal. Unset: `text` under"
            " `crewq dev`, else `json`."
        ),
    )
    debug_token: str | None = Field(
        default=None, description="Sent as `X-Debug-Token`, opens `GET /health/debug`."
    )
    operator_tenants: Annotated[list[str], NoDecode] = Field(
        default=[],
        description=(
            "Comma-separated tenants whose `admin` keys open `GET /health/debug` too "
            "(`crewq dev`: `dev`)."
        ),
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "Workers and dispatchers serve `/metrics`, `/health` and `/livez` on this "
            "port, the API `/metrics` and `/livez`; unset: not served (the image sets"
            " 9100)."
        ),
    )
    metrics_host: str = Field(default="0.0.0.0", description="Address that port listens on.")
    process_heartbeat_interval: float = Field(
        default=5.0,
        gt=0,
        description="How often workers and dispatchers tell Postgres they are alive.",
    )
    process_dead_after: float = Field(
        default=20.0,
        gt=0,
        description="A worker or dispatcher silent this long counts as dead in `/health/debug`.",
    )

    @field_validator("trusted_proxies", "cors_origins", "operator_tenants", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _lease_fits(self) -> "Settings":
        # A running attempt's lease is heartbeat_timeout - heartbeat_interval: its crew is
        # stopped when that much passes without a renewal (worker/runner.py).
        if self.heartbeat_timeout < 2 * self.heartbeat_interval:
            raise ValueError("CREWQ_HEARTBEAT_TIMEOUT must be at least twice the interval")
        return self

    @property
    def crew_dirs(self) -> list[Path]:
        return [Path(p) for p in self.crews_path.split(os.pathsep) if p]

    @property
    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("CREWQ_DATABASE_URL is not set (crewq dev sets it for you)")
        return self.database_url

    @property
    def direct_database_url(self) -> str:
        """Where LISTEN and migrations connect: they need a session of their own, which a
        pooler in transaction mode does not keep."""
        return self.database_direct_url or self.require_database_url

    @property
    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise RuntimeError("CREWQ_REDIS_URL is not set (crewq dev sets it for you)")
        return self.redis_url

    def default_model(self) -> str:
        """The model agents use when their YAML names none."""
        if self.llm_model:
            return self.llm_model
        if any(os.environ.get(name) for name in PROVIDER_ENV_VARS):
            return "openai/gpt-4o-mini"
        return OFFLINE_MODEL

    @property
    def logs_as(self) -> LogFormat:
        if self.log_format is not None:
            return self.log_format
        return LogFormat.TEXT if self.environment is Environment.DEVELOPMENT else LogFormat.JSON

    def offline(self) -> bool:
        """No provider configured: every agent runs on the built-in offline model."""
        return self.default_model() == OFFLINE_MODEL


@lru_cache
def get_settings() -> Settings:
    return Settings()
