"""CrewAI AMP's kickoff and resume (docs/amp.md), as crewq's submission and answer to a
waiting job plus the execution's webhook URLs and meta (`shared/store/amp_kickoffs.py`).
Typed answers; the API only maps them to HTTP."""

from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from schemas.amp import AmpKickoff, AmpResume, AmpWebhookUrls
from schemas.jobs import InputAnswer, JobCreate, JobStatus
from shared.domain import submissions
from shared.domain.crews import CrewRegistry, CrewSpec
from shared.runtime.limits import json_size
from shared.runtime.settings import Settings
from shared.store import amp_kickoffs, jobs
from shared.store.amp_kickoffs import HookUrls, Kickoff, TaskText
from shared.store.keys import Principal
from shared.webhooks.urls import UrlPolicy, UrlRefused

_URL_FIELDS = ("taskWebhookUrl", "stepWebhookUrl", "crewWebhookUrl")


def hook_urls(body: AmpWebhookUrls) -> HookUrls:
    return HookUrls(body.taskWebhookUrl, body.stepWebhookUrl, body.crewWebhookUrl)


async def refused_url(
    urls: UrlPolicy, body: AmpWebhookUrls
) -> submissions.InvalidWebhookUrl | None:
    """The first of the body's webhook URLs the URL policy refuses, naming its field."""
    for name in _URL_FIELDS:
        url: str | None = getattr(body, name)
        if url is None:
            continue
        try:
            await urls.check(url)
        except UrlRefused as exc:
            return submissions.InvalidWebhookUrl(f"{name}: {exc}")
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def fill(template: Any, inputs: dict[str, Any]) -> str | None:
    """A task's text with `{input}` placeholders filled in, as CrewAI fills them."""
    if not isinstance(template, str):
        return None
    text: str = template
    for name, value in inputs.items():
        text = text.replace(f"{{{name}}}", _text(value))
    return text


def task_texts(spec: CrewSpec, inputs: dict[str, Any]) -> dict[str, TaskText]:
    """What AMP's task webhook says of each task: its description, expected output and the
    role of its agent (a task waiting for a person is reported before its agent is)."""
    return {
        name: TaskText(
            fill(task.get("description"), inputs),
            fill(task.get("expected_output"), inputs),
            fill(spec.agents.get(str(task.get("agent")), {}).get("role"), inputs),
        )
        for name, task in spec.tasks.items()
    }


async def kickoff(
    db: asyncpg.Pool,
    registry: CrewRegistry,
    settings: Settings,
    urls: UrlPolicy,
    principal: Principal,
    crew: str,
    body: AmpKickoff,
    *,
    traceparent: str | None,
) -> submissions.Submitted | submissions.Refused:
    """Submit a job of `crew`, as `POST /v1/jobs` does, and keep the execution's webhook URLs,
    meta and task texts. The caller queues the job once this returns (`Submitted.after`):
    the execution's row is written before, so no event of the job is owed without it."""
    spec = registry.get(crew)
    if spec is None:
        return submissions.UnknownCrew(crew, sorted(registry.crews))
    if refused := await refused_url(urls, body):
        return refused
    # meta is stored with the job and sent in every webhook: bounded with the inputs.
    inputs_size, meta_size = json_size(body.inputs), json_size(body.meta)
    if inputs_size + meta_size > settings.job_max_input_bytes:
        field = "inputs" if inputs_size >= meta_size else "meta"
        return submissions.TooLarge(field, inputs_size + meta_size, settings.job_max_input_bytes)
    answer = await submissions.submit(
        db,
        registry,
        settings,
        urls,
        principal,
        JobCreate(crew=spec.name, inputs=body.inputs),
        raw_body=b"",
        idempotency_key=None,
        traceparent=traceparent,
    )
    if isinstance(answer, submissions.Submitted):
        await amp_kickoffs.record(
            db,
            Kickoff(answer.job.id, hook_urls(body), body.meta, task_texts(spec, body.inputs)),
        )
    return answer


@dataclass(frozen=True)
class Resumed:
    after: jobs.AfterCommit
    approved: bool


@dataclass(frozen=True)
class NotFound:
    """No execution of this crew with that id for the caller."""


@dataclass(frozen=True)
class NotAwaiting:
    """The execution waits for no person (answered already, or it never asked)."""

    status: JobStatus


@dataclass(frozen=True)
class WrongTask:
    """The execution waits on another task than the one named."""

    waiting_on: str


ResumeRefused = NotFound | NotAwaiting | WrongTask | submissions.InvalidWebhookUrl


async def resume(
    db: asyncpg.Pool,
    registry: CrewRegistry,
    urls: UrlPolicy,
    principal: Principal,
    crew: str,
    body: AmpResume,
) -> Resumed | ResumeRefused:
    """Answer the task an execution waits on (`jobs.answer_input`). Webhook URLs given
    replace the kickoff's; those left out are kept (AMP forgets them; crewq does not).
    The caller queues the job once this returns (`Resumed.after`), so the new URLs are in
    place before the crew takes up again."""
    if refused := await refused_url(urls, body):
        return refused
    owner = principal.owner
    job = await jobs.get(db, owner, body.execution_id)
    if job is None or job.crew != crew:
        return NotFound()
    if job.status is not JobStatus.AWAITING_INPUT or job.input_request is None:
        return NotAwaiting(job.status)
    if job.input_request.task != body.task_id:
        return WrongTask(job.input_request.task)
    answer = InputAnswer(feedback=body.human_feedback, approve=body.is_approve)
    answered = await jobs.answer_input(db, owner, job.id, answer)
    if answered.outcome is jobs.AnswerOutcome.NOT_FOUND:
        return NotFound()
    if answered.outcome is jobs.AnswerOutcome.NOT_AWAITING:
        return NotAwaiting(JobStatus.PENDING)
    given = hook_urls(body)
    if given != HookUrls() and not await amp_kickoffs.replace_urls(db, job.id, given):
        # A job submitted through /v1/jobs, resumed through AMP: its execution starts here.
        spec = registry.get(crew)
        texts = task_texts(spec, job.inputs) if spec else {}
        await amp_kickoffs.record(db, Kickoff(job.id, given, None, texts))
    return Resumed(answered.after, body.is_approve)
