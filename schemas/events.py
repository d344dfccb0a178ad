"""Webhook events: the envelope every delivery carries, and what each type's `data` holds."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from schemas.jobs import TaskResult
from schemas.pages import Page


class EventType(StrEnum):
    JOB_STARTED = "job.started"
    JOB_COMPLETED = "job.completed"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    JOB_RETRYING = "job.retrying"
    JOB_INPUT_REQUIRED = "job.input_required"
    JOB_INPUT_RECEIVED = "job.input_received"
    JOB_RESUMED = "job.resumed"
    JOB_EXPIRED = "job.expired"
    TASK_STARTED = "task.started"
    TASK_COMPLETED = "task.completed"
    TOOL_COMPLETED = "tool.completed"
    LLM_COMPLETED = "llm.completed"
    LLM_THROTTLED = "llm.throttled"
    WEBHOOK_TEST = "webhook.test"


# What a job's own `webhook_url` receives: the outcome only, not every step.
# And a request for a person's input, which someone must answer.
JOB_URL_EVENTS = frozenset(
    {
        EventType.JOB_COMPLETED,
        EventType.JOB_FAILED,
        EventType.JOB_CANCELLED,
        EventType.JOB_EXPIRED,
        EventType.JOB_INPUT_REQUIRED,
    }
)
# The steps of a running crew, many per job: an endpoint receives these only when it names
# them; `*` does not include them, so a receiver is never flooded by a type it never chose.
STEP_EVENTS = frozenset(
    {
        EventType.TASK_STARTED,
        EventType.TOOL_COMPLETED,
        EventType.LLM_COMPLETED,
        EventType.LLM_THROTTLED,
    }
)


class Event(BaseModel):
    id: str
    type: EventType
    livemode: bool = Field(default=True, description="False: caused by a test key's job.")
    created_at: datetime
    data: dict[str, Any]
    truncated: bool = Field(
        default=False,
        description="True: `data` was larger than crewq stores for an event, and its longest"
        " strings were cut (read the job for its whole stored result).",
    )
    original_bytes: int | None = Field(
        default=None, description="When truncated: the size of the whole `data` as JSON."
    )


# GET /v1/jobs/{id}/events: a job's events oldest first (unlike other pages); the
# `next_cursor` is the `after` of the next page.
EventList = Page[Event]


class TaskCompleted(BaseModel):
    """`data` of a `task.completed` event."""

    job_id: str
    attempt: int
    task: TaskResult


class TaskStarted(BaseModel):
    """`data` of a `task.started` event."""

    job_id: str
    attempt: int
    task: str = Field(description="The task's name.")
    agent: str | None = Field(description="The role of the agent doing it.")
    index: int = Field(description="Its place in the crew, from 1.")
    total_tasks: int


class ToolCompleted(BaseModel):
    """`data` of a `tool.completed` event: one call of a tool by an agent."""

    job_id: str
    attempt: int
    task: str | None
    agent: str | None
    tool: str
    input: dict[str, Any] | str = Field(description="The arguments the agent gave.")
    output: str | None = Field(description="The start of what the tool returned.")
    duration_ms: int
    from_cache: bool = False
    error: str | None = None


class LlmCompleted(BaseModel):
    """`data` of an `llm.completed` event: one call of a model."""

    job_id: str
    attempt: int
    task: str | None
    agent: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    duration_ms: int
    error: str | None = None


class LlmThrottled(BaseModel):
    """`data` of an `llm.throttled` event: a model call waited for its model's shared limit
    (`crewq models set`, CREWQ_MODEL_LIMITS) or a provider's `Retry-After`."""

    job_id: str
    attempt: int
    model: str
    waited_ms: int


class JobResumed(BaseModel):
    """`data` of a `job.resumed` event: an attempt took up the crew from its checkpoint."""

    job_id: str
    attempt: int
    after_task: str = Field(description="The last task the checkpoint holds as finished.")
    tasks_done: int = Field(description="How many of the crew's tasks it skipped.")


class WebhookTest(BaseModel):
    """`data` of a `webhook.test` event."""

    endpoint_id: str
    message: str = "a test event from crewq"
