"""`amp_kickoffs` against real Postgres: an AMP execution's URLs, meta and task texts, the
deliveries `emit` owes them in AMP's formats, and what a claim hands the dispatcher."""

from typing import Any

import asyncpg

from schemas.amp import DeliveryFormat
from schemas.events import EventType, TaskCompleted, WebhookTest
from schemas.jobs import TaskResult
from shared.store import amp_kickoffs, deliveries, events
from shared.store.amp_kickoffs import HookUrls, Kickoff, TaskText
from tests.integration.factories import BOX, submit, tenant

URLS = HookUrls(task="https://amp.example/task", step="https://amp.example/step", crew=None)
META = {"requestId": "r-1", "nested": [1, "two"]}
TASKS = {"draft": TaskText("Draft a line about zebras", "One sentence.", "Writer")}


async def _kicked_off(db: asyncpg.Pool, **fields: Any) -> tuple[str, str]:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id, **fields)
    await amp_kickoffs.record(db, Kickoff(job.id, URLS, META, TASKS))
    return tenant_id, job.id


async def _emit(db: asyncpg.Pool, tenant_id: str, job_id: str, type: EventType) -> list[str]:
    data = TaskCompleted(
        job_id=job_id, attempt=1, task=TaskResult(name="draft", agent="Writer", raw="a line")
    )
    async with db.acquire() as conn, conn.transaction():
        emitted = await events.emit(
            conn,
            tenant_id=tenant_id,
            type=type,
            data=data,
            job_id=job_id,
            job_webhook_url="https://own.example/hook",
        )
    return emitted.deliveries


async def _owed(db: asyncpg.Pool, ids: list[str]) -> list[tuple[str, str]]:
    rows = await db.fetch(
        "SELECT url, format FROM webhook_deliveries WHERE id = ANY($1::text[]) ORDER BY url", ids
    )
    return [(r["url"], r["format"]) for r in rows]


async def test_an_execution_is_recorded_once_and_read_back(db: asyncpg.Pool) -> None:
    _, job_id = await _kicked_off(db)
    assert await amp_kickoffs.get(db, job_id) == Kickoff(job_id, URLS, META, TASKS)
    # A second record (a resume of a job that already has one) changes nothing.
    await amp_kickoffs.record(db, Kickoff(job_id, HookUrls(crew="https://x.example"), 1, {}))
    assert await amp_kickoffs.get(db, job_id) == Kickoff(job_id, URLS, META, TASKS)
    assert await amp_kickoffs.get(db, "job_none") is None


async def test_a_resume_replaces_the_urls_it_gives_and_keeps_the_others(
    db: asyncpg.Pool,
) -> None:
    _, job_id = await _kicked_off(db)
    assert await amp_kickoffs.replace_urls(db, job_id, HookUrls(crew="https://amp.example/c2"))
    found = await amp_kickoffs.get(db, job_id)
    assert found is not None
    assert found.urls == HookUrls(URLS.task, URLS.step, "https://amp.example/c2")
    assert found.meta == META and found.tasks == TASKS
    assert not await amp_kickoffs.replace_urls(db, "job_none", HookUrls(task="https://x.example"))


async def test_emit_owes_each_event_to_the_amp_url_of_its_kind(db: asyncpg.Pool) -> None:
    tenant_id, job_id = await _kicked_off(db)
    own = ("https://own.example/hook", DeliveryFormat.CREWQ)
    task = (URLS.task, DeliveryFormat.AMP_TASK)
    step = (URLS.step, DeliveryFormat.AMP_STEP)
    assert await _owed(db, await _emit(db, tenant_id, job_id, EventType.TASK_COMPLETED)) == [task]
    assert await _owed(db, await _emit(db, tenant_id, job_id, EventType.LLM_COMPLETED)) == [step]
    assert await _owed(db, await _emit(db, tenant_id, job_id, EventType.TOOL_COMPLETED)) == [step]
    # The request for a person goes to the job's own URL and to AMP's task webhook.
    asked = await _emit(db, tenant_id, job_id, EventType.JOB_INPUT_REQUIRED)
    assert await _owed(db, asked) == [task, own]
    # No crew URL was given: the outcome goes to the job's own URL only.
    assert await _owed(db, await _emit(db, tenant_id, job_id, EventType.JOB_COMPLETED)) == [own]
    assert await _emit(db, tenant_id, job_id, EventType.JOB_STARTED) == []


async def test_a_job_not_kicked_off_through_amp_owes_nothing_more(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id)
    assert await _emit(db, tenant_id, job.id, EventType.TASK_COMPLETED) == []


async def test_a_claim_hands_the_dispatcher_the_format_meta_and_task_texts(
    db: asyncpg.Pool,
) -> None:
    tenant_id, job_id = await _kicked_off(db)
    [delivery_id] = await _emit(db, tenant_id, job_id, EventType.TASK_COMPLETED)
    [due] = await deliveries.claim(db, 10, 60, [], per_url=10, busy={}, box=BOX)
    assert (due.id, due.format, due.url, due.endpoint_id) == (
        delivery_id,
        DeliveryFormat.AMP_TASK,
        URLS.task,
        None,
    )
    assert due.amp == {
        "meta": META,
        "tasks": {
            "draft": {
                "description": "Draft a line about zebras",
                "expected_output": "One sentence.",
                "agent": "Writer",
            }
        },
    }
    # Signed as the job's own URL is: with the tenant's secret.
    assert due.secrets and due.event_type is EventType.TASK_COMPLETED


async def test_a_crewq_delivery_is_claimed_as_before(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    async with db.acquire() as conn, conn.transaction():
        await events.emit(
            conn,
            tenant_id=tenant_id,
            type=EventType.JOB_COMPLETED,
            data=WebhookTest(endpoint_id="x"),
            job_webhook_url="https://own.example/hook",
        )
    [due] = await deliveries.claim(db, 10, 60, [], per_url=10, busy={}, box=BOX)
    assert (due.format, due.amp) == (DeliveryFormat.CREWQ, None)


async def test_an_execution_goes_with_its_job(db: asyncpg.Pool) -> None:
    _, job_id = await _kicked_off(db)
    await db.execute("DELETE FROM jobs WHERE id = $1", job_id)
    assert await amp_kickoffs.get(db, job_id) is None
