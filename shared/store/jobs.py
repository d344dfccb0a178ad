"""Jobs in Postgres: the job state machine, and every statement on `jobs` and
`job_attempts`.

Every move of a job is one of the `Move`s below, made by `_move`: a compare-and-set UPDATE
from the states the move may leave (and, for a running job, the attempt it expects), then
the attempt it opens or closes, the tenant slot it hands on and the event it owes, all in
the caller's transaction. A duplicate queue delivery, a late worker or a concurrent cancel
finds the guard false and changes nothing; Postgres refuses any other change of status
outright (the `jobs_state_machine` trigger, migration 0002).

A tenant runs at most its cap of jobs at once. A job submitted while its tenant already
has as many running or queued as its cap allows is parked: it stays pending, off the
queue, and costs nothing while it waits (a worker parks one too, should it be offered a job
whose tenant is at its cap). When one of the tenant's running jobs ends, the move that ends
it unparks the tenant's oldest parked job, queued once the move commits (every move returns
what it leaves to do after its commit, `AfterCommit`, for `shared/domain/after_commit.py`).
A tenant's submissions, starts and hand-overs take one advisory lock, so a job is never
parked just as the slot it waits for is freed, and parked jobs leave in the order they came.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg
from pydantic import BaseModel

from schemas.events import EventType, JobResumed
from schemas.jobs import (
    TERMINAL_STATUSES,
    AttemptOutcome,
    Budget,
    ErrorCode,
    InputAnswer,
    InputDefault,
    Job,
    JobAttempt,
    JobError,
    JobResult,
    JobState,
    JobStatus,
    Progress,
    Usage,
)
from shared.domain.owners import Owner
from shared.runtime.db import Conn, Executor, TenantLock, lock_tenant, storable
from shared.runtime.ids import new_id
from shared.runtime.limits import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_PAGE_BYTES,
    bound_result,
)
from shared.store import checkpoints, usage
from shared.store.events import emit
from shared.store.paging import cut, one_more

PENDING, RUNNING = JobStatus.PENDING, JobStatus.RUNNING
COMPLETED, FAILED, CANCELLED = JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED
AWAITING_INPUT = JobStatus.AWAITING_INPUT
SCHEDULED, EXPIRED = JobStatus.SCHEDULED, JobStatus.EXPIRED


@dataclass(frozen=True)
class Move:
    """One edge of the job state machine: the states a job may leave by it, where it goes,
    the columns it writes besides `status` (reading the values given to `_move` as
    `given.*` and the row as it was as `j.*`), and the event it owes."""

    sources: frozenset[JobStatus]
    target: JobStatus
    event: EventType | None
    sets: str

    @property
    def frees_slot(self) -> bool:
        return RUNNING in self.sources and self.target is not RUNNING

    @property
    def sql(self) -> str:
        sources = ", ".join(f"'{s}'" for s in sorted(self.sources))
        return f"""
            UPDATE jobs j SET status = '{self.target}', last_activity_at = now(), {self.sets}
              FROM (SELECT $4::jsonb AS error, $5::text AS worker_id, $6::jsonb AS result,
                           $7::jsonb AS token_usage, $8::float8 AS delay_s,
                           $10::jsonb AS input, $11::jsonb AS budget) given
             WHERE j.id = $1 AND j.status IN ({sources})
               AND ($2::int IS NULL OR j.attempt = $2)
               AND ($3::text IS NULL OR (j.tenant_id = $3 AND j.livemode = $9))
            RETURNING j.*"""


START = Move(
    frozenset({PENDING}),
    RUNNING,
    EventType.JOB_STARTED,
    "attempt = j.attempt + 1, worker_id = given.worker_id, parked_at = NULL,"
    " started_at = coalesce(j.started_at, now()), progress = NULL, token_usage = NULL",
)
COMPLETE = Move(
    frozenset({RUNNING}),
    COMPLETED,
    EventType.JOB_COMPLETED,
    "result = given.result, token_usage = given.token_usage, error = NULL, finished_at = now()",
)
FAIL = Move(
    frozenset({RUNNING}), FAILED, EventType.JOB_FAILED, "error = given.error, finished_at = now()"
)
CANCEL = Move(frozenset({RUNNING}), CANCELLED, EventType.JOB_CANCELLED, "finished_at = now()")
# Back to pending after a failure, to start again once `delay_s` has passed.
RETRY = Move(
    frozenset({RUNNING}),
    PENDING,
    EventType.JOB_RETRYING,
    "error = given.error, worker_id = NULL,"
    " run_after = now() + make_interval(secs => given.delay_s)",
)
# Back to pending from a draining worker, without spending an attempt.
RELEASE = Move(
    frozenset({RUNNING}),
    PENDING,
    None,
    "worker_id = NULL, uncounted_attempts = j.uncounted_attempts + 1, run_after = now()",
)
# A pending job cancelled before it ran, or one waiting for input cancelled (or rejected
# at its input timeout) while it waits.
_NO_INPUT_ASKED = "input_request = NULL, input_expires_at = NULL"
WITHDRAW = Move(
    frozenset({PENDING, AWAITING_INPUT, SCHEDULED}),
    CANCELLED,
    EventType.JOB_CANCELLED,
    "finished_at = now(), cancel_requested_at = coalesce(j.cancel_requested_at, now()),"
    f" error = NULL, parked_at = NULL, {_NO_INPUT_ASKED}",
)
# A task asks a person: the attempt ends and frees its slot; the job waits for an answer
# (`given.input`: what is asked) for `delay_s`. The answer of an earlier pause is spent.
AWAIT_INPUT = Move(
    frozenset({RUNNING}),
    AWAITING_INPUT,
    EventType.JOB_INPUT_REQUIRED,
    "worker_id = NULL, input_answer = NULL,"
    " input_request = given.input || jsonb_build_object('asked_at', now(),"
    " 'expires_at', now() + make_interval(secs => given.delay_s)),"
    " input_expires_at = now() + make_interval(secs => given.delay_s)",
)
# Answered (`given.input`), or approved at its timeout: back to pending, to resume from its
# checkpoint with the answer, on a fresh retry budget (the pause spent none).
ANSWER = Move(
    frozenset({AWAITING_INPUT}),
    PENDING,
    EventType.JOB_INPUT_RECEIVED,
    f"input_answer = given.input, {_NO_INPUT_ASKED}, uncounted_attempts = j.attempt,"
    " error = NULL, run_after = now()",
)
# Nobody answered in time, and the job's default is to fail.
EXPIRE = Move(
    frozenset({AWAITING_INPUT}),
    FAILED,
    EventType.JOB_FAILED,
    f"error = given.error, finished_at = now(), {_NO_INPUT_ASKED}",
)
# `POST /v1/jobs/{id}/retry`: a fresh run with a full retry budget.
RESTART = Move(
    frozenset({FAILED, CANCELLED}),
    PENDING,
    EventType.JOB_RETRYING,
    "uncounted_attempts = j.attempt, error = NULL, result = NULL, token_usage = NULL,"
    " progress = NULL, input_answer = NULL,"
    # Each limit given replaces the job's; the others stand.
    " budget = CASE WHEN given.budget IS NULL THEN j.budget"
    " ELSE coalesce(j.budget, '{}'::jsonb) || given.budget END,"
    " cancel_requested_at = NULL, finished_at = NULL, worker_id = NULL, run_after = now()",
)
# A scheduled job comes due: it waits for a slot as any pending job.
PROMOTE = Move(frozenset({SCHEDULED}), PENDING, None, "run_after = now()")
# Not started before its expiry (ttl): it never will.
LAPSE = Move(
    frozenset({PENDING, SCHEDULED}),
    EXPIRED,
    EventType.JOB_EXPIRED,
    "finished_at = now(), parked_at = NULL",
)
MOVES = (
    START,
    COMPLETE,
    FAIL,
    CANCEL,
    RETRY,
    RELEASE,
    WITHDRAW,
    RESTART,
    AWAIT_INPUT,
    ANSWER,
    EXPIRE,
    PROMOTE,
    LAPSE,
)


@dataclass(frozen=True)
class Given:
    """The values a move writes besides its status; each move reads the ones it needs."""

    error: JobError | None = None
    worker_id: str | None = None
    result: JobResult | None = None
    token_usage: dict[str, Any] | None = None
    delay_s: float = 0.0
    input: dict[str, Any] | None = None  # what a paused job asks, or the answer it is given
    budget: Budget | None = None  # a restart's new budget (None: the job's stands)
    # How much of each of the result's outputs is stored, and of the event's data.
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES


class Queueing(StrEnum):
    """How a job is put on the queue once the move that calls for it commits."""

    # Unless the queue holds it already: a job that never was on it (new, or unparked).
    QUEUE = "queue"
    # Runnable now whatever the queue holds of it: a dead worker's in-progress claim is
    # dropped, an entry still deferred (a retry delay) is brought forward.
    AT_ONCE = "at_once"


@dataclass(frozen=True)
class ToQueue:
    job_id: str
    how: Queueing


@dataclass(frozen=True)
class Finished:
    """A job reached a final state: counted once, by `crew` and `status`."""

    crew: str
    status: JobStatus
    ran_s: float | None  # the run's length; None when the move ended no attempt


@dataclass(frozen=True)
class Retried:
    """An attempt failed and the job goes back to pending to start again."""

    crew: str
    reason: ErrorCode


@dataclass(frozen=True)
class AfterCommit:
    """What a job's move leaves to do once its transaction commits, never before: a job
    queued earlier could be taken by a worker that cannot see it yet, and a metric counted
    earlier would count a move that rolled back. Every store function that moves jobs
    returns one; `shared/domain/after_commit.py` `carry_out` does it, for every caller."""

    queue: tuple[ToQueue, ...] = ()
    counts: tuple[Finished | Retried, ...] = ()

    def __add__(self, other: "AfterCommit") -> "AfterCommit":
        return AfterCommit(self.queue + other.queue, self.counts + other.counts)

    @property
    def job_ids(self) -> list[str]:
        """The jobs to queue, in order."""
        return [q.job_id for q in self.queue]

    def at_once(self) -> "AfterCommit":
        """The same, each job queued `AT_ONCE`."""
        at_once = tuple(ToQueue(q.job_id, Queueing.AT_ONCE) for q in self.queue)
        return AfterCommit(at_once, self.counts)


def queue_job(job_id: str) -> AfterCommit:
    """Queue this job (`QUEUE`; `.at_once()` for `AT_ONCE`) once the statement that made it
    queueable commits: an insert, a restart, a reaper's retry."""
    return AfterCommit(queue=(ToQueue(job_id, Queueing.QUEUE),))


@dataclass(frozen=True)
class Moved:
    row: asyncpg.Record
    unparked: str | None  # a parked job of the tenant the move freed a slot for: queue it
    after: AfterCommit  # what the move leaves to do once it commits


def _counted(
    move: Move, row: asyncpg.Record, error: JobError | None
) -> tuple[Finished | Retried, ...]:
    """What a move counts: the job's final state (timed only when the move ended an
    attempt), or the retry of a failed attempt. A hand-back (no error), a start or a
    restart count nothing."""
    status = JobStatus(row["status"])
    if status in TERMINAL_STATUSES:
        started, finished = row["started_at"], row["finished_at"]
        timed = RUNNING in move.sources and started is not None and finished is not None
        ran = (finished - started).total_seconds() if timed else None
        return (Finished(row["crew"], status, ran),)
    if status is PENDING and RUNNING in move.sources and error is not None:
        return (Retried(row["crew"], error.code),)
    return ()


def _json(model: BaseModel | None) -> Any:
    return storable(model.model_dump(mode="json")) if model is not None else None


async def _move(
    conn: Conn,
    move: Move,
    job_id: str,
    *,
    attempt: int | None = None,
    owner: Owner | None = None,
    given: Given = Given(),
    outcome: AttemptOutcome | None = None,
) -> Moved | None:
    """Make `move` on the job if it is in one of the move's sources (and at `attempt`, and
    the owner's, when given): open or close the attempt, hand a freed slot on, owe the
    event. None: the job was not there to move, and nothing changed."""
    error = _json(given.error)
    row = await conn.fetchrow(
        move.sql,
        job_id,
        attempt,
        owner.tenant_id if owner else None,
        error,
        given.worker_id,
        _json(bound_result(given.result, given.max_output_bytes) if given.result else None),
        storable(given.token_usage),
        given.delay_s,
        owner.livemode if owner else None,
        storable(given.input),
        storable(given.budget.model_dump(mode="json", exclude_none=True)) if given.budget else None,
    )
    if row is None:
        return None
    if move.target is COMPLETED:  # nothing resumes a completed job: its state can go
        await checkpoints.delete_all(conn, job_id)
    if move.target is RUNNING:
        await conn.execute(
            "INSERT INTO job_attempts (job_id, number, worker_id) VALUES ($1, $2, $3)",
            job_id,
            row["attempt"],
            given.worker_id,
        )
    elif RUNNING in move.sources:
        assert outcome is not None, f"a move from running closes the attempt: {move}"
        await conn.execute(
            "UPDATE job_attempts SET finished_at = now(), outcome = $3, error = $4"
            " WHERE job_id = $1 AND number = $2",
            job_id,
            row["attempt"],
            outcome,
            error,
        )
    unparked = (
        await _hand_on_slot(conn, row["tenant_id"], row["concurrency_key"])
        if move.frees_slot
        else None
    )
    if move.event is not None:
        await emit(
            conn,
            tenant_id=row["tenant_id"],
            type=move.event,
            data=to_state(row),
            job_id=job_id,
            job_webhook_url=row["webhook_url"],
            livemode=row["livemode"],
            max_output_bytes=given.max_output_bytes,
        )
    queued = (ToQueue(unparked, Queueing.QUEUE),) if unparked else ()
    return Moved(row, unparked, AfterCommit(queued, _counted(move, row, given.error)))


async def _hand_on_slot(conn: Conn, tenant_id: str, key: str | None) -> str | None:
    """A running job of the tenant ended: unpark its parked job that waits longest for the
    key the ended job held (if any), else its first by priority and age."""
    await lock_tenant(conn, TenantLock.JOBS, tenant_id)
    unparked = await conn.fetchval(
        """
        UPDATE jobs SET parked_at = NULL
         WHERE id = (SELECT id FROM jobs WHERE tenant_id = $1 AND parked_at IS NOT NULL
                      ORDER BY concurrency_key IS NOT DISTINCT FROM $2 DESC, priority DESC, id
                      LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING id
        """,
        tenant_id,
        key,
    )
    return str(unparked) if unparked else None


# --- reading jobs ---


def to_state(row: asyncpg.Record) -> JobState:
    return JobState(
        id=row["id"],
        livemode=row["livemode"],
        status=row["status"],
        crew=row["crew"],
        attempt=row["attempt"],
        max_retries=row["max_retries"],
        result=row["result"],
        progress=row["progress"],
        token_usage=row["token_usage"],
        error=row["error"],
        worker_id=row["worker_id"],
        input_request=row["input_request"],
        usage=row["usage"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def to_job(row: asyncpg.Record, attempts: list[asyncpg.Record]) -> Job:
    return Job(
        **to_state(row).model_dump(),
        inputs=row["inputs"],
        metadata=row["metadata"],
        webhook_url=row["webhook_url"],
        timeout=row["timeout_s"],
        input_timeout=row["input_timeout_s"],
        input_default=row["input_default"],
        budget=row["budget"],
        priority=row["priority"],
        concurrency_key=row["concurrency_key"],
        concurrency_limit=row["concurrency_limit"],
        run_at=row["run_after"],
        expires_at=row["expires_at"],
        attempts=[
            JobAttempt(
                number=a["number"],
                worker_id=a["worker_id"],
                started_at=a["started_at"],
                finished_at=a["finished_at"],
                outcome=a["outcome"],
                error=a["error"],
                resumed_from=a["resumed_from"],
            )
            for a in attempts
        ],
        last_activity_at=row["last_activity_at"],
        cancel_requested_at=row["cancel_requested_at"],
    )


async def _attempts(db: Executor, job_ids: list[str]) -> dict[str, list[asyncpg.Record]]:
    found: dict[str, list[asyncpg.Record]] = {i: [] for i in job_ids}
    if job_ids:
        for a in await db.fetch(
            "SELECT * FROM job_attempts WHERE job_id = ANY($1::text[]) ORDER BY number", job_ids
        ):
            found[a["job_id"]].append(a)
    return found


# A job is its owner's when it is of the owner's tenant and mode ($2, $3: `_of`): a test
# key's id of a live job reads as unknown, as another tenant's does.
_OWNED = "tenant_id = $2 AND livemode = $3"


def _of(owner: Owner) -> tuple[str, bool]:
    return owner.tenant_id, owner.livemode


async def exists(db: Executor, owner: Owner, job_id: str) -> bool:
    found = await db.fetchval(f"SELECT 1 FROM jobs WHERE id = $1 AND {_OWNED}", job_id, *_of(owner))
    return found is not None


async def get(db: Executor, owner: Owner, job_id: str) -> Job | None:
    row = await db.fetchrow(f"SELECT * FROM jobs WHERE id = $1 AND {_OWNED}", job_id, *_of(owner))
    return to_job(row, (await _attempts(db, [job_id]))[job_id]) if row else None


# Roughly how many bytes a job takes in an answer: its JSON columns as Postgres writes them
# (what grows), and a kilobyte for the rest (ids, times, its attempts' short errors).
_WIRE_BYTES = (
    "octet_length(inputs::text) + octet_length(metadata::text)"
    " + coalesce(octet_length(result::text), 0) + 1024"
)


async def many(
    db: Executor, owner: Owner, job_ids: list[str], *, max_bytes: int = DEFAULT_MAX_PAGE_BYTES
) -> tuple[list[Job], list[str]]:
    """The owner's jobs among `job_ids`, in the order asked (each once), as many as add up
    to `max_bytes` (one at least), and the ids of the owner's jobs left out past that; the
    rest are silently absent, whether they do not exist or are another tenant's or mode's.
    The running sum is taken in Postgres: the jobs left out are never loaded here."""
    rows = await db.fetch(
        f"""
        WITH sized AS (
            SELECT id, row_number() OVER w AS n, sum({_WIRE_BYTES}) OVER w AS upto
              FROM jobs WHERE id = ANY ($1::text[]) AND {_OWNED}
            WINDOW w AS (ORDER BY array_position($1::text[], id))
        )
        SELECT s.id AS asked, j.*
          FROM sized s LEFT JOIN jobs j ON j.id = s.id AND (s.n = 1 OR s.upto <= $4)
         ORDER BY s.n
        """,
        job_ids,
        *_of(owner),
        max_bytes,
    )
    found = [r for r in rows if r["id"] is not None]
    attempts = await _attempts(db, [r["id"] for r in found])
    omitted = [r["asked"] for r in rows if r["id"] is None]
    return [to_job(r, attempts[r["id"]]) for r in found], omitted


@dataclass(frozen=True)
class JobFilter:
    """What `GET /v1/jobs` may narrow a tenant's jobs to; None: no condition."""

    status: JobStatus | None = None
    crew: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    metadata: dict[str, str] | None = None  # every key must hold exactly this string


async def page(
    db: Executor,
    owner: Owner,
    where: JobFilter,
    *,
    before: str | None,
    limit: int,
    max_bytes: int = DEFAULT_MAX_PAGE_BYTES,
) -> tuple[list[Job], bool]:
    """Newest first; `before` is the last id of the previous page. The page stops early,
    with more to follow, once its jobs add up to `max_bytes` (it always holds one): the
    running sum is taken in Postgres, so the jobs past it are never loaded here (issue 19:
    a hundred large jobs made one answer 60 MB)."""
    rows = await db.fetch(
        f"""
        WITH page AS (
        SELECT id, row_number() OVER w AS n, sum({_WIRE_BYTES}) OVER w AS upto FROM jobs
         WHERE tenant_id = $1 AND livemode = $9
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR crew = $3)
           AND ($4::text IS NULL OR id < $4)
           AND ($6::timestamptz IS NULL OR created_at > $6)
           AND ($7::timestamptz IS NULL OR created_at < $7)
           AND ($8::jsonb IS NULL OR metadata @> $8)
        WINDOW w AS (ORDER BY id DESC)
         ORDER BY id DESC
         LIMIT $5
        )
        SELECT j.*, (SELECT count(*) FROM page) AS seen
          FROM page p JOIN jobs j ON j.id = p.id
         WHERE p.n = 1 OR p.upto <= $10
         ORDER BY j.id DESC
        """,
        owner.tenant_id,
        where.status,
        where.crew,
        before,
        one_more(limit),
        where.created_after,
        where.created_before,
        where.metadata or None,
        owner.livemode,
        max_bytes,
    )
    rows, has_more = cut(rows, limit, seen=rows[0]["seen"] if rows else 0)
    attempts = await _attempts(db, [r["id"] for r in rows])
    return [to_job(r, attempts[r["id"]]) for r in rows], has_more


async def matching(db: Executor, owner: Owner, where: JobFilter) -> list[str]:
    """The ids of every job of the owner's the filter matches now, oldest first: what a
    bulk action takes (shared/store/bulk_operations.py), frozen when it is asked."""
    rows = await db.fetch(
        """
        SELECT id FROM jobs
         WHERE tenant_id = $1 AND livemode = $2
           AND ($3::text IS NULL OR status = $3)
           AND ($4::text IS NULL OR crew = $4)
           AND ($5::timestamptz IS NULL OR created_at > $5)
           AND ($6::timestamptz IS NULL OR created_at < $6)
           AND ($7::jsonb IS NULL OR metadata @> $7)
         ORDER BY id
        """,
        owner.tenant_id,
        owner.livemode,
        where.status,
        where.crew,
        where.created_after,
        where.created_before,
        where.metadata or None,
    )
    return [r["id"] for r in rows]


async def traceparent_of(db: Executor, job_id: str) -> str | None:
    value = await db.fetchval("SELECT traceparent FROM jobs WHERE id = $1", job_id)
    return str(value) if value else None


# --- submitting ---


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


@dataclass(frozen=True)
class QuotaExceeded:
    limit: int
    resets_at: datetime


async def insert(
    pool: Executor, new: NewJob, default_max_pending: int, default_cap: int
) -> Inserted | TooManyPending | QuotaExceeded | ConcurrencyBusy:
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
            return QuotaExceeded(row["bound"], usage.month_ends(row["decided_at"]))
        case "replayed":
            job = to_job(row, (await _attempts(pool, [row["id"]]))[row["id"]])
            same = row["request_hash"] == new.request_hash
            return Inserted(
                job, False, same, row["parked_at"] is not None, row["status"] == SCHEDULED
            )
    return Inserted(
        to_job(row, []), True, True, row["parked_at"] is not None, row["status"] == SCHEDULED
    )


# --- running: what workers do ---


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


def _counted_attempt(row: asyncpg.Record) -> int:
    """The current attempt's number within the retry budget: hand-backs by a draining
    worker and the attempts before a manual retry do not count."""
    return int(row["attempt"]) - int(row["uncounted_attempts"])


@dataclass(frozen=True)
class NotStarted:
    """Why a queue delivery did not start the job, and when to try again (None: the job is
    not to be offered again by this delivery)."""

    reason: str
    retry_in: float | None = None
    after: "AfterCommit | None" = None  # what a move it made leaves to do (an expiry)


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
        if job["status"] != PENDING:
            return NotStarted(f"job is {job['status']}")
        if job["cancel_requested_at"] is not None:
            # Its end is left uncounted, as it always was (issue 20 changes no behaviour):
            # the move's `after` is dropped, and a withdrawal frees no slot.
            await _move(conn, WITHDRAW, job_id)
            return NotStarted("job was cancelled")
        if job["lapsed"] and job["status"] == PENDING:
            # Its expiry passed while it waited (the sweep had not reached it yet).
            lapsed = await _move(conn, LAPSE, job_id)
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
        moved = await _move(conn, START, job_id, given=Given(worker_id=worker_id))
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
        counted_attempt=_counted_attempt(row),
        max_retries=row["max_retries"],
        livemode=row["livemode"],
        waited_s=max(0.0, job["waited_s"]),
        answer=row["input_answer"],
        input_timeout_s=row["input_timeout_s"],
        input_default=InputDefault(row["input_default"]) if row["input_default"] else None,
        budget=Budget.model_validate(row["budget"]) if row["budget"] else None,
        usage=Usage.model_validate(row["usage"]) if row["usage"] else None,
    )


def _ending(outcome: AttemptOutcome, retry: bool) -> Move:
    assert outcome is not AttemptOutcome.AWAITING_INPUT, "a pause is `pause`"
    if outcome is AttemptOutcome.RELEASED:
        return RELEASE
    if retry:
        return RETRY
    if outcome is AttemptOutcome.COMPLETED:
        return COMPLETE
    if outcome is AttemptOutcome.CANCELLED:
        return CANCEL
    return FAIL


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
) -> Moved | None:
    """End this attempt: the job completes, fails or is cancelled, or (with `retry_in`) goes
    back to pending to start again after that many seconds, or (`RELEASED`) is handed back
    without spending an attempt. None: someone else moved the job first (a reaper, a
    duplicate delivery), and this outcome is discarded. Each output of `result` is stored
    up to `max_output_bytes`, the rest cut off and marked (`truncated`)."""
    move = _ending(outcome, retry_in is not None)
    given = Given(
        error=error,
        result=result,
        token_usage=token_usage,
        delay_s=retry_in or 0.0,
        max_output_bytes=max_output_bytes,
    )
    async with pool.acquire() as conn, conn.transaction():
        return await _move(
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
            _json(progress),
            token_usage,
            _json(usage),
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


# --- what clients do ---


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # was pending: cancelled now
    REQUESTED = "requested"  # was running: its worker will stop it
    ALREADY_FINISHED = "already_finished"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class Cancel:
    outcome: CancelOutcome
    after: AfterCommit = AfterCommit()  # a job cancelled while pending: its end, to count


async def request_cancel(pool: asyncpg.Pool, owner: Owner, job_id: str) -> Cancel:
    """Cancel a pending job now, or ask a running one's worker to stop it."""
    async with pool.acquire() as conn, conn.transaction():
        if withdrawn := await _move(conn, WITHDRAW, job_id, owner=owner):
            return Cancel(CancelOutcome.CANCELLED, withdrawn.after)
        requested = await conn.fetchval(
            "UPDATE jobs SET cancel_requested_at = coalesce(cancel_requested_at, now())"
            f" WHERE id = $1 AND {_OWNED} AND status = 'running' RETURNING id",
            job_id,
            *_of(owner),
        )
        if requested is not None:
            return Cancel(CancelOutcome.REQUESTED)
        found = await exists(conn, owner, job_id)
        return Cancel(CancelOutcome.ALREADY_FINISHED if found else CancelOutcome.NOT_FOUND)


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
) -> Moved | None:
    """running -> awaiting_input: this attempt ends (its slot freed) and the job waits
    `waits_s` for an answer to `asked`. None: the job moved on from this attempt."""
    bounded = asked.as_json()
    bounded["output"] = bounded["output"][:max_output_bytes]
    given = Given(input=bounded, delay_s=waits_s, max_output_bytes=max_output_bytes)
    async with pool.acquire() as conn, conn.transaction():
        return await _move(
            conn,
            AWAIT_INPUT,
            claim.job_id,
            attempt=claim.attempt,
            given=given,
            outcome=AttemptOutcome.AWAITING_INPUT,
        )


class AnswerOutcome(StrEnum):
    ANSWERED = "answered"
    NOT_AWAITING = "not_awaiting"  # answered already, or never asked: a second answer
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class Answered:
    outcome: AnswerOutcome
    after: AfterCommit = AfterCommit()  # the job, to queue once answered


def _answer_json(answer: InputAnswer, task_index: int, by: str) -> dict[str, Any]:
    return {**answer.model_dump(mode="json"), "task_index": task_index, "by": by}


async def answer_input(
    pool: asyncpg.Pool, owner: Owner, job_id: str, answer: InputAnswer
) -> Answered:
    """awaiting_input -> pending with the person's answer, to resume from its checkpoint.
    Compare-and-set: of two answers at once, one is taken and the other is NOT_AWAITING."""
    async with pool.acquire() as conn, conn.transaction():
        index = await conn.fetchval(
            f"SELECT (input_request->>'task_index')::int FROM jobs WHERE id = $1 AND {_OWNED}"
            " AND status = 'awaiting_input' FOR UPDATE",
            job_id,
            *_of(owner),
        )
        if index is not None:
            given = Given(input=_answer_json(answer, index, "person"))
            moved = await _move(conn, ANSWER, job_id, owner=owner, given=given)
            assert moved is not None  # locked above in that state
            return Answered(AnswerOutcome.ANSWERED, moved.after + queue_job(job_id))
        found = await exists(conn, owner, job_id)
    return Answered(AnswerOutcome.NOT_AWAITING if found else AnswerOutcome.NOT_FOUND)


async def expire_inputs(pool: asyncpg.Pool, limit: int = 100) -> AsyncIterator[AfterCommit]:
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
                given = Given(input=_answer_json(InputAnswer(), asked["task_index"], "timeout"))
                moved = await _move(conn, ANSWER, job_id, given=given)
                queued = queue_job(job_id)
            elif action is InputDefault.REJECT:
                moved, queued = await _move(conn, WITHDRAW, job_id), AfterCommit()
            else:
                error = JobError(
                    code=ErrorCode.INPUT_TIMEOUT,
                    message=f"nobody answered task {asked['task']!r} before {asked['expires_at']}",
                )
                moved, queued = (
                    await _move(conn, EXPIRE, job_id, given=Given(error=error)),
                    AfterCommit(),
                )
        if moved is not None:
            yield moved.after + queued


async def _sweep(pool: asyncpg.Pool, move: Move, due: str, limit: int) -> AfterCommit:
    """Make `move` on each job `due` (a WHERE clause, oldest first by its ORDER BY) picks,
    at most `limit`, in one transaction; SKIP LOCKED, so workers sweeping at once take
    different jobs. What the moves leave to do, and the moved jobs to queue when they go
    back to pending."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"SELECT id FROM jobs WHERE {due} LIMIT $1 FOR UPDATE SKIP LOCKED", limit
        )
        after = AfterCommit()
        for row in rows:
            if (moved := await _move(conn, move, row["id"])) is not None:
                queued = queue_job(row["id"]) if move.target is PENDING else AfterCommit()
                after += moved.after + queued
    return after


@dataclass(frozen=True)
class KeyCleared:
    """What a submission's concurrency strategy did to the other jobs of its key."""

    after: AfterCommit  # the withdrawn jobs' ends, to count
    stopping: list[str]  # running jobs asked to stop: their workers are to be told


async def clear_key(
    pool: asyncpg.Pool, owner: Owner, key: str, keep: str, *, running: bool
) -> KeyCleared:
    """Cancel the owner's other jobs of `key` (all but `keep`): those not started yet
    (`replace_pending`), or those running (`cancel_running`: their cancel is requested, and
    their workers stop them)."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"SELECT id FROM jobs WHERE {_OWNED} AND concurrency_key = $4 AND id <> $1"
            " AND status = ANY($5::text[]) ORDER BY id FOR UPDATE",
            keep,
            *_of(owner),
            key,
            ["running"] if running else ["pending", "scheduled"],
        )
        after, stopping = AfterCommit(), []
        for row in rows:
            if running:
                await conn.execute(
                    "UPDATE jobs SET cancel_requested_at = coalesce(cancel_requested_at, now())"
                    " WHERE id = $1 AND status = 'running'",
                    row["id"],
                )
                stopping.append(row["id"])
            elif (moved := await _move(conn, WITHDRAW, row["id"], owner=owner)) is not None:
                after += moved.after
    return KeyCleared(after, stopping)


async def promote_due(pool: asyncpg.Pool, limit: int = 500) -> AfterCommit:
    """scheduled -> pending for each job due now; queue them once this commits."""
    due = "status = 'scheduled' AND run_after <= now() ORDER BY run_after"
    return await _sweep(pool, PROMOTE, due, limit)


async def lapse_unstarted(pool: asyncpg.Pool, limit: int = 500) -> AfterCommit:
    """pending/scheduled -> expired for each job past its expiry that never started."""
    due = "status IN ('pending', 'scheduled') AND expires_at <= now() ORDER BY expires_at"
    return await _sweep(pool, LAPSE, due, limit)


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


class _QuotaUsedUp(Exception):
    """Rolls a restart back: its live job would exceed the tenant's monthly quota."""


@dataclass(frozen=True)
class Restarted:
    job: Job
    # The job, queued at once: the queue may still hold an entry of its last run deferred
    # by a retry delay (the job was cancelled while it waited), to be brought forward.
    after: AfterCommit


async def restart(
    pool: asyncpg.Pool,
    owner: Owner,
    job_id: str,
    monthly_limit: int | None = None,
    *,
    from_start: bool = False,
    budget: Budget | None = None,
) -> Restarted | QuotaExceeded | None:
    """failed/cancelled -> pending as a fresh run with a full retry budget, resuming after
    its last checkpoint (or, `from_start`, with its checkpoints deleted: from its first
    task). A live job's run counts against the tenant's monthly quota (`monthly_limit`;
    None: no quota) as a submission does, so retrying cannot run more jobs than the plan
    pays for. None: the owner has no such job in a state that may be restarted."""
    try:
        async with pool.acquire() as conn, conn.transaction():
            moved = await _move(conn, RESTART, job_id, owner=owner, given=Given(budget=budget))
            if moved is None:
                return None
            if from_start:
                await checkpoints.delete_all(conn, job_id)
            if owner.livemode and not await conn.fetchval(
                "SELECT crewq_count_job_v1(p_tenant_id => $1, p_monthly_limit => $2)",
                owner.tenant_id,
                monthly_limit,
            ):
                raise _QuotaUsedUp
            job = to_job(moved.row, (await _attempts(conn, [job_id]))[job_id])
            return Restarted(job, moved.after + queue_job(job_id).at_once())
    except _QuotaUsedUp:
        now = await pool.fetchval("SELECT now()")
        assert monthly_limit is not None  # no quota is never used up
        return QuotaExceeded(monthly_limit, usage.month_ends(now))


# --- recovery ---


async def reap(
    pool: asyncpg.Pool,
    heartbeat_timeout: float,
    timeout_grace: float,
) -> AsyncIterator[AfterCommit]:
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
                retry = row["max_retries"] + 1 - _counted_attempt(row) > 0
                error = JobError(
                    code=ErrorCode.WORKER_LOST,
                    message=f"worker {row['worker_id']} stopped heartbeating"
                    f" during attempt {row['attempt']}",
                )
            moved = await _move(
                conn,
                RETRY if retry else FAIL,
                row["id"],
                attempt=row["attempt"],
                given=Given(error=error),
                outcome=outcome,
            )
        if moved is not None:  # committed: the transaction above has ended
            sent_back = queue_job(row["id"]) if retry else AfterCommit()
            yield (sent_back + moved.after).at_once()


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
