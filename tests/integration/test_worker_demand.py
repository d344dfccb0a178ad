"""WORKER_DEMAND_SQL, the query KEDA scales the workers on
(deploy/kubernetes/base/worker-autoscaling.yaml), against real Postgres: it counts the jobs
running and the pending jobs free to start now, and nothing else."""

from typing import Any

import asyncpg

from schemas.jobs import AttemptOutcome, ErrorCode, JobError
from shared.domain.owners import Owner
from shared.store import job_attempts, job_sweeps, jobs
from shared.store.job_sweeps import WORKER_DEMAND_SQL
from tests.integration.factories import start, status_of, submit, tenant

LLM_DOWN = JobError(code=ErrorCode.LLM_UNAVAILABLE, message="provider said 503")


async def demand(db: asyncpg.Pool) -> int:
    return int(await db.fetchval(WORKER_DEMAND_SQL))


async def test_demand_counts_running_and_due_pending_jobs_only(db: asyncpg.Pool) -> None:
    assert await demand(db) == 0
    busy = await tenant(db)

    # Due: pending, not parked, no retry delay; one of them handed back by a draining worker.
    due = [await submit(db, busy) for _ in range(2)]
    released = await start(db, (await submit(db, busy)).id)
    assert await job_attempts.end_attempt(db, released, AttemptOutcome.RELEASED) is not None
    # Running.
    running = [await start(db, (await submit(db, busy)).id) for _ in range(3)]
    # Pending, but not before its retry delay is over.
    retrying = await start(db, (await submit(db, busy)).id)
    await job_attempts.end_attempt(
        db, retrying, AttemptOutcome.RETRYING, error=LLM_DOWN, retry_in=3600
    )
    # Finished: completed, failed, cancelled while running, cancelled while pending.
    for outcome in (AttemptOutcome.COMPLETED, AttemptOutcome.FAILED, AttemptOutcome.CANCELLED):
        claim = await start(db, (await submit(db, busy)).id)
        error = LLM_DOWN if outcome is AttemptOutcome.FAILED else None
        assert await job_attempts.end_attempt(db, claim, outcome, error=error) is not None
    withdrawn = await submit(db, busy)
    cancel = await jobs.request_cancel(db, Owner(busy), withdrawn.id)
    assert cancel.outcome is jobs.CancelOutcome.CANCELLED
    # Parked: a tenant allowed one running job, which it runs, with two more waiting.
    capped = await tenant(db, max_running_jobs=1)
    capped_running = await start(db, (await submit(db, capped)).id)
    parked = [await submit(db, capped) for _ in range(2)]

    statuses = {
        job_id: await status_of(db, job_id)
        for job_id in [
            *(j.id for j in due),
            released.job_id,
            *(c.job_id for c in running),
            retrying.job_id,
            capped_running.job_id,
            *(j.id for j in parked),
        ]
    }
    assert sorted(statuses.values()).count("running") == 4
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE parked_at IS NOT NULL") == 2
    assert set(await db.fetchval("SELECT array_agg(DISTINCT status) FROM jobs")) == {
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
    }
    # 4 running (3 + the capped tenant's) and 3 due (2 submitted + 1 handed back).
    assert await demand(db) == 4 + 3
    summary = await job_sweeps.pending_summary(db)
    assert (summary.pending, summary.due, summary.parked) == (3 + 1 + 2, 3, 2)

    # The capped tenant's running job ends: its oldest parked job takes the slot, so the
    # demand stays the same (one running fewer, one due more).
    moved = await job_attempts.end_attempt(db, capped_running, AttemptOutcome.COMPLETED)
    assert moved is not None and moved.unparked == parked[0].id
    assert await demand(db) == 3 + 4

    # The retry delay passes (no function moves time: the row is aged by hand).
    await db.execute(
        "UPDATE jobs SET run_after = now() - interval '1 second' WHERE id = $1",
        retrying.job_id,
    )
    assert await demand(db) == 3 + 5


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


async def test_demand_reads_an_index_of_live_jobs(db: asyncpg.Pool) -> None:
    """With sequential scans priced out, the planner answers from an index of live jobs:
    the query's shape lets it, whatever the size of the table (on an empty table it would
    rightly scan)."""
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        [explained] = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {WORKER_DEMAND_SQL}")
    nodes = _nodes(explained["Plan"])
    on_jobs = [n for n in nodes if n.get("Relation Name") == "jobs"]
    assert on_jobs, explained
    assert all(n["Node Type"] != "Seq Scan" for n in on_jobs), explained
    indexes = {n["Index Name"] for n in nodes if "Index Name" in n}
    assert indexes <= {"jobs_live", "jobs_pending"} and "jobs_live" in indexes, explained
