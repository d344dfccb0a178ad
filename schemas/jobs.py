"""Jobs as clients submit and read them."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from schemas.fields import WHOLE, WebhookUrl
from schemas.pages import Page

MAX_TIMEOUT_S = 7200
MAX_RETRIES = 10
MAX_METADATA_KEYS = 100
MAX_METADATA_KEY = 100
MAX_METADATA_STRING = 1000
# Labels, not documents: an object or array in metadata may hold others this deep.
MAX_METADATA_DEPTH = 5
MAX_BATCH_IDS = 100
MAX_INPUT_TIMEOUT_S = 30 * 86400
MAX_FEEDBACK_CHARS = 10_000


def _metadata_refusal(value: Any, path: str, depth: int) -> str | None:
    """What is wrong with a metadata value at `path`, at any depth (issue 19: the bounds
    held at the top level only, and one nested string could be a megabyte)."""
    if isinstance(value, str):
        if len(value) > MAX_METADATA_STRING:
            return f"{path}: string values must be at most {MAX_METADATA_STRING} characters"
        return None
    if isinstance(value, dict | list) and depth > MAX_METADATA_DEPTH:
        return f"{path}: objects and arrays may be nested at most {MAX_METADATA_DEPTH} deep"
    if isinstance(value, dict):
        for key, item in value.items():
            if len(key) > MAX_METADATA_KEY:
                return f"{path}: keys must be at most {MAX_METADATA_KEY} characters"
            if found := _metadata_refusal(item, f"{path}.{key}", depth + 1):
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            if found := _metadata_refusal(item, f"{path}.{index}", depth + 1):
                return found
    return None


def _metadata_bounds(value: dict[str, Any]) -> dict[str, Any]:
    for key, item in value.items():
        if found := _metadata_refusal(item, key, 1):
            raise ValueError(found)
    return value


def _metadata_value_schema(depth: int) -> dict[str, Any]:
    """The JSON Schema of a metadata value at `depth` (1: a top-level value), stating what
    `_metadata_refusal` refuses: long strings and keys, and objects or arrays deeper than
    MAX_METADATA_DEPTH. Written out level by level, as JSON Schema has no depth bound."""
    scalars: list[dict[str, Any]] = [
        {"type": "string", "maxLength": MAX_METADATA_STRING},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
    ]
    if depth > MAX_METADATA_DEPTH:
        return {"anyOf": scalars}
    inner = _metadata_value_schema(depth + 1)
    return {
        "anyOf": [
            *scalars,
            {"type": "array", "items": inner},
            {
                "type": "object",
                "propertyNames": {"maxLength": MAX_METADATA_KEY},
                "additionalProperties": inner,
            },
        ]
    }


Metadata = Annotated[
    dict[Annotated[str, Field(max_length=MAX_METADATA_KEY)], Any],
    Field(max_length=MAX_METADATA_KEYS),
    AfterValidator(_metadata_bounds),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_METADATA_KEYS,
            "propertyNames": {"maxLength": MAX_METADATA_KEY},
            "additionalProperties": _metadata_value_schema(1),
        }
    ),
]


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # A task needs a person's answer: the attempt ended and freed its worker; the job's
    # checkpoint holds the crew's state until `POST /v1/jobs/{id}/input` resumes it.
    AWAITING_INPUT = "awaiting_input"
    # Submitted to start later (`delay`, `run_at`): takes no slot until it is due.
    SCHEDULED = "scheduled"
    # Not started before its `ttl` ran out: it never will.
    EXPIRED = "expired"


TERMINAL_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
)
MAX_DELAY_S = 365 * 86400
MAX_PRIORITY = 1000


class ErrorCode(StrEnum):
    """Why a job failed; stable strings clients may branch on (checked in SQL too)."""

    CREW_ERROR = "CREW_ERROR"
    CREW_CONFIG_ERROR = "CREW_CONFIG_ERROR"
    TIMEOUT = "TIMEOUT"
    WORKER_LOST = "WORKER_LOST"
    LLM_UNAVAILABLE = "LLM_UNAVAILABLE"
    INPUT_TIMEOUT = "INPUT_TIMEOUT"  # nobody answered in time and the job's default is `fail`
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"  # the next model call would have gone past its budget


class AttemptOutcome(StrEnum):
    """How one attempt ended (checked in SQL too)."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRYING = "retrying"  # failed; another attempt is scheduled
    RELEASED = "released"  # handed back by a draining worker; not counted against retries
    LOST = "lost"  # its worker stopped heartbeating
    TIMEOUT = "timeout"  # ran past its timeout and the reaper ended it
    AWAITING_INPUT = "awaiting_input"  # paused for a person; the next attempt resumes it


class InputDefault(StrEnum):
    """What happens to a job nobody answers within its input timeout."""

    APPROVE = "approve"  # as if approved: the crew goes on with the output as it stands
    REJECT = "reject"  # the job is cancelled
    FAIL = "fail"  # the job fails with INPUT_TIMEOUT


class ResumeFrom(StrEnum):
    """Where `POST /v1/jobs/{id}/retry` starts the crew again."""

    CHECKPOINT = "checkpoint"  # after the last task the crew finished
    START = "start"  # from its first task; the job's checkpoints are deleted


class Budget(BaseModel):
    """What a job may spend on models, over all its attempts. A limit left out is none
    (unless the crew's or the platform's default sets it). The crew process checks before
    every model call, so the call that would go past a limit is never sent."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_tokens: Annotated[int, Field(strict=True, ge=1), WHOLE] | None = Field(
        default=None, description="Prompt and completion tokens, all calls together."
    )
    max_cost_usd: Annotated[float, Field(gt=0, le=1_000_000)] | None = Field(
        default=None,
        description="US dollars, priced per model (LiteLLM's price table, or the operator's"
        " CREWQ_MODEL_PRICES).",
    )
    max_llm_calls: Annotated[int, Field(strict=True, ge=1), WHOLE] | None = Field(
        default=None, description="Model calls (each retry of a failed call counts)."
    )


class Spent(BaseModel):
    """What model calls cost: tokens, dollars, calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    llm_calls: int = 0


class Usage(Spent):
    """What a job has spent, over all its attempts, in total and per task."""

    tasks: dict[str, Spent] = Field(default_factory=dict, description="By task name.")


class ConcurrencyStrategy(StrEnum):
    """What a job whose concurrency key is busy does (LangGraph's multitask strategies,
    Hatchet's cancel-in-progress)."""

    ENQUEUE = "enqueue"  # waits until fewer than `limit` of the key's jobs run
    REJECT = "reject"  # refused (409) while `limit` of the key's jobs are pending or running
    CANCEL_RUNNING = "cancel_running"  # the key's running jobs are cancelled; it waits for them
    REPLACE_PENDING = "replace_pending"  # the key's jobs not yet started are cancelled


class Concurrency(BaseModel):
    """At most `limit` of the tenant's jobs with `key` run at once."""

    model_config = ConfigDict(extra="forbid", strict=True)

    key: Annotated[str, Field(min_length=1, max_length=200)]
    limit: Annotated[int, Field(strict=True, ge=1, le=1000), WHOLE] = 1
    strategy: ConcurrencyStrategy = Field(
        default=ConcurrencyStrategy.ENQUEUE,
        strict=False,  # JSON gives an enum as its string
    )


class JobCreate(BaseModel):
    """Body of `POST /v1/jobs`. Unknown fields are refused so typos never pass silently, and
    types are strict: `"timeout": "600"` is refused, not read as 600."""

    model_config = ConfigDict(extra="forbid", strict=True)

    crew: Annotated[str, Field(min_length=1, max_length=100)]
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="The crew's inputs; GET /v1/crews/{name} names them."
    )
    webhook_url: WebhookUrl | None = Field(
        default=None, description="Receives this job's outcome (completed, failed, cancelled)."
    )
    timeout: Annotated[int, Field(strict=True, ge=1, le=MAX_TIMEOUT_S), WHOLE] | None = Field(
        default=None, description="Seconds; default: the crew's, then the platform's."
    )
    max_retries: Annotated[int, Field(strict=True, ge=0, le=MAX_RETRIES), WHOLE] | None = None
    input_timeout: (
        Annotated[int, Field(strict=True, ge=1, le=MAX_INPUT_TIMEOUT_S), WHOLE] | None
    ) = Field(
        default=None,
        description="Seconds a task asking for a person's input waits for an answer before"
        " `input_default` is taken; default: the crew's, then the platform's.",
    )
    input_default: InputDefault | None = Field(
        default=None,
        strict=False,  # JSON gives an enum as its string
        description="What an unanswered request for input comes to; default: the crew's,"
        " then the platform's.",
    )
    delay: Annotated[int, Field(strict=True, ge=0, le=MAX_DELAY_S), WHOLE] | None = Field(
        default=None,
        description="Seconds to wait before it may start (it is `scheduled` until then);"
        " not with `run_at`.",
    )
    run_at: AwareDatetime | None = Field(
        default=None,
        strict=False,  # JSON gives a time as its ISO 8601 string
        description="When it may start, ISO 8601 with an offset (a minute in the past at the"
        " most); not with `delay`.",
    )
    priority: Annotated[int, Field(strict=True, ge=-MAX_PRIORITY, le=MAX_PRIORITY), WHOLE] = Field(
        default=0,
        description="Among its tenant's jobs waiting for a slot, higher starts first.",
    )
    ttl: Annotated[int, Field(strict=True, ge=1, le=MAX_DELAY_S), WHOLE] | None = Field(
        default=None,
        description="Seconds (from submission, or from `run_at`/`delay`) it may wait to"
        " start; then it is `expired` and never starts.",
    )
    concurrency: Concurrency | None = Field(
        default=None,
        description="A key shared by jobs of which at most `limit` may run at once, and"
        " what this one does when the key is busy.",
    )
    budget: Budget | None = Field(
        default=None,
        description="What the job may spend; each limit left out takes the crew's, then the"
        " platform's default. Past it the job fails with BUDGET_EXCEEDED, keeping its"
        " finished tasks: retried with a larger budget, it resumes after them.",
    )
    metadata: Metadata = Field(
        default_factory=dict,
        description=f"Up to {MAX_METADATA_KEYS} keys of yours, kept with the job; strings"
        f" up to {MAX_METADATA_STRING} characters and objects nested up to"
        f" {MAX_METADATA_DEPTH} deep. Inputs and metadata together are bounded too"
        " (CREWQ_JOB_MAX_INPUT_BYTES).",
    )

    @model_validator(mode="after")
    def _one_start_time(self) -> "JobCreate":
        if self.delay is not None and self.run_at is not None:
            raise ValueError("give `delay` or `run_at`, not both")
        return self


class JobBatchRead(BaseModel):
    """Body of `POST /v1/jobs/batch`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ids: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64)]],
        Field(min_length=1, max_length=MAX_BATCH_IDS),
    ]


class JobError(BaseModel):
    code: ErrorCode
    message: str


_TRUNCATED = (
    "True: the output was larger than crewq stores (CREWQ_JOB_MAX_OUTPUT_BYTES): `raw` holds"
    " its start, and `structured` is left out when it alone took more than half the bound."
)
_ORIGINAL_BYTES = "When truncated: the size of the whole output (raw text plus structured) as JSON."


class TaskResult(BaseModel):
    name: str | None
    agent: str | None
    raw: str
    structured: dict[str, Any] | None = None
    truncated: bool = Field(default=False, description=_TRUNCATED)
    original_bytes: int | None = Field(default=None, description=_ORIGINAL_BYTES)


class JobResult(BaseModel):
    raw: str
    structured: dict[str, Any] | None = None
    truncated: bool = Field(default=False, description=_TRUNCATED)
    original_bytes: int | None = Field(default=None, description=_ORIGINAL_BYTES)
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
    resumed_from: str | None = Field(
        default=None,
        description="The task this attempt resumed after, from the job's checkpoint; null:"
        " it ran the crew from its first task.",
    )


class InputRequest(BaseModel):
    """What a job in `awaiting_input` asks a person."""

    task: str = Field(description="The task that asks.")
    task_index: int = Field(description="Its place in the crew, from 1.")
    output: str = Field(description="The task's answer so far, for the person to review.")
    prompt: str = Field(description="What is asked.")
    asked_at: datetime
    expires_at: datetime = Field(description="When `default_action` is taken without an answer.")
    default_action: InputDefault


class InputAnswer(BaseModel):
    """Body of `POST /v1/jobs/{id}/input`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    feedback: Annotated[str, Field(max_length=MAX_FEEDBACK_CHARS)] = Field(
        default="",
        description="What the person says about the task's answer. With `approve: false`"
        " the task runs again with this feedback, and asks again.",
    )
    approve: bool = Field(
        default=True,
        description="true: the answer stands and the crew goes on; false: the task is done"
        " again with the feedback.",
    )


class JobRetry(BaseModel):
    """Body of `POST /v1/jobs/{id}/retry` (optional)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    from_: ResumeFrom = Field(
        default=ResumeFrom.CHECKPOINT,
        alias="from",
        strict=False,  # JSON gives an enum as its string
        description="checkpoint: resume after the last task the crew finished; start: run it"
        " from its first task.",
    )
    budget: Budget | None = Field(
        default=None,
        description="Replaces the job's budget (each limit given); what it spent so far counts.",
    )


class Progress(BaseModel):
    """How far a running crew is, as its tasks start and finish."""

    completed_tasks: int
    total_tasks: int
    current_task: str | None = Field(description="The task running now, if one is.")


class JobState(BaseModel):
    """A job's state: what its events carry. Not its inputs or metadata, which never change
    (read the job for those), nor its attempt history."""

    object: Literal["job"] = "job"
    id: str
    livemode: bool = Field(description="False: submitted with a test key, run offline.")
    status: JobStatus
    crew: str
    attempt: int = Field(description="How many attempts have started.")
    max_retries: int
    result: JobResult | None
    progress: Progress | None = Field(description="Set once the crew starts its first task.")
    token_usage: dict[str, Any] | None = Field(
        description="Tokens spent so far (the running total while the job runs)."
    )
    error: JobError | None
    worker_id: str | None
    input_request: InputRequest | None = Field(
        default=None, description="Set while the job is `awaiting_input`: what it asks."
    )
    usage: Usage | None = Field(
        default=None,
        description="What it has spent on models, over all its attempts, in total and per"
        " task (tokens, cost in US dollars, calls).",
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class Job(JobState):
    """A job as `GET /v1/jobs/{id}` shows it."""

    inputs: dict[str, Any]
    metadata: dict[str, Any]
    webhook_url: str | None
    timeout: int
    input_timeout: int | None = Field(description="As submitted; null: the crew's or platform's.")
    input_default: InputDefault | None = Field(
        description="As submitted; null: the crew's or platform's."
    )
    budget: Budget | None = Field(
        default=None, description="Its limits: the request's, else the crew's or platform's."
    )
    priority: int = Field(default=0, description="Higher starts first among its tenant's.")
    concurrency_key: str | None = Field(default=None, description="See `concurrency`.")
    concurrency_limit: int | None = None
    run_at: datetime | None = Field(
        default=None, description="When it may start (its first attempt, or its next)."
    )
    expires_at: datetime | None = Field(
        default=None, description="When it expires if it has not started."
    )
    attempts: list[JobAttempt]
    last_activity_at: datetime | None
    cancel_requested_at: datetime | None


class JobBatch(BaseModel):
    """The caller's jobs among the ids asked for, in the order asked; others are absent."""

    object: Literal["list"] = "list"
    data: list[Job]
    omitted: list[str] = Field(
        default=[],
        description="The caller's jobs among those asked for that did not fit in this answer's"
        " size bound (CREWQ_API_MAX_PAGE_BYTES), in the order asked: ask for them again.",
    )


JobList = Page[Job]
