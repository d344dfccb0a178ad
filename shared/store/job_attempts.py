"""A worker's attempt at a job, in Postgres: from `start_attempt` (pending -> running,
opening the attempt, or parking the job when its tenant or its concurrency key runs as many
jobs as it may) through its heartbeats, steps and resume from a checkpoint, to its end
(`end_attempt`) or its pause for a person (`pause`). Every move is one of
shared/store/jobs.py's, made by `jobs.move`; the statements here that are no move (a
heartbeat, a step, a resume) act only while the attempt is still the job's current one.
"""

from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic import BaseModel

from schemas.events import EventType, JobResumed
from schemas.jobs import AttemptOutcome, Budget, InputDefault, JobError, JobResult, Progress, Usage
from shared.runtime.db import TenantLock, lock_tenant
from shared.runtime.limits import DEFAULT_MAX_OUTPUT_BYTES
from shared.store import jobs
from shared.store.events import emit


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
    livemode: bool = True  # False: a test key's job, run on the offline model
    waited_s: float = 0.0  # how long it was due before this attempt started
    # The answer of the person it last paused for (InputAnswer + the task it answers).
    answer: dict[str, Any] | None = None
    input_timeout_s: int | None = None  # as submitted; None: the crew's or platform's
    input_default: InputDefault | None = None
    budget: Budget | None = None
    usage: Usage | None = None  # what earlier attempts spent

    @property
    def retries_left(self) -> int:
        """Attempts the job may still start should this one fail."""
        return self.max_retries + 1 - self.counted_attempt


def counted_attempt(row: asyncpg.Record) -> int:
    """The current attempt's number within the retry budget: hand-backs by a draining
    worker and the attempts before a manual retry do not count."""
    return int(row["attempt"]) - int(row["uncounted_attempts"])


@dataclass(frozen=True)
class NotStarted:
    """Why a queue delivery did not start the job, and when to try again (None: the job is
    not to be offered again by this delivery)."""

    reason: str
    retry_in: float | None = None
    after: jobs.AfterCommit | None = None  # what a move it made leaves to do (an expiry)


async def start_attempt(
    pool: asyncpg.Pool, job_id: str, worker_id: str, default_cap: int
) -> Claim | NotStarted:
    """pending -> running, opening a new attempt, unless the job is not pending (another
    delivery of the same queue message took it, it was cancelled or finished), its retry
    delay has not passed, or its tenant already runs as many jobs as it may (then it is
    parked). A pending job with a cancel request (cancelled while its attempt was being
    handed back) is cancelled here, so it never waits forever."""
    async with pool.acquire() as conn, conn.transaction():
        job = await conn.fetchrow(
            "SELECT tenant_id, livemode, status, cancel_requested_at, concurrency_key,"
            " concurrency_limit, expires_at < now() AS lapsed,"
            " extract(epoch FROM run_after - now())::float8 AS wait_s,"
            " extract(epoch FROM now() - greatest(created_at, run_after))::float8 AS waited_s"
            " FROM jobs WHERE id = $1",
            job_id,
        )
        if job is None:
            return NotStarted("unknown job")
        if job["status"] != jobs.PENDING:
            return NotStarted(f"job is {job['status']}")
        if job["cancel_requested_at"] is not None:
            # Its end is left uncounted, as it always was (issue 20 changes no behaviour):
            # the move's `after` is dropped, and a withdrawal frees no slot.
            await jobs.move(conn, jobs.WITHDRAW, job_id)
            return NotStarted("job was cancelled")
        if job["lapsed"] and job["status"] == jobs.PENDING:
            # Its expiry passed while it waited (the sweep had not reached it yet).
            lapsed = await jobs.move(conn, jobs.LAPSE, job_id)
            if lapsed is not None:
                return NotStarted("job expired before it started", after=lapsed.after)
        if job["wait_s"] > 0:
            return NotStarted("retry delay not over", retry_in=job["wait_s"])
        await lock_tenant(conn, TenantLock.JOBS, job["tenant_id"])
        slots = await conn.fetchrow(
            "SELECT coalesce(max_running_jobs, $2) AS cap,"
            " (SELECT count(*) FROM jobs WHERE tenant_id = $1 AND status = 'running') AS running"
            " FROM tenants WHERE id = $1",
            job["tenant_id"],
            default_cap,
        )
        assert slots is not None  # the job's tenant
        key_busy = (
            job["concurrency_key"] is not None
            and await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE tenant_id = $1 AND livemode = $2"
                " AND concurrency_key = $3 AND status = 'running'",
                job["tenant_id"],
                job["livemode"],
                job["concurrency_key"],
            )
            >= job["concurrency_limit"]
        )
        if slots["running"] >= slots["cap"] or key_busy:
            # Parked until a running job of the tenant (of the key, first) hands it its slot.
            await conn.execute(
                "UPDATE jobs SET parked_at = coalesce(parked_at, now())"
                " WHERE id = $1 AND status = 'pending'",
                job_id,
            )
            why = "its key's" if key_busy else "its tenant's"
            return NotStarted(f"parked: {why} jobs run as many at once as they may")
        moved = await jobs.move(conn, jobs.START, job_id, given=jobs.Given(worker_id=worker_id))
        if moved is None:
            return NotStarted("job is no longer pending")
    row = moved.row
    return Claim(
        job_id=job_id,
        tenant_id=row["tenant_id"],
        attempt=row["attempt"],
        crew=row["crew"],
        inputs=row["inputs"],
        timeout_s=row["timeout_s"],
        counted_attempt=counted_attempt(row),
        max_retries=row["max_retries"],
        livemode=row["livemode"],
        waited_s=max(0.0, job["waited_s"]),
        answer=row["input_answer"],
        input_timeout_s=row["input_timeout_s"],
        input_default=InputDefault(row["input_default"]) if row["input_default"] else None,
        budget=Budget.model_validate(row["budget"]) if row["budget"] else None,
        usage=Usage.model_validate(row["usage"]) if row["usage"] else None,
    )


def _ending(outcome: AttemptOutcome, retry: bool) -> jobs.Move:
    assert outcome is not AttemptOutcome.AWAITING_INPUT, "a pause is `pause`"
    if outcome is AttemptOutcome.RELEASED:
        return jobs.RELEASE
    if retry:
        return jobs.RETRY
    if outcome is AttemptOutcome.COMPLETED:
        return jobs.COMPLETE
    if outcome is AttemptOutcome.CANCELLED:
        return jobs.CANCEL
    return jobs.FAIL


async def end_attempt(
    pool: asyncpg.Pool,
    claim: Claim,
    outcome: AttemptOutcome,
    *,
    error: JobError | None = None,
    result: JobResult | None = None,
    token_usage: dict[str, Any] | None = None,
    retry_in: float | None = None,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
) -> jobs.Moved | None:
    """End this attempt: the job completes, fails or is cancelled, or (with `retry_in`) goes
    back to pending to start again after that many seconds, or (`RELEASED`) is handed back
    without spending an attempt. None: someone else moved the job first (a reaper, a
    duplicate delivery), and this outcome is discarded. Each output of `result` is stored
    up to `max_output_bytes`, the rest cut off and marked (`truncated`)."""
    move = _ending(outcome, retry_in is not None)
    given = jobs.Given(
        error=error,
        result=result,
        token_usage=token_usage,
        delay_s=retry_in or 0.0,
        max_output_bytes=max_output_bytes,
    )
    async with pool.acquire() as conn, conn.transaction():
        return await jobs.move(
            conn, move, claim.job_id, attempt=claim.attempt, given=given, outcome=outcome
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


async def record_step(
    pool: asyncpg.Pool,
    claim: Claim,
    type: EventType,
    data: BaseModel,
    *,
    progress: Progress | None = None,
    token_usage: dict[str, Any] | None = None,
    usage: Usage | None = None,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
) -> bool:
    """One step of a running attempt (a task started or finished, a tool or model called):
    owe its event (its data bounded by `max_output_bytes`, see `emit`) and, when given,
    write the attempt's progress and running token usage. Nothing happens once the attempt
    is no longer the job's current one (False)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE jobs SET last_activity_at = now(),"
            " progress = coalesce($3::jsonb, progress),"
            " token_usage = coalesce($4::jsonb, token_usage),"
            " usage = coalesce($5::jsonb, usage)"
            " WHERE id = $1 AND status = 'running' AND attempt = $2"
            " RETURNING webhook_url, livemode",
            claim.job_id,
            claim.attempt,
            jobs.jsonb(progress),
            token_usage,
            jobs.jsonb(usage),
        )
        if row is None:
            return False
        await emit(
            conn,
            tenant_id=claim.tenant_id,
            type=type,
            data=data,
            job_id=claim.job_id,
            job_webhook_url=row["webhook_url"],
            livemode=row["livemode"],
            max_output_bytes=max_output_bytes,
        )
    return True


@dataclass(frozen=True)
class InputAsked:
    """What a task waiting for a person asks (stored as the job's `input_request`)."""

    task: str
    task_index: int  # from 1
    output: str  # the task's answer, for the person to review
    prompt: str
    default_action: InputDefault

    def as_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "task_index": self.task_index,
            "output": self.output,
            "prompt": self.prompt,
            "default_action": self.default_action.value,
        }


async def pause(
    pool: asyncpg.Pool,
    claim: Claim,
    asked: InputAsked,
    waits_s: float,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
) -> jobs.Moved | None:
    """running -> awaiting_input: this attempt ends (its slot freed) and the job waits
    `waits_s` for an answer to `asked`. None: the job moved on from this attempt."""
    bounded = asked.as_json()
    bounded["output"] = bounded["output"][:max_output_bytes]
    given = jobs.Given(input=bounded, delay_s=waits_s, max_output_bytes=max_output_bytes)
    async with pool.acquire() as conn, conn.transaction():
        return await jobs.move(
            conn,
            jobs.AWAIT_INPUT,
            claim.job_id,
            attempt=claim.attempt,
            given=given,
            outcome=AttemptOutcome.AWAITING_INPUT,
        )


async def record_resume(pool: asyncpg.Pool, claim: Claim, after_task: str, tasks_done: int) -> bool:
    """This attempt took up the crew from its checkpoint: say so on the attempt
    (`resumed_from`) and owe `job.resumed`. False: the attempt is no longer the job's."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE job_attempts a SET resumed_from = $3 FROM jobs j"
            " WHERE a.job_id = $1 AND a.number = $2 AND j.id = a.job_id"
            " AND j.attempt = $2 AND j.status = 'running'"
            " RETURNING j.webhook_url, j.livemode",
            claim.job_id,
            claim.attempt,
            after_task,
        )
        if row is None:
            return False
        await emit(
            conn,
            tenant_id=claim.tenant_id,
            type=EventType.JOB_RESUMED,
            data=JobResumed(
                job_id=claim.job_id,
                attempt=claim.attempt,
                after_task=after_task,
                tasks_done=tasks_done,
            ),
            job_id=claim.job_id,
            job_webhook_url=row["webhook_url"],
            livemode=row["livemode"],
        )
    return True
