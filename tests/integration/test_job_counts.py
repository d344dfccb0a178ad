"""The kept counts of each tenant's pending and busy jobs (migration 0005), against real
Postgres: after every kind of move they equal a count of the jobs themselves."""

import asyncio

import asyncpg

from schemas.jobs import AttemptOutcome, ErrorCode, JobError, JobResult
from shared.domain.owners import Owner
from shared.runtime.db import TenantLock
from shared.store import job_attempts, job_sweeps, jobs
from tests.integration.factories import start, submit, tenant

RESULT = JobResult(raw="done", tasks=[], models=["m"], offline=True)
ERROR = JobError(code=ErrorCode.CREW_ERROR, message="boom")


async def kept(db: asyncpg.Pool, tenant_id: str) -> tuple[int, int]:
    row = await db.fetchrow(
        "SELECT pending, busy FROM crewq_fold_job_counts($1, $2)", int(TenantLock.JOBS), tenant_id
    )
    assert row is not None
    return row["pending"], row["busy"]


async def counted(db: asyncpg.Pool, tenant_id: str) -> tuple[int, int]:
    row = await db.fetchrow(
        "SELECT count(*) FILTER (WHERE status = 'pending') AS pending,"
        " count(*) FILTER (WHERE status = 'running'"
        "                   OR status = 'pending' AND parked_at IS NULL) AS busy"
        " FROM jobs WHERE tenant_id = $1",
        tenant_id,
    )
    assert row is not None
    return row["pending"], row["busy"]


async def assert_kept(db: asyncpg.Pool, tenant_id: str, expected: tuple[int, int]) -> None:
    assert await counted(db, tenant_id) == expected  # the scenario did what it says
    assert await kept(db, tenant_id) == expected, "the kept counts went astray"


async def test_counts_follow_every_move(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db, max_running_jobs=2)
    a, b, c, d = [await submit(db, tenant_id, max_retries=1, cap=2) for _ in range(4)]
    await assert_kept(db, tenant_id, (4, 2))  # c and d parked behind the cap
    claim_a = await start(db, a.id, cap=2)
    await assert_kept(db, tenant_id, (3, 2))
    moved = await job_attempts.end_attempt(db, claim_a, AttemptOutcome.COMPLETED, result=RESULT)
    assert moved is not None and moved.unparked == c.id  # a's slot went to c
    # ... and c is queued once the move commits
    assert moved.after.queue == (jobs.ToQueue(c.id, jobs.Queueing.QUEUE),)
    await assert_kept(db, tenant_id, (3, 2))
    claim_b = await start(db, b.id, cap=2)
    await assert_kept(db, tenant_id, (2, 2))
    # A retry puts b back in line, and hands its slot on (to d) as any ended attempt does.
    await job_attempts.end_attempt(db, claim_b, AttemptOutcome.FAILED, error=ERROR, retry_in=0)
    await assert_kept(db, tenant_id, (3, 3))
    claim_b = await start(db, b.id, cap=10)
    await job_attempts.end_attempt(db, claim_b, AttemptOutcome.FAILED, error=ERROR)
    await assert_kept(db, tenant_id, (2, 2))  # b failed for good
    cancel = await jobs.request_cancel(db, Owner(tenant_id), d.id)
    assert cancel.outcome is jobs.CancelOutcome.CANCELLED
    await assert_kept(db, tenant_id, (1, 1))
    assert await jobs.restart(db, Owner(tenant_id), b.id) is not None
    await assert_kept(db, tenant_id, (2, 2))
    await db.execute("DELETE FROM jobs WHERE id = $1", c.id)
    await assert_kept(db, tenant_id, (1, 1))
    # Parked by a worker that found the tenant at its cap: pending, not busy.
    await db.execute("UPDATE jobs SET parked_at = now() WHERE id = $1", b.id)
    await assert_kept(db, tenant_id, (1, 0))


async def test_concurrent_moves_and_submissions_keep_exact_counts(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db, max_running_jobs=1_000)
    made = [await submit(db, tenant_id) for _ in range(20)]

    async def run(job_id: str) -> None:
        claim = await start(db, job_id, cap=1_000)
        await job_attempts.end_attempt(db, claim, AttemptOutcome.COMPLETED, result=RESULT)

    await asyncio.gather(
        *(run(j.id) for j in made[:10]),
        *(submit(db, tenant_id) for _ in range(20)),
        job_sweeps.fold_counts(db),
        job_sweeps.fold_counts(db),
    )
    await assert_kept(db, tenant_id, (30, 30))


async def test_workers_fold_what_a_quiet_tenant_left(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id)
    claim = await start(db, job.id)
    await job_attempts.end_attempt(db, claim, AttemptOutcome.COMPLETED, result=RESULT)
    waiting = "SELECT count(*) FROM tenant_job_count_changes WHERE tenant_id = $1"
    assert await db.fetchval(waiting, tenant_id) > 0
    assert await job_sweeps.fold_counts(db) >= 1
    assert await db.fetchval(waiting, tenant_id) == 0
    folded = await db.fetchrow(
        "SELECT pending, busy FROM tenant_job_counts WHERE tenant_id = $1", tenant_id
    )
    assert folded is not None and tuple(folded) == (0, 0)


async def test_a_deleted_tenants_changes_are_dropped(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    await submit(db, tenant_id)
    await db.execute("DELETE FROM tenants WHERE id = $1", tenant_id)
    assert await job_sweeps.fold_counts(db) >= 1
    assert not await db.fetchval(
        "SELECT count(*) FROM tenant_job_count_changes WHERE tenant_id = $1", tenant_id
    )
