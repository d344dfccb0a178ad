"""Webhook events: the envelope every delivery carries."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel


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
    created_at: datetime
    data: dict[str, Any]
