"""What `/health`, `/healthz` and `/health/debug` answer, and what each worker and dispatcher
reports of itself when it registers."""

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field


class Health(BaseModel):
    """`GET /healthz`: the API and the two stores it needs."""

    status: Literal["ok"]
    checks: dict[str, str]


class Alive(BaseModel):
    """`GET /livez`: the process answers; nothing else is checked."""

    status: Literal["alive"]


class Liveness(BaseModel):
    """`GET /health`: one database ping, for load balancers and probes."""

    status: Literal["healthy"]
    version: str
    timestamp: datetime


class ProcessRole(StrEnum):
    WORKER = "worker"
    DISPATCHER = "dispatcher"


class ProcessHealth(BaseModel):
    """`GET /health` on a worker's or dispatcher's metrics port: 200 when `healthy`, else 503."""

    status: Literal["healthy", "starting", "unhealthy"] = Field(
        description="starting: not registered yet; unhealthy: Postgres has not heard from it "
        "for longer than CREWQ_PROCESS_DEAD_AFTER."
    )
    role: ProcessRole
    id: str | None
    version: str
    seconds_since_heartbeat: float | None


class LlmConnection(BaseModel):
    """One LLM provider a process can reach, as its environment configures it."""

    provider: str
    base_url: str | None = Field(
        description="A custom endpoint (OpenAI-compatible server, Azure, ...); None: the "
        "provider's public API."
    )
    missing_credentials: list[str] = Field(description="Variables it needs that are unset.")
    models: list[str] = Field(description="The models of crewq's crews it serves.")


class ProcessReport(BaseModel):
    """What a worker or dispatcher runs with, as it registered itself."""

    crews: list[str] = []
    crew_errors: dict[str, str] = Field(
        default={}, description="Crews that failed to load or build here, with why."
    )
    default_model: str | None = None
    llm_connections: list[LlmConnection] = []
    fingerprints: dict[str, str] = Field(
        default={},
        description="The first 12 hex digits of SHA-256 of each secret setting ('unset' "
        "when not set): equal values give equal fingerprints, and none reveals its value.",
    )
    metrics_port: int | None = None


class ProcessState(StrEnum):
    """How a registered process stands, as `/health/debug` shows it."""

    ALIVE = "alive"  # heartbeating within CREWQ_PROCESS_DEAD_AFTER
    STOPPED = "stopped"  # signed off: it was stopped (scaled down, redeployed, ...)
    SILENT = "silent"  # no heartbeat for CREWQ_PROCESS_DEAD_AFTER, never signed off: dead


class ProcessInfo(BaseModel):
    """A worker or dispatcher, as its last heartbeat left it."""

    id: str
    role: ProcessRole
    host: str
    pid: int
    version: str
    concurrency: int
    running: int = Field(description="Jobs (or deliveries) in progress at its last heartbeat.")
    started_at: datetime
    last_seen_at: datetime
    report: ProcessReport


class ComponentStatus(StrEnum):
    OK = "ok"
    FAIL = "fail"
    SKIPPED = "skipped"  # not configured here; does not count against the verdict


class Component(BaseModel):
    status: ComponentStatus
    latency_ms: int
    checks: list[str] = Field(description="What was verified, in order.")
    error: str | None = None
    details: dict[str, Any] | None = None


class Verdict(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"  # a non-critical component failed: up, but impaired
    FAIL = "fail"  # the database or Redis failed: crewq cannot serve (HTTP 503)


class DebugReport(BaseModel):
    """`GET /health/debug` and `crewq doctor`: every component of the deployment, checked."""

    status: Verdict
    duration_ms: int
    environment: dict[str, Any]
    components: dict[str, Component]
