"""The body of a delivery: crewq's event envelope as stored, or one of CrewAI AMP's three
webhook payloads rendered from it (docs/amp.md).

Rendering reads the stored event leniently, key by key: an event stored by another release,
or cut to its size bound, still renders, with what is missing as null. A delivery that
cannot be rendered would never be sent, and the retry loop would spin on it."""

from collections.abc import Callable
from typing import Any

import orjson
from pydantic import BaseModel

from schemas.amp import (
    AmpCrewWebhook,
    AmpState,
    AmpStatusValue,
    AmpStepWebhook,
    AmpTaskWebhook,
    DeliveryFormat,
)
from schemas.events import EventType
from shared.store.deliveries import Due

# CrewAI's TaskOutput.summary: the description's first words.
_SUMMARY_WORDS = 10


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def summary(description: str | None) -> str | None:
    if not description:
        return None
    return " ".join(description.split()[:_SUMMARY_WORDS]) + "..."


class Context:
    """An execution as the claim read it from `amp_kickoffs`: its meta and task texts."""

    def __init__(self, amp: dict[str, Any] | None) -> None:
        amp = amp or {}
        self.meta: Any = amp.get("meta")
        self._tasks = _dict(amp.get("tasks"))

    def task(self, name: str | None) -> dict[str, Any]:
        return _dict(self._tasks.get(name)) if name else {}


def task_webhook(event: dict[str, Any], context: Context) -> AmpTaskWebhook:
    data = _dict(event.get("data"))
    if event.get("type") == EventType.JOB_INPUT_REQUIRED:
        # A task waits for a person: its output so far, and what is asked.
        kickoff_id = str(data.get("id", ""))
        asked = _dict(data.get("input_request"))
        name, agent, output, structured = _str(asked.get("task")), None, asked.get("output"), None
        status, prompt = AmpStatusValue.PENDING_HUMAN_INPUT.value, _str(asked.get("prompt"))
    else:
        kickoff_id = str(data.get("job_id", ""))
        task = _dict(data.get("task"))
        name, agent, output = _str(task.get("name")), _str(task.get("agent")), task.get("raw")
        structured, status, prompt = task.get("structured"), AmpStatusValue.COMPLETED.value, None
    text = context.task(name)
    description = _str(text.get("description"))
    return AmpTaskWebhook(
        description=description,
        name=name,
        expected_output=_str(text.get("expected_output")),
        summary=summary(description),
        agent=agent or _str(text.get("agent")),
        output=output if isinstance(output, str) else "",
        output_json=structured if isinstance(structured, dict) else None,
        kickoff_id=kickoff_id,
        meta=context.meta,
        task_id=name,
        status=status,
        execution_id=kickoff_id,
        prompt=prompt,
    )


def step_webhook(event: dict[str, Any], context: Context) -> AmpStepWebhook:
    data = _dict(event.get("data"))
    task = _str(data.get("task"))
    tool_call = event.get("type") == EventType.TOOL_COMPLETED
    given = data.get("input")
    return AmpStepWebhook(
        prompt=_str(context.task(task).get("description")),
        thought=None,
        tool=_str(data.get("tool")) if tool_call else None,
        tool_input=(
            given if isinstance(given, str) else orjson.dumps(given).decode() if given else None
        ),
        result=_str(data.get("output")) if tool_call else _str(data.get("error")),
        kickoff_id=str(data.get("job_id", "")),
        meta=context.meta,
        task_id=task,
        agent=_str(data.get("agent")),
        step_type="tool" if tool_call else "llm",
    )


def crew_webhook(event: dict[str, Any], context: Context) -> AmpCrewWebhook:
    data = _dict(event.get("data"))
    result = _dict(data.get("result"))
    completed = event.get("type") == EventType.JOB_COMPLETED
    error = _dict(data.get("error"))
    structured = result.get("structured")
    usage = data.get("token_usage")
    return AmpCrewWebhook(
        kickoff_id=str(data.get("id", "")),
        result=_str(result.get("raw")),
        result_json=structured if isinstance(structured, dict) else None,
        token_usage=usage if isinstance(usage, dict) else None,
        meta=context.meta,
        status=AmpStatusValue.COMPLETED if completed else AmpStatusValue.ERROR,
        state=AmpState.SUCCESS if completed else AmpState.FAILED,
        error=None if completed else _str(error.get("message")) or _why_not(data),
    )


def _why_not(data: dict[str, Any]) -> str | None:
    """A cancelled execution has no error of its own: say it was cancelled."""
    return "cancelled" if data.get("status") == "cancelled" else None


_RENDER: dict[DeliveryFormat, Callable[[dict[str, Any], Context], BaseModel]] = {
    DeliveryFormat.AMP_TASK: task_webhook,
    DeliveryFormat.AMP_STEP: step_webhook,
    DeliveryFormat.AMP_CREW: crew_webhook,
}


def render(format: DeliveryFormat, event: dict[str, Any], amp: dict[str, Any] | None) -> BaseModel:
    """An AMP payload of the stored `event`."""
    return _RENDER[format](event, Context(amp))


def body_of(due: Due) -> bytes:
    """The bytes a delivery sends."""
    if due.format is DeliveryFormat.CREWQ:
        return orjson.dumps(due.payload)
    return orjson.dumps(render(due.format, due.payload, due.amp).model_dump(mode="json"))
