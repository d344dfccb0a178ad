"""Size bounds in the queries (issue 19), against real Postgres: pages and batches stop at
their byte budget with more to follow, a stored result and an event are cut and marked."""

import asyncpg

from schemas.events import EventType, TaskStarted
from schemas.jobs import AttemptOutcome, Job, JobResult, TaskResult
from shared.domain.owners import Owner
from shared.store import events, job_attempts, jobs
from tests.integration.factories import start, submit, tenant

KIB = 1024


async def _large_jobs(db: asyncpg.Pool, tenant_id: str, count: int) -> list[Job]:
    """`count` jobs of 40 KiB of inputs each, oldest first."""
    return [
        await submit(db, tenant_id, inputs={"message": f"{i}" + "y" * 40 * KIB})
        for i in range(count)
    ]


async def test_a_page_stops_at_its_byte_budget_and_the_cursor_pages_on(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    made = await _large_jobs(db, tenant_id, 7)
    newest_first = [j.id for j in reversed(made)]
    seen: list[str] = []
    cursor: str | None = None
    sizes: list[int] = []
    while True:
        page, more = await jobs.page(
            db, Owner(tenant_id), jobs.JobFilter(), before=cursor, limit=100, max_bytes=100 * KIB
        )
        sizes.append(len(page))
        seen += [j.id for j in page]
        if not more:
            break
        cursor = page[-1].id
    # Two 41 KiB jobs fit in 100 KiB, a third would not: every job once, in order.
    assert seen == newest_first and sizes == [2, 2, 2, 1]
    # A job larger than the whole budget still comes, alone: the client always moves on.
    page, more = await jobs.page(
        db, Owner(tenant_id), jobs.JobFilter(), before=None, limit=100, max_bytes=10 * KIB
    )
    assert [j.id for j in page] == newest_first[:1] and more
    # The limit still applies under the budget, and a roomy budget changes nothing.
    page, more = await jobs.page(
        db, Owner(tenant_id), jobs.JobFilter(), before=None, limit=3, max_bytes=10_000 * KIB
    )
    assert [j.id for j in page] == newest_first[:3] and more
    page, more = await jobs.page(
        db, Owner(tenant_id), jobs.JobFilter(), before=None, limit=7, max_bytes=10_000 * KIB
    )
    assert [j.id for j in page] == newest_first and not more
    empty, more = await jobs.page(
        db, Owner(await tenant(db)), jobs.JobFilter(), before=None, limit=7
    )
    assert empty == [] and not more


async def test_a_batch_stops_at_its_byte_budget_and_names_the_jobs_left_out(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    a, b, c = await _large_jobs(db, tenant_id, 3)
    foreign = await submit(db, await tenant(db))
    asked = [c.id, foreign.id, a.id, "job_missing", b.id, c.id]
    found, omitted = await jobs.many(db, Owner(tenant_id), asked, max_bytes=100 * KIB)
    assert [j.id for j in found] == [c.id, a.id] and omitted == [b.id]
    found, omitted = await jobs.many(db, Owner(tenant_id), asked, max_bytes=10 * KIB)
    assert [j.id for j in found] == [c.id] and omitted == [a.id, b.id]


async def test_an_events_page_stops_at_its_byte_budget(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id)
    made = []
    for i in range(5):
        data = TaskStarted(
            job_id=job.id, attempt=1, task="t" * 30 * KIB, agent=None, index=i, total_tasks=5
        )
        async with db.acquire() as conn, conn.transaction():
            emitted = await events.emit(
                conn, tenant_id=tenant_id, type=EventType.TASK_STARTED, data=data, job_id=job.id
            )
        made.append(emitted.event.id)
    seen: list[str] = []
    after: str | None = None
    while True:
        found = await events.page(db, job.id, after=after, limit=100, max_bytes=70 * KIB)
        assert found is not None
        page, more = found
        assert 1 <= len(page) <= 2
        seen += [e.id for e in page]
        if not more:
            break
        after = page[-1].id
    assert seen == made
    page_of_all = await events.page(db, job.id, after=None, limit=5, max_bytes=1000 * KIB)
    assert page_of_all is not None and len(page_of_all[0]) == 5 and not page_of_all[1]


async def test_a_large_result_is_stored_cut_and_marked_and_so_is_its_event(
    db: asyncpg.Pool,
) -> None:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id)
    claim = await start(db, job.id)
    echoed = "z" * 200 * KIB
    result = JobResult(
        raw=echoed,
        tasks=[TaskResult(name="reply", agent="Responder", raw=echoed)],
        models=["crewq/offline"],
        offline=True,
    )
    moved = await job_attempts.end_attempt(
        db, claim, AttemptOutcome.COMPLETED, result=result, max_output_bytes=16 * KIB
    )
    assert moved is not None
    stored = await jobs.get(db, Owner(tenant_id), job.id)
    assert stored is not None and stored.result is not None
    assert stored.result.truncated and stored.result.original_bytes == len(echoed) + 2
    assert len(stored.result.raw) == 16 * KIB - 2 and echoed.startswith(stored.result.raw)
    [task] = stored.result.tasks
    assert task.truncated and task.original_bytes == len(echoed) + 2
    # The job.completed event carries both outputs: more than an event holds, so its
    # longest strings are cut too, and the event says so.
    page = await events.page(db, job.id, after=None, limit=10)
    assert page is not None
    completed = next(e for e in page[0] if e.type == EventType.JOB_COMPLETED)
    assert completed.truncated and completed.original_bytes is not None
    assert completed.original_bytes > 32 * KIB
    size = await db.fetchval(
        "SELECT octet_length((payload->'data')::text) FROM events WHERE id = $1", completed.id
    )
    assert size <= 16 * KIB + 4 * KIB + 200  # jsonb's text puts a space after each : and ,
    started = next(e for e in page[0] if e.type == EventType.JOB_STARTED)
    assert not started.truncated and started.original_bytes is None
