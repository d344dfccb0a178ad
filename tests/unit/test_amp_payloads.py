"""AMP's webhook payloads rendered from crewq's stored events, and a job as AMP's status."""

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from api.routes.amp import status_of
from schemas.amp import (
    AmpCrewWebhook,
    AmpState,
    AmpStatusValue,
    AmpStepWebhook,
    AmpTaskWebhook,
    DeliveryFormat,
)
from schemas.events import EventType
from schemas.jobs import Job
from shared.domain.amp import fill
from shared.store.deliveries import Due
from worker.dispatcher.amp import body_of, render

META = {"requestId": "travel-req-123", "source": "web-app"}
AMP = {
    "meta": META,
    "tasks": {
        "research": {
            "description": "Research the financial industry for potential AI solutions today",
            "expected_output": "A report",
            "agent": "Research Agent",
        }
    },
}
AT = datetime(2026, 1, 1, tzinfo=UTC)


def _event(type: EventType, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": "evt_1", "type": type.value, "created_at": AT.isoformat(), "data": data}


def _job(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "job_1",
        "livemode": True,
        "status": "running",
        "crew": "review",
        "attempt": 1,
        "max_retries": 2,
        "result": None,
        "progress": None,
        "token_usage": None,
        "error": None,
        "worker_id": None,
        "input_request": None,
        "created_at": AT,
        "started_at": AT,
        "finished_at": None,
    }
    return {**base, **fields}


def test_a_finished_task_renders_as_amp_s_task_webhook() -> None:
    event = _event(
        EventType.TASK_COMPLETED,
        {
            "job_id": "job_1",
            "attempt": 1,
            "task": {
                "name": "research",
                "agent": "Research Agent",
                "raw": "**Report**",
                "structured": {"industry": "financial"},
            },
        },
    )
    rendered = render(DeliveryFormat.AMP_TASK, event, AMP)
    assert rendered == AmpTaskWebhook(
        description="Research the financial industry for potential AI solutions today",
        name="research",
        expected_output="A report",
        summary="Research the financial industry for potential AI solutions today...",
        agent="Research Agent",
        output="**Report**",
        output_json={"industry": "financial"},
        kickoff_id="job_1",
        meta=META,
        task_id="research",
        status="completed",
        execution_id="job_1",
        prompt=None,
    )


def test_a_request_for_input_renders_as_a_task_webhook_pending_human_input() -> None:
    asked = {"task": "research", "task_index": 1, "output": "draft", "prompt": "OK?"}
    event = _event(EventType.JOB_INPUT_REQUIRED, _job(input_request=asked))
    rendered = render(DeliveryFormat.AMP_TASK, event, AMP)
    assert isinstance(rendered, AmpTaskWebhook)
    assert (rendered.task_id, rendered.output, rendered.prompt) == ("research", "draft", "OK?")
    assert (rendered.status, rendered.kickoff_id, rendered.agent) == (
        "pending_human_input",
        "job_1",
        "Research Agent",
    )


def test_tool_and_model_calls_render_as_amp_s_step_webhook() -> None:
    tool = _event(
        EventType.TOOL_COMPLETED,
        {
            "job_id": "job_1",
            "task": "research",
            "agent": "Research Agent",
            "tool": "research_tool",
            "input": {"q": "financial AI"},
            "output": "found",
        },
    )
    assert render(DeliveryFormat.AMP_STEP, tool, AMP) == AmpStepWebhook(
        prompt="Research the financial industry for potential AI solutions today",
        thought=None,
        tool="research_tool",
        tool_input='{"q":"financial AI"}',
        result="found",
        kickoff_id="job_1",
        meta=META,
        task_id="research",
        agent="Research Agent",
        step_type="tool",
    )
    llm = _event(EventType.LLM_COMPLETED, {"job_id": "job_1", "task": None, "model": "m"})
    step = render(DeliveryFormat.AMP_STEP, llm, None)
    assert isinstance(step, AmpStepWebhook)
    assert (step.step_type, step.tool, step.prompt, step.meta) == ("llm", None, None, None)


def test_an_outcome_renders_as_amp_s_crew_webhook() -> None:
    usage = {"total_tokens": 1250, "prompt_tokens": 800, "completion_tokens": 450}
    result = {
        "raw": "final",
        "structured": {"score": 9},
        "tasks": [],
        "models": [],
        "offline": True,
    }
    done = _event(
        EventType.JOB_COMPLETED, _job(status="completed", result=result, token_usage=usage)
    )
    assert render(DeliveryFormat.AMP_CREW, done, AMP) == AmpCrewWebhook(
        kickoff_id="job_1",
        result="final",
        result_json={"score": 9},
        token_usage=usage,
        meta=META,
        status=AmpStatusValue.COMPLETED,
        state=AmpState.SUCCESS,
        error=None,
    )
    failed = _event(
        EventType.JOB_FAILED, _job(status="failed", error={"code": "TIMEOUT", "message": "late"})
    )
    crew = render(DeliveryFormat.AMP_CREW, failed, AMP)
    assert isinstance(crew, AmpCrewWebhook)
    assert (crew.status, crew.state, crew.error, crew.result) == ("error", "FAILED", "late", None)
    cancelled = render(
        DeliveryFormat.AMP_CREW, _event(EventType.JOB_CANCELLED, _job(status="cancelled")), None
    )
    assert isinstance(cancelled, AmpCrewWebhook) and cancelled.error == "cancelled"


def test_a_stored_event_missing_its_fields_still_renders() -> None:
    """Cut to its bound, or stored by another release: rendered with nulls, never refused."""
    for format in (DeliveryFormat.AMP_TASK, DeliveryFormat.AMP_STEP, DeliveryFormat.AMP_CREW):
        rendered = render(format, {"type": "task.completed", "data": {"task": "?"}}, {"tasks": 1})
        assert rendered.model_dump()["kickoff_id"] == ""


def _due(format: DeliveryFormat, payload: dict[str, Any]) -> Due:
    return Due(
        id="dlv_1",
        event_id="evt_1",
        event_type=EventType(payload["type"]),
        tenant_id="t",
        endpoint_id=None,
        url="https://x.example",
        origin="https://x.example",
        attempt=1,
        payload=payload,
        secrets=["whsec_x"],
        traceparent=None,
        format=format,
        amp=AMP,
    )


def test_a_delivery_sends_crewq_s_envelope_or_the_amp_body() -> None:
    event = _event(EventType.JOB_CANCELLED, _job(status="cancelled"))
    assert body_of(_due(DeliveryFormat.CREWQ, event)) == orjson.dumps(event)
    amp = orjson.loads(body_of(_due(DeliveryFormat.AMP_CREW, event)))
    assert (amp["kickoff_id"], amp["meta"], amp["state"]) == ("job_1", META, "FAILED")


def test_inputs_fill_the_task_texts_as_crewai_does() -> None:
    assert fill("About {topic} in {year}", {"topic": "zebras", "year": 2026}) == (
        "About zebras in 2026"
    )
    assert fill("{a} {b}", {"a": {"x": 1}}) == '{"x":1} {b}'
    assert fill(None, {"a": 1}) is None


def test_a_job_as_amp_s_status_superset() -> None:
    tasks = [
        {"name": "draft", "agent": "Writer", "raw": "one"},
        {"name": "polish", "agent": "Writer", "raw": "two"},
    ]
    result = {"raw": "two", "structured": None, "tasks": tasks, "models": [], "offline": True}
    extra: dict[str, Any] = {
        "inputs": {},
        "metadata": {},
        "webhook_url": None,
        "timeout": 60,
        "input_timeout": None,
        "input_default": None,
        "attempts": [],
        "last_activity_at": None,
        "cancel_requested_at": None,
    }
    done = Job.model_validate(
        {
            **_job(status="completed", result=result, finished_at=AT + timedelta(seconds=3)),
            **extra,
        }
    )
    status = status_of(done)
    assert (status.state, status.status, status.result, status.output) == (
        "SUCCESS",
        "completed",
        "two",
        "two",
    )
    assert [t.task_id for t in status.tasks] == ["draft", "polish"]
    assert status.last_executed_task is not None and status.last_executed_task.output == "two"
    assert status.execution_time == 3.0 and status.error is None

    asked = {
        "task": "polish",
        "task_index": 2,
        "output": "two",
        "prompt": "OK?",
        "asked_at": AT,
        "expires_at": AT + timedelta(hours=1),
        "default_action": "fail",
    }
    waiting = status_of(
        Job.model_validate({**_job(status="awaiting_input", input_request=asked), **extra})
    )
    assert (waiting.state, waiting.status) == ("PENDING", "pending_human_input")
    assert waiting.pending_human_input is not None
    assert waiting.pending_human_input.task_id == "polish"

    for crewq, amp in (("pending", "PENDING"), ("running", "RUNNING"), ("cancelled", "FAILED")):
        assert status_of(Job.model_validate({**_job(status=crewq), **extra})).state == amp
