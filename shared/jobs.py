"""Job state in Postgres, and every transition between states.

Each transition is one UPDATE guarded by the state (and attempt) it expects: a duplicate
queue delivery, a late worker or a concurrent cancel finds the guard false and changes
nothing. The event a transition owes is written in the same transaction (see events.py).
"""

from dataclasses import dataclass
from typing import Any

import asyncpg

from schemas.events import EventType
from schemas.jobs import Job, JobAttempt, JobError, JobResult, JobStatus
from shared.db import Conn, Executor
from shared.events import emit
from shared.ids import new_id


@dataclass(frozen=True)
class NewJob:
    tenant_id: str
    crew: str
    inputs: dict[str, Any]
    metadata: dict[str, Any]
    webhook_url: str | None
    timeout_s: int
    max_retries: int
    idempotency_key: str | None = None
    request_hash: bytes | None = None
    traceparent: str | None = None


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one attempt of a running job."""

    job_id: str
    tenant_id: str
    attempt: int
    crew: str
    inputs: dict[str, Any]
    timeout_s: int
    counted_attempt: int  # this attempt's number within the current retry budget
    max_retries: int

    @property
    def retries_left(self) -> int:
        """Attempts the job may still start should this one fail."""
        return self.max_retries + 1 - self.counted_attempt


def _counted_attempt(row: asyncpg.Record) -> int:
    """The current attempt's number within the retry budget: hand-backs by a draining
    worker and the attempts before a manual retry do not count."""
    return int(row["attempt"]) - int(row["uncounted_attempts"])


# How soon a job refused by its tenant's cap is offered to a worker again.
_CAP_RECHECK_S = 2.0


def to_job(row: asyncpg.Record, attempts: list[asyncpg.Record]) -> Job:
    return Job(
        id=row["id"],
        status=JobStatus(row["status"]),
        crew=row["crew"],
        inputs=row["inputs"],
        metadata=row["metadata"],
        webhook_url=row["webhook_url"],
        timeout=row["timeout_s"],
        max_retries=row["max_retries"],
        attempt=row["attempt"],
        attempts=[
            JobAttempt(
                number=a["number"],
                worker_id=a["worker_id"],
                started_at=a["started_at"],
                finished_at=a["finished_at"],
                outcome=a["outcome"],
                error=JobError(**a["error"]) if a["error"] else None,
            )
            for a in attempts
        ],
        result=JobResult(**row["result"]) if row["result"] else None,
        token_usage=row["token_usage"],
        error=JobError(**row["error"]) if row["error"] else None,
        worker_id=row["worker_id"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        last_activity_at=row["last_activity_at"],
        cancel_requested_at=row["cancel_requested_at"],
    )


async def _attempts(conn: Executor, job_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch("SELECT * FROM job_attempts WHERE job_id = $1 ORDER BY number", job_id)
    )


async def exists(conn: Executor, tenant_id: str, job_id: str) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM jobs WHERE id = $1 AND tenant_id = $2", job_id, tenant_id
    )
    return found is not None


async def get(conn: Executor, tenant_id: str, job_id: str) -> Job | None:
    row = await conn.fetchrow(
        "SELECT * FROM jobs WHERE id = $1 AND tenant_id = $2", job_id, tenant_id
    )
    return to_job(row, await _attempts(conn, job_id)) if row else None


async def events_after(db: Executor, job_id: str, after: str | None) -> list[asyncpg.Record]:
    """A job's events in the order they happened, after the event `after` (all when None
    or unknown)."""
    return list(
        await db.fetch(
            """
            WITH start AS (SELECT created_at, id FROM events WHERE id = $2 AND job_id = $1)
            SELECT e.id, e.type, e.payload FROM events e
             WHERE e.job_id = $1
               AND (NOT EXISTS (SELECT 1 FROM start)
                    OR (e.created_at, e.id) > (SELECT created_at, id FROM start))
             ORDER BY e.created_at, e.id
            """,
            job_id,
            after,
        )
    )


async def traceparent_of(db: Executor, job_id: str) -> str | None:
    value = await db.fetchval("SELECT traceparent FROM jobs WHERE id = $1", job_id)
    return str(value) if value else None


async def insert(conn: Conn, new: NewJob) -> tuple[asyncpg.Record, bool]:
    """Insert a pending job; with an idempotency key already used, return the earlier job
    and False instead."""
    row = await conn.fetchrow(
        """
        INSERT INTO jobs (id, tenant_id, crew, inputs, metadata, webhook_url, status,
                          timeout_s, max_retries, idempotency_key, request_hash, traceparent)
        VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10, $11)
        ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING *
        """,
        new_id("job"),
        new.tenant_id,
        new.crew,
        new.inputs,
        new.metadata,
        new.webhook_url,
        new.timeout_s,
        new.max_retries,
        new.idempotency_key,
        new.request_hash,
        new.traceparent,
    )
    if row is not None:
        return row, True
    earlier = await conn.fetchrow(
        "SELECT * FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2",
        new.tenant_id,
        new.idempotency_key,
    )
    assert earlier is not None
    return earlier, False


async def page(
    conn: Executor,
    tenant_id: str,
    *,
    status: JobStatus | None,
    crew: str | None,
    before: str | None,
    limit: int,
) -> tuple[list[Job], bool]:
    """Newest first; `before` is the last id of the previous page."""
    rows = await conn.fetch(
        """
        SELECT * FROM jobs
         WHERE tenant_id = $1
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR crew = $3)
           AND ($4::text IS NULL OR id < $4)
         ORDER BY id DESC
         LIMIT $5
        """,
        tenant_id,
        status.value if status else None,
        crew,
        before,
        limit + 1,
    )
    rows = list(rows[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    attempts: dict[str, list[asyncpg.Record]] = {r["id"]: [] for r in rows}
    if rows:
        for a in await conn.fetch(
            "SELECT * FROM job_attempts WHERE job_id = ANY($1::text[]) ORDER BY number",
            list(attempts),
        ):
            attempts[a["job_id"]].append(a)
    return [to_job(r, attempts[r["id"]]) for r in rows], has_more


async def _emit_for(conn: Conn, row: asyncpg.Record, type: EventType) -> None:
    job = to_job(row, await _attempts(conn, row["id"]))
    await emit(
        conn,
        tenant_id=row["tenant_id"],
        type=type,
        data=job.model_dump(mode="json"),
        job_id=row["id"],
        job_webhook_url=row["webhook_url"],
    )


@dataclass(frozen=True)
class NotStarted:
    """Why a queue delivery did not start the job, and when to try again (None: never)."""

    reason: str
    retry_in: float | None = None


async def start_attempt(
    pool: asyncpg.Pool, job_id: str, worker_id: str, default_tenant_cap: int
) -> Claim | NotStarted:
    """pending -> running, opening a new attempt, unless the job is not pending (another
    delivery of the same queue message took it, it was cancelled or finished), its retry
    delay has not passed, or its tenant already runs as many jobs as it may. A pending job
    with a cancel request (cancelled while its attempt was being handed back) is cancelled
    here, so it never waits forever."""
    async with pool.acquire() as conn, conn.transaction():
        # Lock the tenant row so concurrent starts count its running jobs one at a time.
        tenant = await conn.fetchrow(
            "SELECT t.id, coalesce(t.max_running_jobs, $2) AS cap FROM tenants t"
            " JOIN jobs j ON j.tenant_id = t.id WHERE j.id = $1 FOR UPDATE OF t",
            job_id,
            default_tenant_cap,
        )
        if tenant is None:
            return NotStarted("unknown job")
        job = await conn.fetchrow(
            "SELECT status, cancel_requested_at,"
            " extract(epoch FROM run_after - now())::float8 AS wait_s FROM jobs WHERE id = $1"
            " FOR UPDATE",
            job_id,
        )
        assert job is not None  # the tenant row was found through it
        if job["status"] != "pending":
            return NotStarted(f"job is {job['status']}")
        if job["cancel_requested_at"] is not None:
            cancelled = await conn.fetchrow(
                "UPDATE jobs SET status = 'cancelled', finished_at = now(), worker_id = NULL"
                " WHERE id = $1 AND status = 'pending' RETURNING *",
                job_id,
            )
            if cancelled is not None:
                await _emit_for(conn, cancelled, EventType.JOB_CANCELLED)
            return NotStarted("job was cancelled")
        if job["wait_s"] > 0:
            return NotStarted("retry delay not over", retry_in=job["wait_s"])
        if await running_count(conn, tenant["id"]) >= tenant["cap"]:
            return NotStarted("tenant at its running-jobs cap", retry_in=_CAP_RECHECK_S)
        row = await conn.fetchrow(
            """
            UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = $2,
                   started_at = coalesce(started_at, now()), last_activity_at = now()
             WHERE id = $1 AND status = 'pending'
            RETURNING *
            """,
            job_id,
            worker_id,
        )
        assert row is not None  # the job row is locked and pending
        await conn.execute(
            "INSERT INTO job_attempts (job_id, number, worker_id) VALUES ($1, $2, $3)",
            job_id,
            row["attempt"],
            worker_id,
        )
        await _emit_for(conn, row, EventType.JOB_STARTED)
    return Claim(
        job_id=job_id,
        tenant_id=row["tenant_id"],
        attempt=row["attempt"],
        crew=row["crew"],
        inputs=row["inputs"],
        timeout_s=row["timeout_s"],
        counted_attempt=_counted_attempt(row),
        max_retries=row["max_retries"],
    )


async def task_completed(pool: asyncpg.Pool, claim: Claim, task: dict[str, Any]) -> None:
    """One task of a running crew finished: owe a `task.completed` event."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE jobs SET last_activity_at = now()"
            " WHERE id = $1 AND status = 'running' AND attempt = $2 RETURNING webhook_url",
            claim.job_id,
            claim.attempt,
        )
        if row is None:
            return
        await emit(
            conn,
            tenant_id=claim.tenant_id,
            type=EventType.TASK_COMPLETED,
            data={"job_id": claim.job_id, "attempt": claim.attempt, "task": task},
            job_id=claim.job_id,
            job_webhook_url=row["webhook_url"],
        )


async def heartbeat(pool: asyncpg.Pool, claim: Claim) -> tuple[bool, bool]:
    """Refresh `last_activity_at`. Returns (still ours, cancel requested)."""
    row = await pool.fetchrow(
        "UPDATE jobs SET last_activity_at = now()"
        " WHERE id = $1 AND status = 'running' AND attempt = $2"
        " RETURNING cancel_requested_at",
        claim.job_id,
        claim.attempt,
    )
    if row is None:
        return False, False
    return True, row["cancel_requested_at"] is not None


async def _close_attempt(
    conn: Conn, job_id: str, attempt: int, outcome: str, error: JobError | None
) -> None:
    await conn.execute(
        "UPDATE job_attempts SET finished_at = now(), outcome = $3, error = $4"
        " WHERE job_id = $1 AND number = $2",
        job_id,
        attempt,
        outcome,
        error.model_dump() if error else None,
    )


_OUTCOME_EVENTS = {
    JobStatus.COMPLETED: EventType.JOB_COMPLETED,
    JobStatus.FAILED: EventType.JOB_FAILED,
    JobStatus.CANCELLED: EventType.JOB_CANCELLED,
}


async def finish(
    pool: asyncpg.Pool,
    claim: Claim,
    status: JobStatus,
    *,
    result: JobResult | None = None,
    token_usage: dict[str, Any] | None = None,
    error: JobError | None = None,
) -> bool:
    """running -> a terminal state, for this attempt only. False: someone else moved the job
    first (a reaper, a duplicate delivery), and this outcome is discarded."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """
            UPDATE jobs SET status = $3, result = $4, token_usage = $5, error = $6,
                   finished_at = now(), last_activity_at = now()
             WHERE id = $1 AND status = 'running' AND attempt = $2
            RETURNING *
            """,
            claim.job_id,
            claim.attempt,
            status.value,
            result.model_dump(mode="json") if result else None,
            token_usage,
            error.model_dump() if error else None,
        )
        if row is None:
            return False
        await _close_attempt(conn, claim.job_id, claim.attempt, status.value, error)
        await _emit_for(conn, row, _OUTCOME_EVENTS[status])
    return True


async def retry_later(
    pool: asyncpg.Pool, job_id: str, attempt: int, error: JobError, delay_s: float
) -> bool:
    """running -> pending after a transient failure; the job may start again after `delay_s`."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """
            UPDATE jobs SET status = 'pending', worker_id = NULL, error = $3,
                   run_after = now() + make_interval(secs => $4), last_activity_at = now()
             WHERE id = $1 AND status = 'running' AND attempt = $2
            RETURNING *
            """,
            job_id,
            attempt,
            error.model_dump(),
            delay_s,
        )
        if row is None:
            return False
        await _close_attempt(conn, job_id, attempt, "retrying", error)
        await _emit_for(conn, row, EventType.JOB_RETRYING)
    return True


async def release(pool: asyncpg.Pool, claim: Claim) -> bool:
    """running -> pending without spending an attempt: a draining worker hands the job back."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """
            UPDATE jobs SET status = 'pending', worker_id = NULL,
                   uncounted_attempts = uncounted_attempts + 1,
                   run_after = now(), last_activity_at = now()
             WHERE id = $1 AND status = 'running' AND attempt = $2
            RETURNING id
            """,
            claim.job_id,
            claim.attempt,
        )
        if row is None:
            return False
        await _close_attempt(conn, claim.job_id, claim.attempt, "released", None)
    return True


class CancelOutcome:
    CANCELLED = "cancelled"  # was pending: cancelled now
    REQUESTED = "requested"  # was running: its worker will stop it
    ALREADY_FINISHED = "already_finished"
    NOT_FOUND = "not_found"


async def request_cancel(pool: asyncpg.Pool, tenant_id: str, job_id: str) -> str:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """
            UPDATE jobs SET status = 'cancelled', finished_at = now(), cancel_requested_at = now(),
                   error = NULL
             WHERE id = $1 AND tenant_id = $2 AND status = 'pending'
            RETURNING *
            """,
            job_id,
            tenant_id,
        )
        if row is not None:
            await _emit_for(conn, row, EventType.JOB_CANCELLED)
            return CancelOutcome.CANCELLED
        row = await conn.fetchrow(
            "UPDATE jobs SET cancel_requested_at = coalesce(cancel_requested_at, now())"
            " WHERE id = $1 AND tenant_id = $2 AND status = 'running' RETURNING id",
            job_id,
            tenant_id,
        )
        if row is not None:
            return CancelOutcome.REQUESTED
        found = await exists(conn, tenant_id, job_id)
        return CancelOutcome.ALREADY_FINISHED if found else CancelOutcome.NOT_FOUND


async def restart(pool: asyncpg.Pool, tenant_id: str, job_id: str) -> Job | None:
    """failed/cancelled -> pending as a fresh run with a full retry budget (`POST …/retry`)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """
            UPDATE jobs SET status = 'pending', uncounted_attempts = attempt,
                   error = NULL, result = NULL, token_usage = NULL,
                   cancel_requested_at = NULL, finished_at = NULL, worker_id = NULL,
                   run_after = now()
             WHERE id = $1 AND tenant_id = $2 AND status IN ('failed', 'cancelled')
            RETURNING *
            """,
            job_id,
            tenant_id,
        )
        return to_job(row, await _attempts(conn, job_id)) if row else None


async def running_count(conn: Executor, tenant_id: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE tenant_id = $1 AND status = 'running'", tenant_id
        )
    )


async def reap(pool: asyncpg.Pool, heartbeat_timeout: float, timeout_grace: float) -> list[str]:
    """End the attempts whose worker is gone: a running job silent for `heartbeat_timeout`,
    or running past its timeout plus `timeout_grace`. A silent job with retries left goes
    back to pending (returned, for re-queueing); otherwise it fails with WORKER_LOST or
    TIMEOUT. Safe to run in many workers at once: rows are locked with SKIP LOCKED and
    every change is compare-and-set."""
    requeue: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """
            SELECT j.*, a.started_at AS attempt_started_at,
                   j.last_activity_at < now() - make_interval(secs => $1) AS silent
              FROM jobs j JOIN job_attempts a ON a.job_id = j.id AND a.number = j.attempt
             WHERE j.status = 'running'
               AND (j.last_activity_at < now() - make_interval(secs => $1)
                    OR a.started_at < now() - make_interval(secs => j.timeout_s + $2))
             ORDER BY j.last_activity_at
             LIMIT 100
               FOR UPDATE OF j SKIP LOCKED
            """,
            heartbeat_timeout,
            timeout_grace,
        )
        for row in rows:
            if not row["silent"]:
                error = JobError(
                    code="TIMEOUT",
                    message=f"job ran past its timeout of {row['timeout_s']} s"
                    " and its worker did not stop it",
                )
                status, event = JobStatus.FAILED, EventType.JOB_FAILED
            else:
                error = JobError(
                    code="WORKER_LOST",
                    message=f"worker {row['worker_id']} stopped heartbeating"
                    f" during attempt {row['attempt']}",
                )
                retries_left = row["max_retries"] + 1 - _counted_attempt(row)
                status = JobStatus.PENDING if retries_left > 0 else JobStatus.FAILED
                event = EventType.JOB_RETRYING if retries_left > 0 else EventType.JOB_FAILED
            updated = await conn.fetchrow(
                """
                UPDATE jobs SET status = $3, error = $4, worker_id = NULL, run_after = now(),
                       last_activity_at = now(),
                       finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END
                 WHERE id = $1 AND status = 'running' AND attempt = $2
                RETURNING *
                """,
                row["id"],
                row["attempt"],
                status.value,
                error.model_dump(),
            )
            if updated is None:
                continue
            await _close_attempt(
                conn, row["id"], row["attempt"], "lost" if row["silent"] else "timeout", error
            )
            await _emit_for(conn, updated, event)
            if status is JobStatus.PENDING:
                requeue.append(row["id"])
    return requeue


async def pending_jobs(
    conn: Executor, older_than_s: float, after: str | None = None, limit: int = 1000
) -> list[asyncpg.Record]:
    """A page of pending jobs created more than `older_than_s` ago (the API enqueues newer
    ones itself), by id; `after` is the last id of the previous page."""
    return list(
        await conn.fetch(
            "SELECT id, run_after, run_after < now() - interval '30 seconds' AS overdue"
            " FROM jobs WHERE status = 'pending'"
            " AND created_at < now() - make_interval(secs => $1)"
            " AND ($2::text IS NULL OR id > $2) ORDER BY id LIMIT $3",
            older_than_s,
            after,
            limit,
        )
    )
