"""The transactional outbox: an event and the deliveries it owes, written in the caller's
transaction so a state change and its webhooks commit (or vanish) together. `emit` is the
only writer of events and of deliveries."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from pydantic import BaseModel

from schemas.events import JOB_URL_EVENTS, Event, EventType, WebhookTest
from shared.domain.owners import Owner
from shared.runtime.db import Conn, Executor, storable
from shared.runtime.ids import new_id
from shared.runtime.limits import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_PAGE_BYTES,
    EVENT_SLACK_BYTES,
    bound_json,
)
from shared.runtime.tracing import current_traceparent
from shared.store import amp_kickoffs, deliveries, endpoints
from shared.store.deliveries import Target
from shared.store.paging import cut, one_more

# API processes LISTEN here (payload: the job id) to stream a job's events as they commit.
JOB_EVENTS_CHANNEL = "crewq_job_events"
# ... and here (payload: the tenant id) to stream all of a tenant's job events (GET /v1/stream).
TENANT_EVENTS_CHANNEL = "crewq_tenant_events"


@dataclass(frozen=True)
class Emitted:
    event: Event
    deliveries: list[str]  # the ids of the deliveries it owes


async def emit(
    conn: Conn,
    *,
    tenant_id: str,
    type: EventType,
    data: BaseModel,
    job_id: str | None = None,
    job_webhook_url: str | None = None,
    endpoint_id: str | None = None,
    livemode: bool = True,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
) -> Emitted:
    """Record `type` and owe a delivery of it to the job's own URL (outcome events only), to
    every enabled endpoint of the tenant subscribed to it and, for a job kicked off through
    AMP's API, to the AMP webhook URL that receives its type (in AMP's format, rendered when
    sent); or, with `endpoint_id`, to that endpoint alone, enabled or not (a test send).
    Every string is made storable first: a crew's output may hold what Postgres cannot.
    Data larger than one output (`max_output_bytes`) and the fields around it is stored
    cut, and marked so: an event is written to Postgres, sent to every receiver and listed
    in pages, and a crew echoing its input must not make each of those unbounded."""
    payload, original = bound_json(
        storable(data.model_dump(mode="json")), max_output_bytes + EVENT_SLACK_BYTES
    )
    event = Event(
        id=new_id("evt"),
        type=type,
        livemode=livemode,
        created_at=datetime.now(UTC),
        data=payload,
        truncated=original is not None,
        original_bytes=original,
    )
    # A job's event tells the API processes streaming it, in the same statement (at
    # commit): one round trip, not two.
    await conn.execute(
        "WITH e AS (INSERT INTO events (id, tenant_id, job_id, type, payload, created_at,"
        " traceparent) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING job_id)"
        " SELECT pg_notify($8, e.job_id), pg_notify($9, $2) FROM e WHERE e.job_id IS NOT NULL",
        event.id,
        tenant_id,
        job_id,
        type,
        event.model_dump(mode="json"),
        event.created_at,
        current_traceparent(),
        JOB_EVENTS_CHANNEL,
        TENANT_EVENTS_CHANNEL,
    )
    owner = Owner(tenant_id, livemode)
    if endpoint_id is not None:
        only = await endpoints.target(conn, owner, endpoint_id)
        targets = [only] if only else []
    else:
        targets = await endpoints.subscribed(conn, owner, type)
        if job_webhook_url and type in JOB_URL_EVENTS:
            targets.append(Target(None, job_webhook_url))
        if job_id is not None:
            targets += await amp_kickoffs.targets(conn, job_id, type)
    owed = await deliveries.insert_owed(conn, event.id, tenant_id, targets) if targets else []
    return Emitted(event, owed)


async def send_test(conn: Conn, owner: Owner, endpoint_id: str) -> tuple[str, str] | None:
    """Owe a `webhook.test` event to one endpoint, even a disabled one (a test is how to see
    a receiver is back before enabling it again). Returns (event id, delivery id); None when
    the tenant has no such endpoint."""
    async with conn.transaction():
        if not await endpoints.exists(conn, owner, endpoint_id):
            return None
        emitted = await emit(
            conn,
            tenant_id=owner.tenant_id,
            type=EventType.WEBHOOK_TEST,
            data=WebhookTest(endpoint_id=endpoint_id),
            endpoint_id=endpoint_id,
            livemode=owner.livemode,
        )
    [delivery_id] = emitted.deliveries
    return emitted.event.id, delivery_id


@dataclass(frozen=True)
class _Read:
    events: list[Event]
    cursor_known: bool  # `after_id` is an event of the job (or None)
    ended: bool  # the job had ended when they were read
    seen: int  # events within the limit, read or left out for the byte budget


async def _read(
    db: Executor,
    job_id: str,
    after_id: str | None,
    limit: int | None,
    max_bytes: int | None = None,
) -> _Read:
    """Up to `limit` (None: all) of a job's events in the order they happened, after the
    event `after_id` (from the first when None or unknown), in one statement with whether
    that event is the job's and whether the job had ended, so an ended job's events up to
    its end are all there. With `max_bytes`, only the first events whose payloads add up
    to it (the first always) are loaded: the running sum is taken in Postgres, so a page of
    large events never reaches this process whole."""
    rows = await db.fetch(
        """
        WITH start AS (SELECT created_at, id FROM events WHERE id = $2 AND job_id = $1)
        SELECT ($2::text IS NULL OR EXISTS (SELECT 1 FROM start)) AS known,
               (SELECT status IN ('completed', 'failed', 'cancelled') FROM jobs WHERE id = $1)
                   AS ended,
               e.n, e.payload
          FROM (SELECT 1) one
          LEFT JOIN LATERAL (
                SELECT s.n, ev.payload
                  FROM (SELECT id, row_number() OVER w AS n,
                               sum(octet_length(payload::text)) OVER w AS upto
                          FROM events
                         WHERE job_id = $1
                           AND (NOT EXISTS (SELECT 1 FROM start)
                                OR (created_at, id) > (SELECT created_at, id FROM start))
                        WINDOW w AS (ORDER BY created_at, id)
                         ORDER BY created_at, id
                         LIMIT $3) s
                  LEFT JOIN events ev
                    ON ev.id = s.id AND ($4::bigint IS NULL OR s.n = 1 OR s.upto <= $4)
                 ORDER BY s.n) e ON true
        """,
        job_id,
        after_id,
        limit,
        max_bytes,
    )
    events = [Event.model_validate(r["payload"]) for r in rows if r["payload"] is not None]
    seen = sum(1 for r in rows if r["n"] is not None)
    return _Read(events, rows[0]["known"], bool(rows[0]["ended"]), seen)


async def after(db: Executor, job_id: str, after_id: str | None) -> tuple[list[Event], bool]:
    """A job's events in the order they happened, after the event `after_id` (all when None
    or unknown), and whether the job had ended when they were read."""
    read = await _read(db, job_id, after_id, None)
    return read.events, read.ended


async def page(
    db: Executor,
    job_id: str,
    *,
    after: str | None,
    limit: int,
    max_bytes: int = DEFAULT_MAX_PAGE_BYTES,
) -> tuple[list[Event], bool] | None:
    """Up to `limit` of a job's events in the order they happened, after the event `after`
    (from the first when None), and whether more follow; None when `after` is no event of
    this job (a cursor that silently started over would hand a client its events twice).
    The page stops early, with more to follow, once its events' payloads add up to
    `max_bytes` (it always holds one)."""
    read = await _read(db, job_id, after, one_more(limit), max_bytes)
    if not read.cursor_known:
        return None
    return cut(read.events, limit, seen=read.seen)


# --- a tenant's events, followed live (GET /v1/stream) ---

# Where a tenant's events are ordered: (created_at, id), as the events_tenant index holds them.
Key = tuple[datetime, str]

# Before every event: the floor of a tail that has excluded nothing yet.
_BEGINNING: Key = (datetime(1, 1, 1, tzinfo=UTC), "")

# How far behind the newest event it has sent a tail looks again for events that committed
# late, and how many sent ids it remembers to skip them there (see `TenantTail`).
OVERLAP = timedelta(seconds=5)
MAX_REMEMBERED = 1000


@dataclass(frozen=True)
class TenantFilter:
    """Which of a tenant's job events a stream wants: None takes any."""

    types: frozenset[EventType] | None = None
    crew: str | None = None


class TenantTail:
    """Reads a tenant's job events as they commit, each once.

    `emit` stamps `created_at` in Python before its transaction commits, so transactions
    of concurrent jobs can commit out of `created_at` order: a tail that only asked for
    events after the last one it sent would skip one that committed after a newer one had
    been read. So each read looks again `OVERLAP` behind the newest event sent and leaves
    out, in the query, the ids it already sent there. Events older than that are behind
    `floor` and never read again, which keeps the ids to remember (and the rows to re-scan)
    bounded: an event that commits more than `OVERLAP` after it was stamped (or is stamped
    by a clock that far behind) is missed, and past `MAX_REMEMBERED` sent ids within the
    window the oldest are forgotten and the floor moves up past them.

    The events of one job keep their order: each is written after the one before it has
    committed (its writers lock the job's row), so a late event is late only against other
    jobs' events.
    """

    def __init__(
        self,
        owner: Owner,
        where: TenantFilter,
        floor: Key | None,
        sent: Sequence[Key] = (),
        *,
        overlap: timedelta = OVERLAP,
        max_remembered: int = MAX_REMEMBERED,
    ) -> None:
        self.owner = owner
        self.tenant_id = owner.tenant_id
        self.where = where
        self.floor: Key = floor or _BEGINNING
        self._sent: dict[str, Key] = {key[1]: key for key in sent}
        self._newest: datetime | None = max((key[0] for key in sent), default=None)
        self._overlap = overlap
        self._max_remembered = max_remembered

    @classmethod
    async def from_now(
        cls,
        db: Executor,
        owner: Owner,
        where: TenantFilter,
        *,
        overlap: timedelta = OVERLAP,
        max_remembered: int = MAX_REMEMBERED,
    ) -> "TenantTail":
        """A tail that reads only events committed from now on: those already in the window
        behind the newest one count as sent."""
        rows = await db.fetch(
            """
            SELECT created_at, id FROM events
             WHERE tenant_id = $1
               AND created_at >= (SELECT max(created_at) - $2::interval
                                    FROM events WHERE tenant_id = $1)
             ORDER BY created_at DESC, id DESC
             LIMIT $3
            """,
            owner.tenant_id,
            overlap,
            max_remembered,
        )
        keys = [(r["created_at"], r["id"]) for r in reversed(rows)]
        # Everything older than the window is behind the floor. The oldest key read is the
        # floor itself (a floor excludes its own key), so nothing older slips in. A tenant
        # with no events yet has no floor: every event to come is new.
        floor, sent = (keys[0], keys[1:]) if keys else (None, [])
        return cls(owner, where, floor, sent, overlap=overlap, max_remembered=max_remembered)

    @classmethod
    async def after_event(
        cls, db: Executor, owner: Owner, where: TenantFilter, event_id: str
    ) -> "TenantTail | None":
        """A tail that resumes after the event `event_id`; None when it is no event of the
        owner (its tenant's, of its mode). Events that committed late behind it (within
        `OVERLAP`) while the client was away are not sent: the client cannot say which of
        those it had."""
        row = await db.fetchrow(
            "SELECT created_at, id FROM events WHERE id = $1 AND tenant_id = $2"
            " AND coalesce((payload->>'livemode')::boolean, true) = $3",
            event_id,
            owner.tenant_id,
            owner.livemode,
        )
        return None if row is None else cls(owner, where, (row["created_at"], row["id"]))

    async def read(self, db: Executor, limit: int = 100) -> tuple[list[Event], bool]:
        """Up to `limit` events not sent yet, oldest first, and whether more may be waiting
        (read again at once). Each is counted as sent once returned."""
        types = sorted(self.where.types) if self.where.types is not None else None
        rows = await db.fetch(
            """
            SELECT e.id, e.created_at, e.payload
              FROM events e
              JOIN jobs j ON j.id = e.job_id
             WHERE e.tenant_id = $1
               AND (e.created_at, e.id) > ($2, $3)
               AND NOT (e.id = ANY($4::text[]))
               AND ($5::text[] IS NULL OR e.type = ANY($5::text[]))
               AND ($6::text IS NULL OR j.crew = $6)
               AND j.livemode = $8
             ORDER BY e.created_at, e.id
             LIMIT $7
            """,
            self.tenant_id,
            self.floor[0],
            self.floor[1],
            list(self._sent),
            types,
            self.where.crew,
            limit,
            self.owner.livemode,
        )
        newest = [row["created_at"] for row in rows]
        for row in rows:
            self._sent[row["id"]] = (row["created_at"], row["id"])
        if self.where != TenantFilter():
            # The events the filter leaves out move the window on too: without them a
            # filtered tail's floor would stay where it began, and each wake would scan
            # every event the tenant made since.
            newest.append(
                await db.fetchval(
                    "SELECT max(created_at) FROM events WHERE tenant_id = $1", self.tenant_id
                )
            )
        self._newest = max([t for t in [self._newest, *newest] if t is not None], default=None)
        self._forget()
        return [Event.model_validate(r["payload"]) for r in rows], len(rows) == limit

    @property
    def remembered(self) -> int:
        """How many sent ids the tail holds to skip (bounded by `max_remembered`)."""
        return len(self._sent)

    def _forget(self) -> None:
        """Move the floor up over sent events that fell out of the window (or past the
        bound), and forget their ids: the floor excludes them now."""
        if self._newest is None:
            return
        cut = self._newest - self._overlap
        ordered = sorted(self._sent.values())
        keep_from = next((i for i, key in enumerate(ordered) if key[0] >= cut), len(ordered))
        keep_from = max(keep_from, len(ordered) - self._max_remembered)
        if keep_from > 0:
            self.floor = max(self.floor, ordered[keep_from - 1])
            for key in ordered[:keep_from]:
                del self._sent[key[1]]
        # Behind the window nothing is read again, sent or not (the filter's leftovers).
        self.floor = max(self.floor, (cut, ""))


async def purge_without_job(pool: asyncpg.Pool, older_than_days: float, batch: int) -> int:
    """Delete up to `batch` events that belong to no job (test sends) older than
    `older_than_days`, with their deliveries. A job's events go with the job."""
    deleted = await pool.fetch(
        """
        DELETE FROM events WHERE id IN (
            SELECT id FROM events
             WHERE job_id IS NULL AND created_at < now() - make_interval(secs => $1 * 86400)
             ORDER BY created_at LIMIT $2
               FOR UPDATE SKIP LOCKED)
        RETURNING id
        """,
        float(older_than_days),
        batch,
    )
    return len(deleted)
