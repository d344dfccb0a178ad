"""shared/store/bulk_operations.py and the worker's batches (worker/bulk.py) against real
Postgres and Redis: a bulk cancel takes exactly the jobs its filter matched when asked,
running ones included, a batch at a time with its progress readable; two workers never
take the same batch; a bulk retry restarts what may be restarted."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

from schemas.bulk import BulkKind, BulkOperation, BulkStatus, JobSelection
from shared.domain.owners import Owner
from shared.runtime import queue
from shared.store import bulk_operations, jobs
from tests.integration import factories
from worker.bulk import do_batch


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[queue.Redis]:
    client = await queue.connect(redis_url)
    yield client
    await client.aclose()


async def _cancel_all(db: asyncpg.Pool, owner: Owner, selection: JobSelection) -> BulkOperation:
    where = jobs.JobFilter(metadata=selection.metadata, status=selection.status)
    matched = await jobs.matching(db, owner, where)
    return await bulk_operations.create(db, owner, BulkKind.CANCEL, selection, matched, None)


async def test_a_bulk_cancel_by_metadata_takes_exactly_the_matching_jobs_in_batches(
    db: asyncpg.Pool, redis: queue.Redis
) -> None:
    tenant_id = await factories.tenant(db)
    owner = Owner(tenant_id)
    red = [(await factories.submit(db, tenant_id, metadata={"team": "red"})).id for _ in range(4)]
    running = (await factories.submit(db, tenant_id, metadata={"team": "red", "x": "1"})).id
    await factories.start(db, running)
    blue = (await factories.submit(db, tenant_id, metadata={"team": "blue"})).id
    test_mode = (await factories.submit(db, tenant_id, metadata={"team": "red"}, livemode=False)).id
    other = (await factories.submit(db, await factories.tenant(db), metadata={"team": "red"})).id
    made = await _cancel_all(db, owner, JobSelection(metadata={"team": "red"}))
    assert made.matched == 5 and made.status is BulkStatus.RUNNING and made.processed == 0
    late = (await factories.submit(db, tenant_id, metadata={"team": "red"})).id
    first = await do_batch(db, redis, size=2)
    assert first is not None and first.processed == 2 and first.status is BulkStatus.RUNNING
    read = await bulk_operations.get(db, owner, str(made.id))
    assert read is not None and read.processed == 2
    while (step := await do_batch(db, redis, size=2)) is not None:
        last = step
    assert last.status is BulkStatus.DONE and last.processed == 5 and last.changed == 5
    assert last.finished_at is not None
    for job_id in red:
        assert await factories.status_of(db, job_id) == "cancelled"
    # Running: its worker is asked to stop it (it ends `cancelled` when the crew is killed).
    assert await factories.status_of(db, running) == "running"
    assert await db.fetchval("SELECT cancel_requested_at FROM jobs WHERE id = $1", running)
    for untouched in (blue, test_mode, other, late):
        assert await factories.status_of(db, untouched) == "pending"
        assert not await db.fetchval(
            "SELECT cancel_requested_at FROM jobs WHERE id = $1", untouched
        )
    # Each cancel went through the state machine: the job's event is there.
    assert "job.cancelled" in await factories.event_types(db, red[0])
    assert await bulk_operations.get(db, Owner(tenant_id, livemode=False), str(made.id)) is None


async def test_two_workers_never_take_the_same_batch(db: asyncpg.Pool, redis: queue.Redis) -> None:
    tenant_id = await factories.tenant(db)
    owner = Owner(tenant_id)
    for _ in range(6):
        await factories.submit(db, tenant_id, metadata={"team": "red"})
    made = await _cancel_all(db, owner, JobSelection(metadata={"team": "red"}))
    taken = await asyncio.gather(do_batch(db, redis, size=3), do_batch(db, redis, size=3))
    # One holds the operation; the other finds none free (SKIP LOCKED), not the same ids.
    assert sorted(t is None for t in taken) == [False, True]
    after = await bulk_operations.get(db, owner, str(made.id))
    assert after is not None and after.processed == 3
    await do_batch(db, redis, size=3)
    done = await bulk_operations.get(db, owner, str(made.id))
    assert done is not None and done.status is BulkStatus.DONE and done.changed == 6


async def test_an_operation_matching_nothing_is_done_at_once(db: asyncpg.Pool) -> None:
    owner = Owner(await factories.tenant(db))
    made = await _cancel_all(db, owner, JobSelection(metadata={"team": "none"}))
    assert made.status is BulkStatus.DONE and made.matched == 0


async def test_a_bulk_retry_restarts_the_cancelled_jobs_and_queues_them(
    db: asyncpg.Pool, redis: queue.Redis
) -> None:
    tenant_id = await factories.tenant(db)
    owner = Owner(tenant_id)
    cancelled = (await factories.submit(db, tenant_id)).id
    await jobs.request_cancel(db, owner, cancelled)
    pending = (await factories.submit(db, tenant_id)).id
    selection = JobSelection()
    matched = await jobs.matching(db, owner, jobs.JobFilter())
    assert matched == [cancelled, pending]
    await bulk_operations.create(db, owner, BulkKind.RETRY, selection, matched, None)
    done = await do_batch(db, redis)
    assert done is not None and done.status is BulkStatus.DONE
    assert done.matched == 2 and done.changed == 1
    assert await factories.status_of(db, cancelled) == "pending"
    assert (await queue.states(redis, [cancelled]))[0].held


async def test_retention_forgets_operations_done_long_ago(db: asyncpg.Pool) -> None:
    owner = Owner(await factories.tenant(db))
    old = await _cancel_all(db, owner, JobSelection(metadata={"team": "none"}))
    recent = await _cancel_all(db, owner, JobSelection(metadata={"team": "none"}))
    await db.execute(
        "UPDATE bulk_operations SET finished_at = now() - interval '31 days' WHERE id = $1",
        old.id,
    )
    assert await bulk_operations.purge(db, 30) == 1
    assert await bulk_operations.get(db, owner, str(old.id)) is None
    assert await bulk_operations.get(db, owner, str(recent.id)) is not None
