"""Reading events back: a job's events a page at a time, and a tenant's job events as they
commit (GET /v1/stream), against real Postgres."""

import asyncio
from datetime import timedelta

import asyncpg

from schemas.events import Event, EventType, TaskStarted
from schemas.jobs import Job
from shared.domain.owners import Owner
from shared.runtime.db import Executor
from shared.store import events, job_submission
from shared.store.deliveries import DELIVERIES_CHANNEL
from shared.store.events import JOB_EVENTS_CHANNEL, TENANT_EVENTS_CHANNEL, TenantFilter, TenantTail
from tests.integration.factories import endpoint, submit, tenant


async def _emit(db: Executor, job: Job, type: EventType = EventType.TASK_STARTED) -> Event:
    """One event of `job`: committed on a pool, in the caller's transaction on a connection."""
    data = TaskStarted(job_id=job.id, attempt=1, task="t", agent=None, index=1, total_tasks=1)
    tenant_id = await db.fetchval("SELECT tenant_id FROM jobs WHERE id = $1", job.id)
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            return (
                await events.emit(conn, tenant_id=tenant_id, type=type, data=data, job_id=job.id)
            ).event
    return (await events.emit(db, tenant_id=tenant_id, type=type, data=data, job_id=job.id)).event


async def _job_of_crew(db: asyncpg.Pool, tenant_id: str, crew: str) -> Job:
    inserted = await job_submission.insert(
        db,
        job_submission.NewJob(tenant_id, crew, {"topic": "x"}, {}, None, 60, 0),
        default_max_pending=10_000,
        default_cap=10,
    )
    assert isinstance(inserted, job_submission.Inserted)
    return inserted.job


async def _read_all(db: asyncpg.Pool, tail: TenantTail, limit: int = 100) -> list[str]:
    ids: list[str] = []
    more = True
    while more:
        found, more = await tail.read(db, limit)
        ids += [e.id for e in found]
    return ids


async def test_a_jobs_events_are_paged_in_order(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    job, other = await submit(db, tenant_id), await submit(db, tenant_id)
    made = [await _emit(db, job) for _ in range(5)]
    foreign = await _emit(db, other)

    page = await events.page(db, job.id, after=None, limit=100)
    assert page is not None
    assert [e.id for e in page[0]] == [e.id for e in made] and page[1] is False

    walked: list[str] = []
    after = None
    while True:
        found = await events.page(db, job.id, after=after, limit=2)
        assert found is not None
        walked += [e.id for e in found[0]]
        if not found[1]:
            break
        assert len(found[0]) == 2
        after = found[0][-1].id
    assert walked == [e.id for e in made]

    assert await events.page(db, job.id, after=made[-1].id, limit=2) == ([], False)
    # A cursor that is no event of this job is refused, not taken as "from the start".
    assert await events.page(db, job.id, after="evt_nope", limit=2) is None
    assert await events.page(db, job.id, after=foreign.id, limit=2) is None


async def test_a_tail_from_now_reads_only_new_events_of_the_tenants_jobs(db: asyncpg.Pool) -> None:
    tenant_id, stranger = await tenant(db), await tenant(db)
    job = await submit(db, tenant_id)
    before = [await _emit(db, job) for _ in range(3)]
    tail = await TenantTail.from_now(db, Owner(tenant_id), TenantFilter())
    assert await _read_all(db, tail) == []

    hook = await endpoint(db, tenant_id, "https://example.com/hook")
    async with db.acquire() as conn:
        assert await events.send_test(conn, Owner(tenant_id), hook) is not None  # belongs to no job
    await _emit(db, await submit(db, stranger))
    new = [await _emit(db, job) for _ in range(3)]
    assert await _read_all(db, tail) == [e.id for e in new]
    assert await _read_all(db, tail) == []

    resumed = await TenantTail.after_event(db, Owner(tenant_id), TenantFilter(), before[1].id)
    assert resumed is not None
    assert await _read_all(db, resumed) == [e.id for e in [before[2], *new]]
    assert await TenantTail.after_event(db, Owner(stranger), TenantFilter(), before[1].id) is None
    assert await TenantTail.after_event(db, Owner(tenant_id), TenantFilter(), "evt_nope") is None


async def test_a_tail_of_a_tenant_with_no_events_yet_reads_its_first(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    tail = await TenantTail.from_now(db, Owner(tenant_id), TenantFilter())
    first = await _emit(db, await submit(db, tenant_id))
    assert await _read_all(db, tail) == [first.id]


async def test_a_tail_filters_by_type_and_crew(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    echo, research = await submit(db, tenant_id), await _job_of_crew(db, tenant_id, "research")
    by_type = await TenantTail.from_now(
        db, Owner(tenant_id), TenantFilter(types=frozenset({EventType.TASK_COMPLETED}))
    )
    by_crew = await TenantTail.from_now(db, Owner(tenant_id), TenantFilter(crew="research"))
    both = await TenantTail.from_now(
        db,
        Owner(tenant_id),
        TenantFilter(types=frozenset({EventType.TASK_STARTED}), crew="research"),
    )
    e1 = await _emit(db, echo, EventType.TASK_STARTED)
    e2 = await _emit(db, echo, EventType.TASK_COMPLETED)
    r1 = await _emit(db, research, EventType.TASK_STARTED)
    r2 = await _emit(db, research, EventType.TASK_COMPLETED)
    assert e1.id and await _read_all(db, by_type) == [e2.id, r2.id]
    assert await _read_all(db, by_crew) == [r1.id, r2.id]
    assert await _read_all(db, both) == [r1.id]


async def test_an_event_that_commits_after_a_newer_one_is_read_once(db: asyncpg.Pool) -> None:
    """`emit` stamps created_at before its transaction commits: an older event can become
    visible after a newer one was read. Reading only after the newest would skip it."""
    tenant_id = await tenant(db)
    slow_job, fast_job = await submit(db, tenant_id), await submit(db, tenant_id)
    tail = await TenantTail.from_now(db, Owner(tenant_id), TenantFilter())
    async with db.acquire() as slow, slow.transaction():
        late = await _emit(slow, slow_job)  # stamped first, committed last
        early = await _emit(db, fast_job)
        assert (late.created_at, late.id) < (early.created_at, early.id)
        assert await _read_all(db, tail) == [early.id]
    assert await _read_all(db, tail) == [late.id]
    assert await _read_all(db, tail) == []
    # A tail resumed from the newer one has no way to know of the late one: it is behind.
    resumed = await TenantTail.after_event(db, Owner(tenant_id), TenantFilter(), early.id)
    assert resumed is not None and await _read_all(db, resumed) == []


async def test_a_tail_remembers_a_bounded_window(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id)
    bounded = await TenantTail.from_now(db, Owner(tenant_id), TenantFilter(), max_remembered=3)
    short = await TenantTail.from_now(
        db, Owner(tenant_id), TenantFilter(), overlap=timedelta(milliseconds=200)
    )
    made = [await _emit(db, job) for _ in range(10)]
    # Pages smaller than the burst, ids beyond the bound forgotten: each event still once.
    assert await _read_all(db, bounded, limit=4) == [e.id for e in made]
    assert bounded.remembered == 3
    assert await _read_all(db, short) == [e.id for e in made]
    assert short.remembered == 10  # all within the window
    await asyncio.sleep(0.3)
    newer = await _emit(db, job)
    assert await _read_all(db, short) == [newer.id]
    assert short.remembered == 1  # the rest fell behind the window, and the floor
    # The floor is the window's edge behind the newest event, past every one before it.
    assert short.floor == (newer.created_at - timedelta(milliseconds=200), "")
    assert short.floor > (made[-1].created_at, made[-1].id)


async def test_a_filtered_tails_window_moves_with_the_events_it_leaves_out(
    db: asyncpg.Pool,
) -> None:
    """Without it, a stream waiting for a rare type would rescan every event the tenant
    made since it opened, at each wake."""
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id)
    rare = TenantFilter(types=frozenset({EventType.JOB_FAILED}))
    window = timedelta(milliseconds=200)
    tail = await TenantTail.from_now(db, Owner(tenant_id), rare, overlap=window)
    skipped = [await _emit(db, job) for _ in range(5)]
    await asyncio.sleep(0.3)
    last = await _emit(db, job)
    assert await _read_all(db, tail) == []
    assert tail.floor > (skipped[-1].created_at, skipped[-1].id)
    assert tail.floor[0] == last.created_at - timedelta(milliseconds=200)
    wanted = await _emit(db, job, EventType.JOB_FAILED)
    assert await _read_all(db, tail) == [wanted.id]


async def test_emit_notifies_each_channel_when_it_commits(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    hook = await endpoint(db, tenant_id, "https://example.com/hook", [EventType.TASK_STARTED])
    job = await submit(db, tenant_id)
    heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    channels = [JOB_EVENTS_CHANNEL, TENANT_EVENTS_CHANNEL, DELIVERIES_CHANNEL]
    async with db.acquire() as listener:

        def hear(*args: object) -> None:
            heard.put_nowait((str(args[2]), str(args[3])))

        for channel in channels:
            await listener.add_listener(channel, hear)
        async with db.acquire() as conn, conn.transaction():
            await _emit(conn, job)
            await asyncio.sleep(0.2)
            assert heard.empty()  # not before the event can be read
        got = {await asyncio.wait_for(heard.get(), timeout=5) for _ in channels}
        assert got == {
            (JOB_EVENTS_CHANNEL, job.id),
            (TENANT_EVENTS_CHANNEL, tenant_id),
            (DELIVERIES_CHANNEL, ""),
        }
        # An event of no job (a test send) wakes the dispatchers, and no job stream.
        async with db.acquire() as conn:
            assert await events.send_test(conn, Owner(tenant_id), hook)
        assert await asyncio.wait_for(heard.get(), timeout=5) == (DELIVERIES_CHANNEL, "")
        await asyncio.sleep(0.2)
        assert heard.empty()
        for channel in channels:
            await listener.remove_listener(channel, hear)
