"""Schedules in Postgres: every statement on `schedules`, and firing them.

A schedule's `next_run_at` is the tick due next. Every worker's scheduler
(worker/scheduler.py) calls `fire_due`, which claims one due schedule at a time with
`FOR UPDATE SKIP LOCKED` and, in the same transaction, inserts the tick's job through the
submission function every job takes (`job_submission.insert`: the tenant's lock, bounds and monthly
quota) and moves `next_run_at` on (compare-and-set). The row lock and the one commit make a
tick one job, however many schedulers run; the job's idempotency key (`schedule:ID:TICK`)
would answer a second insert of the same tick with the first job all the same.

A tick due more than `missed_after_s` ago was missed (no scheduler ran: an outage). The
schedule's `MissedPolicy` decides: `skip` makes no job for such ticks, `run_once` one job
now for all of them; either way the schedule goes on at its first tick still to come.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from croniter import croniter

from schemas.account import Plan
from schemas.schedules import NEXT_RUNS, MissedPolicy, Schedule
from shared.domain.owners import Owner
from shared.domain.plans import allowance
from shared.runtime.db import Executor
from shared.runtime.ids import new_id
from shared.store import job_submission, jobs, usage
from shared.store.paging import cut, one_more


def cron_refusal(expression: str) -> str | None:
    """What is wrong with a cron expression croniter cannot follow; None when it can. The
    wire model (`schemas/schedules.py`) checks only its shape, as it imports pydantic alone."""
    if not croniter.is_valid(expression):
        return f"{expression!r} is not a cron expression"
    return None


@dataclass(frozen=True)
class Timing:
    """When a schedule's ticks fall: a cron expression read in a time zone, or every
    `interval_s` seconds from its first tick."""

    cron: str | None = None
    timezone: str | None = None
    interval_s: int | None = None

    def after(self, t: datetime) -> datetime:
        """The first tick strictly after `t`."""
        if self.interval_s is not None:
            return t + timedelta(seconds=self.interval_s)
        assert self.cron is not None and self.timezone is not None
        local = t.astimezone(ZoneInfo(self.timezone))
        return croniter(self.cron, local).get_next(datetime).astimezone(UTC)

    def first_after(self, due: datetime, now: datetime) -> datetime:
        """The first tick after `now` of the ticks following `due` (an interval keeps its
        phase: ticks stay `due + k·interval`, so they do not drift)."""
        if self.interval_s is not None:
            if due > now:
                return due
            behind = (now - due).total_seconds() // self.interval_s + 1
            return due + timedelta(seconds=self.interval_s * behind)
        return self.after(max(due, now))

    def upcoming(self, start: datetime, n: int = NEXT_RUNS) -> Iterator[datetime]:
        """`start` (a tick) and the ticks after it, `n` in all."""
        t = start
        for _ in range(n):
            yield t
            t = self.after(t)


def _timing(row: asyncpg.Record) -> Timing:
    return Timing(row["cron"], row["timezone"], row["interval_s"])


def to_schedule(row: asyncpg.Record) -> Schedule:
    paused = row["paused"]
    return Schedule(
        id=row["id"],
        crew=row["crew"],
        inputs=row["inputs"],
        metadata=row["metadata"],
        cron=row["cron"],
        timezone=row["timezone"],
        interval=row["interval_s"],
        missed=MissedPolicy(row["missed"]),
        timeout=row["timeout_s"],
        max_retries=row["max_retries"],
        paused=paused,
        next_run_at=None if paused else row["next_run_at"],
        next_runs=[] if paused else list(_timing(row).upcoming(row["next_run_at"])),
        last_run_at=row["last_run_at"],
        last_job_id=row["last_job_id"],
        livemode=row["livemode"],
        created_at=row["created_at"],
    )


@dataclass(frozen=True)
class NewSchedule:
    crew: str
    inputs: dict[str, Any]
    metadata: dict[str, Any]
    timeout_s: int
    max_retries: int
    timing: Timing
    missed: MissedPolicy


_OWNED = "tenant_id = $2 AND livemode = $3"


async def create(db: Executor, owner: Owner, new: NewSchedule) -> Schedule:
    """Store the schedule, its first tick the first one after now."""
    now = await db.fetchval("SELECT now()")
    row = await db.fetchrow(
        "INSERT INTO schedules (id, tenant_id, livemode, crew, inputs, metadata, timeout_s,"
        " max_retries, cron, timezone, interval_s, missed, next_run_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING *",
        new_id("sch"),
        owner.tenant_id,
        owner.livemode,
        new.crew,
        new.inputs,
        new.metadata,
        new.timeout_s,
        new.max_retries,
        new.timing.cron,
        new.timing.timezone,
        new.timing.interval_s,
        new.missed,
        new.timing.after(now),
    )
    assert row is not None
    return to_schedule(row)


async def get(db: Executor, owner: Owner, schedule_id: str) -> Schedule | None:
    row = await db.fetchrow(
        f"SELECT * FROM schedules WHERE id = $1 AND {_OWNED}",
        schedule_id,
        owner.tenant_id,
        owner.livemode,
    )
    return to_schedule(row) if row else None


async def page(
    db: Executor, owner: Owner, *, before: str | None, limit: int
) -> tuple[list[Schedule], bool]:
    """Newest first; `before` is the last id of the previous page."""
    rows = await db.fetch(
        "SELECT * FROM schedules WHERE tenant_id = $1 AND livemode = $2"
        " AND ($3::text IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
        owner.tenant_id,
        owner.livemode,
        before,
        one_more(limit),
    )
    rows, has_more = cut(rows, limit)
    return [to_schedule(r) for r in rows], has_more


async def pause(db: Executor, owner: Owner, schedule_id: str) -> Schedule | None:
    """Stop making jobs (pausing a paused schedule changes nothing)."""
    row = await db.fetchrow(
        f"UPDATE schedules SET paused = true WHERE id = $1 AND {_OWNED} RETURNING *",
        schedule_id,
        owner.tenant_id,
        owner.livemode,
    )
    return to_schedule(row) if row else None


async def resume(db: Executor, owner: Owner, schedule_id: str) -> Schedule | None:
    """Make jobs again from the first tick after now: the ticks of the pause were not
    missed, they were not wanted. Resuming a running schedule changes nothing."""
    row = await db.fetchrow(
        f"SELECT *, now() AS now FROM schedules WHERE id = $1 AND {_OWNED}",
        schedule_id,
        owner.tenant_id,
        owner.livemode,
    )
    if row is None or not row["paused"]:
        return to_schedule(row) if row else None
    # Compare-and-set: of two resumes at once, one moves it; both answer the same row.
    await db.execute(
        "UPDATE schedules SET paused = false, next_run_at = $3"
        " WHERE id = $1 AND paused AND next_run_at = $2",
        schedule_id,
        row["next_run_at"],
        _timing(row).first_after(row["next_run_at"], row["now"]),
    )
    return await get(db, owner, schedule_id)


async def delete(db: Executor, owner: Owner, schedule_id: str) -> bool:
    """The jobs it made stay."""
    deleted = await db.fetchval(
        f"DELETE FROM schedules WHERE id = $1 AND {_OWNED} RETURNING id",
        schedule_id,
        owner.tenant_id,
        owner.livemode,
    )
    return deleted is not None


# --- firing ---


@dataclass(frozen=True)
class Fired:
    """One claimed tick (or run of missed ticks) of a schedule, and what came of it."""

    schedule_id: str
    due: datetime  # the tick (for missed ticks: the first of them)
    missed: bool  # due longer ago than `missed_after_s`: the policy decided
    # The job made (None: missed ticks skipped, or the tenant's bounds refused it).
    job_id: str | None
    refused: job_submission.TooManyPending | usage.QuotaExceeded | None
    created_at: datetime | None  # the job's
    after: jobs.AfterCommit  # the job to queue once this committed


@dataclass(frozen=True)
class Bounds:
    """What a tick's job is bounded by, as a submission is."""

    max_pending: int
    cap: int
    missed_after_s: float


async def fire_one(pool: asyncpg.Pool, bounds: Bounds) -> Fired | None:
    """Claim one due schedule that no other scheduler holds and fire its tick, in one
    transaction; None when none is due (or every due one is held elsewhere)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT s.*, t.plan, t.monthly_job_limit, now() AS now"
            "  FROM schedules s JOIN tenants t ON t.id = s.tenant_id"
            " WHERE NOT s.paused AND s.next_run_at <= now()"
            " ORDER BY s.next_run_at LIMIT 1 FOR UPDATE OF s SKIP LOCKED"
        )
        if row is None:
            return None
        due, now, timing = row["next_run_at"], row["now"], _timing(row)
        missed = (now - due).total_seconds() > bounds.missed_after_s
        if missed:
            run = MissedPolicy(row["missed"]) is MissedPolicy.RUN_ONCE
            following = timing.first_after(due, now)
        else:
            # On time (or nearly): this tick's job; a tick after it already due too is
            # claimed by the next call.
            run, following = True, timing.after(due)
        job_id, created_at, refused, after = None, None, None, jobs.AfterCommit()
        if run:
            quota = allowance(
                Plan(row["plan"]), rate_limit=None, monthly_job_limit=row["monthly_job_limit"]
            )
            inserted = await job_submission.insert(
                conn,
                job_submission.NewJob(
                    tenant_id=row["tenant_id"],
                    crew=row["crew"],
                    inputs=row["inputs"],
                    metadata={**row["metadata"], "schedule_id": row["id"]},
                    webhook_url=None,
                    timeout_s=row["timeout_s"],
                    max_retries=row["max_retries"],
                    idempotency_key=f"schedule:{row['id']}:{due.isoformat()}",
                    livemode=row["livemode"],
                    monthly_limit=quota.jobs_per_month,
                ),
                bounds.max_pending,
                bounds.cap,
            )
            # A schedule's jobs carry no concurrency key: it cannot refuse one.
            assert not isinstance(inserted, job_submission.ConcurrencyBusy)
            if isinstance(inserted, job_submission.TooManyPending | usage.QuotaExceeded):
                refused = inserted
            else:
                job_id, created_at = inserted.job.id, inserted.job.created_at
                if inserted.created and not inserted.parked:
                    after = jobs.queue_job(job_id)
        moved = await conn.fetchval(
            "UPDATE schedules SET next_run_at = $3,"
            " last_run_at = CASE WHEN $4::text IS NULL THEN last_run_at ELSE $2 END,"
            " last_job_id = coalesce($4, last_job_id)"
            " WHERE id = $1 AND next_run_at = $2 RETURNING id",
            row["id"],
            due,
            following,
            job_id,
        )
        assert moved is not None  # the row is locked: nothing else moved it
        return Fired(row["id"], due, missed, job_id, refused, created_at, after)
