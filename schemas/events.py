"""Webhook events: the envelope every delivery carries, and what each type's `data` holds."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from schemas.jobs import TaskResult


class EventType(StrEnum):
    JOB_STARTED = "job.started"
    JOB_COMPLETED = "job.completed"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    JOB_RETRYING = "job.retrying"
    TASK_COMPLETED = "task.completed"
    WEBHOOK_TEST = "webhook.test"


# What a job's own `webhook_url` receives: the outcome only, not every step.
JOB_URL_EVENTS = frozenset({EventType.JOB_COMPLETED, EventType.JOB_FAILED, EventType.JOB_CANCELLED})


class Event(BaseModel):
    id: str
    type: EventType
    livemode: bool = Field(default=True, description="False: caused by a test key's job.")
    created_at: datetime
    data: dict[str, Any]


class TaskCompleted(BaseModel):
    """`data` of a `task.completed` event."""

    job_id: str
    attempt: int
    task: TaskResult


class WebhookTest(BaseModel):
    """`data` of a `webhook.test` event."""

    endpoint_id: str
    message: str = "a test event from crewq"
