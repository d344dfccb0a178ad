"""The periodic passes over every tenant's jobs, in Postgres, that the worker's recovery
loop makes (worker/recovery.py): the moves that fall due by time (a wait for input over,
`expire_inputs`; a scheduled job due, `promote_due`; a job's expiry passed before it
started, `lapse_unstarted`), the reaper (`reap`: attempts whose worker is gone), the
reconciler's reads and repairs (`pending_jobs`, `fold_counts`, `unpark_free_slots`), the
queue's depth (`pending_summary`, and `WORKER_DEMAND_SQL`, which autoscalers run), and
retention (`purge_finished`). Each is safe to run in many workers at once (SKIP LOCKED,
compare-and-set); each move is one of shared/store/jobs.py's, made by `jobs.move`.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from schemas.jobs import AttemptOutcome, ErrorCode, InputAnswer, InputDefault, JobError
from shared.runtime.db import Executor, TenantLock
from shared.store import job_attempts, jobs

# --- moves that fall due by time ---


async def expire_inputs(pool: asyncpg.Pool, limit: int = 100) -> AsyncIterator[jobs.AfterCommit]:
    """Take the default action of each job whose wait for input is over: `approve` resumes
    it as if approved, `reject` cancels it, `fail` fails it with INPUT_TIMEOUT. Each job in
    its own transaction, locked with SKIP LOCKED, compare-and-set; yields what each move
    leaves to do once it commits (as `reap` does)."""
    due = await pool.fetch(
        "SELECT id FROM jobs WHERE status = 'awaiting_input' AND input_expires_at <= now()"
        " ORDER BY input_expires_at LIMIT $1",
        limit,
    )
    for candidate in due:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT input_request FROM jobs WHERE id = $1 AND status = 'awaiting_input'"
                " AND input_expires_at <= now() FOR UPDATE SKIP LOCKED",
                candidate["id"],
            )
            if row is None:
                continue  # answered, cancelled, or another worker has it
            asked = row["input_request"]
            action = InputDefault(asked["default_action"])
            job_id = candidate["id"]
            if action is InputDefault.APPROVE:
                given = jobs.Given(
                    input=jobs.answer_json(InputAnswer(), asked["task_index"], "timeout")
                )
                moved = await jobs.move(conn, jobs.ANSWER, job_id, given=given)
                queued = jobs.queue_job(job_id)
            elif action is InputDefault.REJECT:
                moved, queued = await jobs.move(conn, jobs.WITHDRAW, job_id), jobs.AfterCommit()
            else:
                error = JobError(
                    code=ErrorCode.INPUT_TIMEOUT,
                    message=f"nobody answered task {asked['task']!r} before {asked['expires_at']}",
                )
                moved, queued = (
                    await jobs.move(conn, jobs.EXPIRE, job_id, given=jobs.Given(error=error)),
                    jobs.AfterCommit(),
                )
        if moved is not None:
            yield moved.after + queued


async def _sweep(pool: asyncpg.Pool, move: jobs.Move, due: str, limit: int) -> jobs.AfterCommit:
    """Make `move` on each job `due` (a WHERE clause, oldest first by its ORDER BY) picks,
    at most `limit`, in one transaction; SKIP LOCKED, so workers sweeping at once take
    different jobs. What the moves leave to do, and the moved jobs to queue when they go
    back to pending."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"SELECT id FROM jobs WHERE {due} LIMIT $1 FOR UPDATE SKIP LOCKED", limit
        )
        after = jobs.AfterCommit()
        for row in rows:
            if (moved := await jobs.move(conn, move, row["id"])) is not None:
                queued = (
                    jobs.queue_job(row["id"]) if move.target is jobs.PENDING else jobs.AfterCommit()
                )
                after += moved.after + queued
    return after


async def promote_due(pool: asyncpg.Pool, limit: int = 500) -> jobs.AfterCommit:
    """scheduled -> pending for each job due now; queue them once this commits."""
    due = "status = 'scheduled' AND run_after <= now() ORDER BY run_after"
    return await _sweep(pool, jobs.PROMOTE, due, limit)


async def lapse_unstarted(pool: asyncpg.Pool, limit: int = 500) -> jobs.AfterCommit:
    """pending/scheduled -> expired for each job past its expiry that never started."""
    due = "status IN ('pending', 'scheduled') AND expires_at <= now() ORDER BY expires_at"
    return await _sweep(pool, jobs.LAPSE, due, limit)


# --- recovery: attempts whose worker is gone ---


async def reap(
    pool: asyncpg.Pool,
    heartbeat_timeout: float,
    timeout_grace: float,
) -> AsyncIterator[jobs.AfterCommit]:
    """End the attempts whose worker is gone: a running job silent for `heartbeat_timeout`,
    or running past its timeout plus `timeout_grace`. A silent job with retries left goes
    back to pending; otherwise it fails with WORKER_LOST or TIMEOUT. Yields, as each move
    commits, what it leaves to do: count it, and queue at once (whatever the dead worker's
    claim still holds) the job sent back and the one unparked by the slot freed; so a
    later move that fails loses none of the earlier ones' work. Safe to run in many
    workers at once: each job is moved in its own transaction (so a transaction holds one
    tenant's lock at most), locked with SKIP LOCKED, compare-and-set."""
    # $1: heartbeat_timeout, $2: timeout_grace
    overdue = """
        j.status = 'running' AND (
            j.last_activity_at < now() - make_interval(secs => $1)
            OR a.started_at < now() - make_interval(secs => j.timeout_s + $2))"""
    candidates = await pool.fetch(
        f"SELECT j.id FROM jobs j JOIN job_attempts a ON a.job_id = j.id AND a.number = j.attempt"
        f" WHERE {overdue} ORDER BY j.last_activity_at LIMIT 100",
        heartbeat_timeout,
        timeout_grace,
    )
    for candidate in candidates:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""
                SELECT j.*, j.last_activity_at < now() - make_interval(secs => $1) AS silent
                  FROM jobs j JOIN job_attempts a ON a.job_id = j.id AND a.number = j.attempt
                 WHERE j.id = $3 AND {overdue}
                   FOR UPDATE OF j SKIP LOCKED
                """,
                heartbeat_timeout,
                timeout_grace,
                candidate["id"],
            )
            if row is None:
                continue  # it heartbeated, ended, or another reaper has it
            if not row["silent"]:
                outcome, retry = AttemptOutcome.TIMEOUT, False
                error = JobError(
                    code=ErrorCode.TIMEOUT,
                    message=f"job ran past its timeout of {row['timeout_s']} s"
                    " and its worker did not stop it",
                )
            else:
                outcome = AttemptOutcome.LOST
                retry = row["max_retries"] + 1 - job_attempts.counted_attempt(row) > 0
                error = JobError(
                    code=ErrorCode.WORKER_LOST,
                    message=f"worker {row['worker_id']} stopped heartbeating"
                    f" during attempt {row['attempt']}",
                )
            moved = await jobs.move(
                conn,
                jobs.RETRY if retry else jobs.FAIL,
                row["id"],
                attempt=row["attempt"],
                given=jobs.Given(error=error),
                outcome=outcome,
            )
        if moved is not None:  # committed: the transaction above has ended
            sent_back = jobs.queue_job(row["id"]) if retry else jobs.AfterCommit()
            yield (sent_back + moved.after).at_once()


# --- the reconciler, and what the queue holds ---


async def pending_jobs(
    db: Executor, older_than_s: float, after: str | None = None, limit: int = 1000
) -> list[asyncpg.Record]:
    """A page of queueable pending jobs (not parked) created more than `older_than_s` ago
    (the API queues newer ones itself), by id; `after` is the last id of the previous page."""
    return list(
        await db.fetch(
            "SELECT id, run_after, run_after < now() - interval '10 seconds' AS overdue"
            " FROM jobs WHERE status = 'pending' AND parked_at IS NULL"
            " AND created_at < now() - make_interval(secs => $1)"
            " AND ($2::text IS NULL OR id > $2) ORDER BY id LIMIT $3",
            older_than_s,
            after,
            limit,
        )
    )


# How many worker slots the jobs want right now: those running and those free to start
# (queued, not parked behind their tenant's cap, past any retry delay). An autoscaler
# divides it by CREWQ_WORKER_CONCURRENCY for the workers wanted: KEDA's PostgreSQL scaler
# runs it as is (deploy/kubernetes/base/worker-autoscaling.yaml; a test keeps the two the
# same). Parked jobs are left out: more workers would not start them sooner. It reads the
# `jobs_live` partial index, so a table of finished jobs does not slow it.
WORKER_DEMAND_SQL = (
    "SELECT count(*) FROM jobs WHERE status = 'running'"
    " OR (status = 'pending' AND parked_at IS NULL AND run_after <= now())"
)


@dataclass(frozen=True)
class PendingSummary:
    pending: int  # every pending job
    due: int  # of those, free to start now (not parked, retry delay over)
    parked: int  # waiting for their tenant's running cap
    oldest_due_s: float | None  # how long the longest-waiting due job has waited


async def pending_summary(db: Executor) -> PendingSummary:
    row = await db.fetchrow(
        """
        SELECT count(*) AS pending,
               count(*) FILTER (WHERE parked_at IS NULL AND run_after <= now()) AS due,
               count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked,
               extract(epoch FROM now() - min(greatest(created_at, run_after))
                       FILTER (WHERE parked_at IS NULL AND run_after <= now()))::float8
                   AS oldest_due_s
          FROM jobs WHERE status = 'pending'
        """
    )
    assert row is not None
    return PendingSummary(row["pending"], row["due"], row["parked"], row["oldest_due_s"])


async def fold_counts(pool: asyncpg.Pool) -> int:
    """Add every tenant's job count changes into its counts (migration 0005): a tenant that
    stops submitting stops folding its own, and its changes would pile up. How many
    tenants were folded."""
    tenant_ids = [
        r["tenant_id"]
        for r in await pool.fetch("SELECT DISTINCT tenant_id FROM tenant_job_count_changes")
    ]
    for tenant_id in tenant_ids:  # one transaction each: the tenant's lock, held briefly
        await pool.execute(
            "SELECT crewq_fold_job_counts_v1(p_lock_purpose => $1, p_tenant_id => $2)",
            int(TenantLock.JOBS),
            tenant_id,
        )
    return len(tenant_ids)


async def unpark_free_slots(pool: asyncpg.Pool, default_cap: int) -> list[str]:
    """Unpark as many parked jobs of each tenant as it has free slots, counting its running
    and queued jobs (its cap was raised, or a hand-over was lost with its worker); returns
    them, to queue."""
    rows = await pool.fetch(
        """
        WITH waiting AS (
            SELECT DISTINCT tenant_id FROM jobs WHERE parked_at IS NOT NULL
        ), free AS (
            SELECT w.tenant_id,
                   coalesce(t.max_running_jobs, $1)
                   - (SELECT count(*) FROM jobs r
                       WHERE r.tenant_id = w.tenant_id AND (r.status = 'running'
                             OR r.status = 'pending' AND r.parked_at IS NULL)) AS slots
              FROM waiting w JOIN tenants t ON t.id = w.tenant_id
        )
        UPDATE jobs SET parked_at = NULL
         WHERE id IN (SELECT p.id FROM free f CROSS JOIN LATERAL (
                          SELECT id FROM jobs WHERE tenant_id = f.tenant_id
                             AND parked_at IS NOT NULL
                           ORDER BY priority DESC, id LIMIT greatest(f.slots, 0)
                             FOR UPDATE SKIP LOCKED) p)
        RETURNING id
        """,
        default_cap,
    )
    return sorted(r["id"] for r in rows)  # oldest first (RETURNING keeps no order)


# --- retention ---


async def purge_finished(pool: asyncpg.Pool, older_than_days: float, batch: int) -> int:
    """Delete up to `batch` jobs that finished more than `older_than_days` ago, oldest first,
    with their attempts, events, deliveries and idempotency keys (all cascade). SKIP LOCKED:
    workers purging at once take different rows."""
    deleted = await pool.fetch(
        """
        DELETE FROM jobs WHERE id IN (
            SELECT id FROM jobs
             WHERE status IN ('completed', 'failed', 'cancelled')
               AND finished_at < now() - make_interval(secs => $1 * 86400)
             ORDER BY finished_at LIMIT $2
               FOR UPDATE SKIP LOCKED)
        RETURNING id
        """,
        float(older_than_days),
        batch,
    )
    return len(deleted)
