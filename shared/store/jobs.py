"""Jobs in Postgres: the job state machine, reading jobs, and what clients do to a job
(cancel it, answer its question, restart it).

Every move of a job is one of the `Move`s below, made by `move`: a compare-and-set UPDATE
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

The statements on `jobs` and `job_attempts` are this module's and its three companions',
each one part of a job's life built on the moves here (this module imports none of them):
`job_submission.py` inserts a job and applies its concurrency key's strategy to the key's
other jobs; `job_attempts.py` is a worker's attempt, from its start to its end or pause;
`job_sweeps.py` holds the periodic passes over every tenant's jobs (moves that fall due,
the reaper, the reconciler's reads and unparking, retention). The helpers they share are
public here: `move`, `attempts_of`, `OWNED` with `owner_values`, `answer_json`, `jsonb`.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg
from pydantic import BaseModel

from schemas.events import EventType
from schemas.jobs import (
    TERMINAL_STATUSES,
    AttemptOutcome,
    Budget,
    ErrorCode,
    InputAnswer,
    Job,
    JobAttempt,
    JobError,
    JobResult,
    JobState,
    JobStatus,
)
from shared.domain.owners import Owner
from shared.runtime.db import Conn, Executor, TenantLock, lock_tenant, storable
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
    the columns it writes besides `status` (reading the values given to `move` as
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


def jsonb(model: BaseModel | None) -> Any:
    """A model as a jsonb parameter (None: NULL), as Postgres will store it."""
    return storable(model.model_dump(mode="json")) if model is not None else None


async def move(
    conn: Conn,
    edge: Move,
    job_id: str,
    *,
    attempt: int | None = None,
    owner: Owner | None = None,
    given: Given = Given(),
    outcome: AttemptOutcome | None = None,
) -> Moved | None:
    """Make the move `edge` on the job if it is in one of its sources (and at `attempt`, and
    the owner's, when given): open or close the attempt, hand a freed slot on, owe the
    event. None: the job was not there to move, and nothing changed."""
    error = jsonb(given.error)
    row = await conn.fetchrow(
        edge.sql,
        job_id,
        attempt,
        owner.tenant_id if owner else None,
        error,
        given.worker_id,
        jsonb(bound_result(given.result, given.max_output_bytes) if given.result else None),
        storable(given.token_usage),
        given.delay_s,
        owner.livemode if owner else None,
        storable(given.input),
        storable(given.budget.model_dump(mode="json", exclude_none=True)) if given.budget else None,
    )
    if row is None:
        return None
    if edge.target is COMPLETED:  # nothing resumes a completed job: its state can go
        await checkpoints.delete_all(conn, job_id)
    if edge.target is RUNNING:
        await conn.execute(
            "INSERT INTO job_attempts (job_id, number, worker_id) VALUES ($1, $2, $3)",
            job_id,
            row["attempt"],
            given.worker_id,
        )
    elif RUNNING in edge.sources:
        assert outcome is not None, f"a move from running closes the attempt: {edge}"
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
        if edge.frees_slot
        else None
    )
    if edge.event is not None:
        await emit(
            conn,
            tenant_id=row["tenant_id"],
            type=edge.event,
            data=to_state(row),
            job_id=job_id,
            job_webhook_url=row["webhook_url"],
            livemode=row["livemode"],
            max_output_bytes=given.max_output_bytes,
        )
    queued = (ToQueue(unparked, Queueing.QUEUE),) if unparked else ()
    return Moved(row, unparked, AfterCommit(queued, _counted(edge, row, given.error)))


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


async def attempts_of(db: Executor, job_ids: list[str]) -> dict[str, list[asyncpg.Record]]:
    """The attempts of each of `job_ids` (none for a job without any), by number: what
    `to_job` takes besides the job's row."""
    found: dict[str, list[asyncpg.Record]] = {i: [] for i in job_ids}
    if job_ids:
        for a in await db.fetch(
            "SELECT * FROM job_attempts WHERE job_id = ANY($1::text[]) ORDER BY number", job_ids
        ):
            found[a["job_id"]].append(a)
    return found


# A job is its owner's when it is of the owner's tenant and mode ($2, $3: `owner_values`):
# a test key's id of a live job reads as unknown, as another tenant's does.
OWNED = "tenant_id = $2 AND livemode = $3"


def owner_values(owner: Owner) -> tuple[str, bool]:
    """The values of `OWNED`'s $2 and $3, to spread into a statement's arguments."""
    return owner.tenant_id, owner.livemode


async def exists(db: Executor, owner: Owner, job_id: str) -> bool:
    found = await db.fetchval(
        f"SELECT 1 FROM jobs WHERE id = $1 AND {OWNED}", job_id, *owner_values(owner)
    )
    return found is not None


async def get(db: Executor, owner: Owner, job_id: str) -> Job | None:
    row = await db.fetchrow(
        f"SELECT * FROM jobs WHERE id = $1 AND {OWNED}", job_id, *owner_values(owner)
    )
    return to_job(row, (await attempts_of(db, [job_id]))[job_id]) if row else None


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
              FROM jobs WHERE id = ANY ($1::text[]) AND {OWNED}
            WINDOW w AS (ORDER BY array_position($1::text[], id))
        )
        SELECT s.id AS asked, j.*
          FROM sized s LEFT JOIN jobs j ON j.id = s.id AND (s.n = 1 OR s.upto <= $4)
         ORDER BY s.n
        """,
        job_ids,
        *owner_values(owner),
        max_bytes,
    )
    found = [r for r in rows if r["id"] is not None]
    attempts = await attempts_of(db, [r["id"] for r in found])
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
    attempts = await attempts_of(db, [r["id"] for r in rows])
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
        if withdrawn := await move(conn, WITHDRAW, job_id, owner=owner):
            return Cancel(CancelOutcome.CANCELLED, withdrawn.after)
        requested = await conn.fetchval(
            "UPDATE jobs SET cancel_requested_at = coalesce(cancel_requested_at, now())"
            f" WHERE id = $1 AND {OWNED} AND status = 'running' RETURNING id",
            job_id,
            *owner_values(owner),
        )
        if requested is not None:
            return Cancel(CancelOutcome.REQUESTED)
        found = await exists(conn, owner, job_id)
        return Cancel(CancelOutcome.ALREADY_FINISHED if found else CancelOutcome.NOT_FOUND)


class AnswerOutcome(StrEnum):
    ANSWERED = "answered"
    NOT_AWAITING = "not_awaiting"  # answered already, or never asked: a second answer
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class Answered:
    outcome: AnswerOutcome
    after: AfterCommit = AfterCommit()  # the job, to queue once answered


def answer_json(answer: InputAnswer, task_index: int, by: str) -> dict[str, Any]:
    """An answer as the job stores it (`input_answer`, given to `ANSWER`): the task it
    answers and who gave it, a person or the `approve` default at the input timeout."""
    return {**answer.model_dump(mode="json"), "task_index": task_index, "by": by}


async def answer_input(
    pool: asyncpg.Pool, owner: Owner, job_id: str, answer: InputAnswer
) -> Answered:
    """awaiting_input -> pending with the person's answer, to resume from its checkpoint.
    Compare-and-set: of two answers at once, one is taken and the other is NOT_AWAITING."""
    async with pool.acquire() as conn, conn.transaction():
        index = await conn.fetchval(
            f"SELECT (input_request->>'task_index')::int FROM jobs WHERE id = $1 AND {OWNED}"
            " AND status = 'awaiting_input' FOR UPDATE",
            job_id,
            *owner_values(owner),
        )
        if index is not None:
            given = Given(input=answer_json(answer, index, "person"))
            moved = await move(conn, ANSWER, job_id, owner=owner, given=given)
            assert moved is not None  # locked above in that state
            return Answered(AnswerOutcome.ANSWERED, moved.after + queue_job(job_id))
        found = await exists(conn, owner, job_id)
    return Answered(AnswerOutcome.NOT_AWAITING if found else AnswerOutcome.NOT_FOUND)


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
) -> Restarted | usage.QuotaExceeded | None:
    """failed/cancelled -> pending as a fresh run with a full retry budget, resuming after
    its last checkpoint (or, `from_start`, with its checkpoints deleted: from its first
    task). A live job's run counts against the tenant's monthly quota (`monthly_limit`;
    None: no quota) as a submission does, so retrying cannot run more jobs than the plan
    pays for. None: the owner has no such job in a state that may be restarted."""
    try:
        async with pool.acquire() as conn, conn.transaction():
            moved = await move(conn, RESTART, job_id, owner=owner, given=Given(budget=budget))
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
            job = to_job(moved.row, (await attempts_of(conn, [job_id]))[job_id])
            return Restarted(job, moved.after + queue_job(job_id).at_once())
    except _QuotaUsedUp:
        now = await pool.fetchval("SELECT now()")
        assert monthly_limit is not None  # no quota is never used up
        return usage.QuotaExceeded(monthly_limit, usage.month_ends(now))
