"""Executions kicked off through CrewAI AMP's per-crew API (`/amp/{crew}`, docs/amp.md):
every statement on `amp_kickoffs`.

A row holds the three webhook URLs an AMP client gave, its `meta`, and the texts of the
crew's tasks as the job's inputs fill them in (AMP's task webhook carries them). `events.emit`
asks `targets` where each event of the job goes besides crewq's own targets, so AMP's
webhooks are owed in the same transaction as the event, retried and signed as every
other delivery; the dispatcher's claim reads `meta` and `tasks` to render the AMP body.
"""

from dataclasses import dataclass
from typing import Any

from schemas.amp import AMP_FORMATS, DeliveryFormat
from schemas.events import EventType
from shared.runtime.db import Conn, Executor, storable
from shared.store.deliveries import Target


@dataclass(frozen=True)
class HookUrls:
    """The three URLs of an execution (None: that webhook is not wanted, or, in a resume,
    kept as it was)."""

    task: str | None = None
    step: str | None = None
    crew: str | None = None

    def for_format(self, format: DeliveryFormat) -> str | None:
        return {
            DeliveryFormat.AMP_TASK: self.task,
            DeliveryFormat.AMP_STEP: self.step,
            DeliveryFormat.AMP_CREW: self.crew,
        }.get(format)


@dataclass(frozen=True)
class TaskText:
    """A task's description, expected output and agent's role, its placeholders filled
    with the inputs."""

    description: str | None
    expected_output: str | None
    agent: str | None = None


@dataclass(frozen=True)
class Kickoff:
    job_id: str
    urls: HookUrls
    meta: Any
    tasks: dict[str, TaskText]


def _tasks_json(tasks: dict[str, TaskText]) -> dict[str, Any]:
    return {
        name: {"description": t.description, "expected_output": t.expected_output, "agent": t.agent}
        for name, t in tasks.items()
    }


def _kickoff(row: Any) -> Kickoff:
    return Kickoff(
        job_id=row["job_id"],
        urls=HookUrls(row["task_webhook_url"], row["step_webhook_url"], row["crew_webhook_url"]),
        meta=row["meta"],
        tasks={
            name: TaskText(t.get("description"), t.get("expected_output"), t.get("agent"))
            for name, t in (row["tasks"] or {}).items()
        },
    )


async def record(db: Executor, kickoff: Kickoff) -> None:
    """Keep an execution's URLs, meta and task texts: once, as it is kicked off (or, for a
    job submitted otherwise, at its first AMP resume)."""
    await db.execute(
        "INSERT INTO amp_kickoffs (job_id, task_webhook_url, step_webhook_url,"
        " crew_webhook_url, meta, tasks) VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (job_id) DO NOTHING",
        kickoff.job_id,
        kickoff.urls.task,
        kickoff.urls.step,
        kickoff.urls.crew,
        storable(kickoff.meta),
        _tasks_json(kickoff.tasks),
    )


async def replace_urls(db: Executor, job_id: str, urls: HookUrls) -> bool:
    """A resume's URLs replace the kickoff's; those it leaves out (None) are kept. False:
    the job has no AMP row."""
    status = await db.execute(
        "UPDATE amp_kickoffs SET task_webhook_url = coalesce($2, task_webhook_url),"
        " step_webhook_url = coalesce($3, step_webhook_url),"
        " crew_webhook_url = coalesce($4, crew_webhook_url), updated_at = now()"
        " WHERE job_id = $1",
        job_id,
        urls.task,
        urls.step,
        urls.crew,
    )
    return status != "UPDATE 0"


async def get(db: Executor, job_id: str) -> Kickoff | None:
    row = await db.fetchrow("SELECT * FROM amp_kickoffs WHERE job_id = $1", job_id)
    return _kickoff(row) if row is not None else None


async def targets(conn: Conn, job_id: str, type: EventType) -> list[Target]:
    """Where an event of the job goes in AMP's format (`emit`): the URL of the webhook that
    receives its type, when the execution gave one."""
    format = AMP_FORMATS.get(type)
    if format is None:
        return []
    row = await conn.fetchrow(
        "SELECT task_webhook_url, step_webhook_url, crew_webhook_url FROM amp_kickoffs"
        " WHERE job_id = $1",
        job_id,
    )
    if row is None:
        return []
    url = HookUrls(row["task_webhook_url"], row["step_webhook_url"], row["crew_webhook_url"])
    found = url.for_format(format)
    return [Target(None, found, format)] if found else []
