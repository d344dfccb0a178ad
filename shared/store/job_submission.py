"""Submitting a job, in Postgres: `insert` (one round trip to `crewq_submit_job_v2`, which
takes the tenant's lock and applies its bounds, its quota and the job's concurrency key),
and `clear_key`, the strategy a submission's concurrency key applies afterwards to the
key's other jobs. What an insert refuses is typed here (`TooManyPending`, `ConcurrencyBusy`)
but for the monthly quota, `usage.QuotaExceeded`, which a restart answers too
(shared/store/jobs.py `restart`). The job inserted is read and moved through
shared/store/jobs.py.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from schemas.jobs import Budget, InputDefault, Job
from shared.domain.owners import Owner
from shared.runtime.db import Executor, TenantLock, storable
from shared.runtime.ids import new_id
from shared.store import jobs, usage


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
    livemode: bool = True  # False: a test key's sandbox job, counted against no quota
    monthly_limit: int | None = None  # the tenant's quota of live jobs a month; None: none
    input_timeout_s: int | None = None  # None: the crew's, then the platform's
    input_default: InputDefault | None = None
    budget: Budget | None = None  # resolved at submission (the crew's, the platform's)
    run_after: datetime | None = None  # later than now: the job is scheduled
    expires_at: datetime | None = None
    priority: int = 0
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    concurrency_reject: bool = False  # refused while the key has `concurrency_limit` jobs


@dataclass(frozen=True)
class Inserted:
    job: Job
    created: bool  # False: the idempotency key was used before; `job` is that earlier job
    same_request: bool  # the earlier job was submitted with the same request body
    parked: bool  # waits off the queue for a slot of its tenant's: do not queue it
    scheduled: bool = False  # starts later: queued when it comes due (`promote_due`)


@dataclass(frozen=True)
class TooManyPending:
    limit: int


@dataclass(frozen=True)
class ConcurrencyBusy:
    limit: int  # the key's jobs already pending or running


async def insert(
    pool: Executor, new: NewJob, default_max_pending: int, default_cap: int
) -> Inserted | TooManyPending | usage.QuotaExceeded | ConcurrencyBusy:
    """Insert a pending job, unless its idempotency key was used before (the earlier job is
    returned instead), the tenant already has as many pending jobs as it may, or a live
    job would exceed its monthly quota (counted in the same transaction). The job is
    parked when its tenant already has as many jobs running or queued as its cap allows.
    Counting and inserting are serialised per tenant: no bound is overshot, however many
    submissions arrive at once. One round trip: `crewq_submit_job_v2` (migration 0015:
    `crewq_submit_job_v1`'s checks, and the job's input settings, budget, start time, expiry,
    priority and concurrency key) holds the tenant's lock only inside the server (a
    connection in a transaction: until that commits, as a schedule's tick does,
    shared/store/schedules.py). A job to start later is `scheduled`: it takes no slot, and
    is not to be queued until it comes due."""
    row = await pool.fetchrow(
        # The job's columns spread out: asyncpg decodes no composite holding jsonb.
        # Named arguments: a later version may add parameters with defaults (0008).
        "SELECT s.outcome, s.bound, s.decided_at, (s.job).* FROM crewq_submit_job_v2("
        "p_lock_purpose => $1, p_id => $2, p_tenant_id => $3, p_crew => $4, p_inputs => $5,"
        " p_metadata => $6, p_webhook_url => $7, p_timeout_s => $8, p_max_retries => $9,"
        " p_idempotency_key => $10, p_request_hash => $11, p_traceparent => $12,"
        " p_livemode => $13, p_monthly_limit => $14, p_default_max_pending => $15,"
        " p_default_cap => $16, p_input_timeout_s => $17, p_input_default => $18,"
        " p_budget => $19, p_run_after => $20, p_expires_at => $21, p_priority => $22,"
        " p_concurrency_key => $23, p_concurrency_limit => $24, p_concurrency_reject => $25) s",
        int(TenantLock.JOBS),
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
        new.livemode,
        new.monthly_limit,
        default_max_pending,
        default_cap,
        new.input_timeout_s,
        new.input_default,
        storable(new.budget.model_dump(mode="json", exclude_none=True)) if new.budget else None,
        new.run_after,
        new.expires_at,
        new.priority,
        new.concurrency_key,
        new.concurrency_limit,
        new.concurrency_reject,
    )
    assert row is not None
    match row["outcome"]:
        case "too_many_pending":
            return TooManyPending(row["bound"])
        case "concurrency_busy":
            return ConcurrencyBusy(row["bound"])
        case "quota_exceeded":
            return usage.QuotaExceeded(row["bound"], usage.month_ends(row["decided_at"]))
        case "replayed":
            job = jobs.to_job(row, (await jobs.attempts_of(pool, [row["id"]]))[row["id"]])
            same = row["request_hash"] == new.request_hash
            return Inserted(
                job, False, same, row["parked_at"] is not None, row["status"] == jobs.SCHEDULED
            )
    return Inserted(
        jobs.to_job(row, []),
        True,
        True,
        row["parked_at"] is not None,
        row["status"] == jobs.SCHEDULED,
    )


# --- after a submission: its concurrency key ---


@dataclass(frozen=True)
class KeyCleared:
    """What a submission's concurrency strategy did to the other jobs of its key."""

    after: jobs.AfterCommit  # the withdrawn jobs' ends, to count
    stopping: list[str]  # running jobs asked to stop: their workers are to be told


async def clear_key(
    pool: asyncpg.Pool, owner: Owner, key: str, keep: str, *, running: bool
) -> KeyCleared:
    """Cancel the owner's other jobs of `key` (all but `keep`): those not started yet
    (`replace_pending`), or those running (`cancel_running`: their cancel is requested, and
    their workers stop them)."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"SELECT id FROM jobs WHERE {jobs.OWNED} AND concurrency_key = $4 AND id <> $1"
            " AND status = ANY($5::text[]) ORDER BY id FOR UPDATE",
            keep,
            *jobs.owner_values(owner),
            key,
            ["running"] if running else ["pending", "scheduled"],
        )
        after, stopping = jobs.AfterCommit(), []
        for row in rows:
            if running:
                await conn.execute(
                    "UPDATE jobs SET cancel_requested_at = coalesce(cancel_requested_at, now())"
                    " WHERE id = $1 AND status = 'running'",
                    row["id"],
                )
                stopping.append(row["id"])
            elif (
                moved := await jobs.move(conn, jobs.WITHDRAW, row["id"], owner=owner)
            ) is not None:
                after += moved.after
    return KeyCleared(after, stopping)
