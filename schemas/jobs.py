"""Jobs as clients submit and read them."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.pages import Page

MAX_TIMEOUT_S = 7200
MAX_RETRIES = 10


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class ErrorCode(StrEnum):
    """Why a job failed; stable strings clients may branch on (checked in SQL too)."""

    CREW_ERROR = "CREW_ERROR"
    CREW_CONFIG_ERROR = "CREW_CONFIG_ERROR"
    TIMEOUT = "TIMEOUT"
    WORKER_LOST = "WORKER_LOST"
    LLM_UNAVAILABLE = "LLM_UNAVAILABLE"


class AttemptOutcome(StrEnum):
    """How one attempt ended (checked in SQL too)."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRYING = "retrying"  # failed; another attempt is scheduled
    RELEASED = "released"  # handed back by a draining worker; not counted against retries
    LOST = "lost"  # its worker stopped heartbeating
    TIMEOUT = "timeout"  # ran past its timeout and the reaper ended it


class JobCreate(BaseModel):
    """Body of `POST /v1/jobs`. Unknown fields are refused so typos never pass silently."""

    model_config = ConfigDict(extra="forbid")

    crew: Annotated[str, Field(min_length=1, max_length=100)]
    inputs: dict[str, Any] = Field(default_factory=dict)
    webhook_url: Annotated[str | None, Field(max_length=2048)] = None
    timeout: Annotated[int | None, Field(ge=1, le=MAX_TIMEOUT_S)] = None
    max_retries: Annotated[int | None, Field(ge=0, le=MAX_RETRIES)] = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class JobError(BaseModel):
    code: ErrorCode
    message: str


class TaskResult(BaseModel):
    name: str | None
    agent: str | None
    raw: str
    structured: dict[str, Any] | None = None


class JobResult(BaseModel):
    raw: str
    structured: dict[str, Any] | None = None
    tasks: list[TaskResult]
    models: list[str]
    offline: bool = Field(
        description="True when the crew ran on crewq's built-in offline model, not a real LLM."
    )


class JobAttempt(BaseModel):
    number: int
    worker_id: str | None
    started_at: datetime
    finished_at: datetime | None
    outcome: AttemptOutcome | None
    error: JobError | None


class JobState(BaseModel):
    """A job's state: what its events carry. Not its inputs or metadata, which never change
    (read the job for those), nor its attempt history."""

    object: Literal["job"] = "job"
    id: str
    status: JobStatus
    crew: str
    attempt: int = Field(description="How many attempts have started.")
    max_retries: int
    result: JobResult | None
    token_usage: dict[str, Any] | None
    error: JobError | None
    worker_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class Job(JobState):
    """A job as `GET /v1/jobs/{id}` shows it."""

    inputs: dict[str, Any]
    metadata: dict[str, Any]
    webhook_url: str | None
    timeout: int
    attempts: list[JobAttempt]
    last_activity_at: datetime | None
    cancel_requested_at: datetime | None


JobList = Page[Job]
