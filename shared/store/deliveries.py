"""Webhook deliveries and their attempts in Postgres: every statement on
`webhook_deliveries` and `delivery_attempts`.

A delivery is owed by `events.emit` (the one writer), claimed by a dispatcher, and moved on
by the attempt it records. A claim pushes the row's `next_attempt_at` forward by a lease
longer than any request may take, in the same statement that locks it with SKIP LOCKED:
any number of dispatchers share the work, none holds a transaction open across an HTTP
request, and none delivers a row another is delivering. Recording an attempt is
compare-and-set on the attempt count. Claims go round the tenants with due deliveries, so
one tenant's backlog never delays another's.

Every change of a delivery's row is one of the `DeliveryMove`s below (claim, defer, the
outcomes of an attempt, refusal for a disabled endpoint, a resend by hand), guarded by the
states it may leave; Postgres refuses any other change of status outright (the
`webhook_deliveries_state_machine` trigger, migration 0009).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg

from schemas.amp import DeliveryFormat
from schemas.events import EventType
from schemas.webhooks import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    DeliverySummary,
    DisabledReason,
)
from shared.domain.owners import Owner
from shared.runtime.db import Conn, Executor, storable
from shared.runtime.ids import new_id
from shared.runtime.secret_box import SecretBox
from shared.store import tenants
from shared.store.paging import cut, one_more
from shared.store.signing_secrets import ENDPOINT, TENANT_LIVE, TENANT_TEST
from shared.webhooks.urls import origin

# Dispatchers LISTEN here; Postgres delivers the NOTIFY only when the transaction commits.
DELIVERIES_CHANNEL = "crewq_deliveries"
# API processes LISTEN here (payload: the delivery id) for the outcome of a test send.
ATTEMPTS_CHANNEL = "crewq_delivery_attempts"

# How many more due rows than it may take a claim looks at: those of URLs already at their
# in-flight limit are locked for the statement only, and passed over.
_LOOK_AHEAD = 4
# The receiver a delivery goes to, as per-endpoint limits and the circuit breaker count
# them (migration 0007); rows owed before that migration count by their URL.
_ORIGIN = "coalesce(d.origin, d.url)"
# A delivery row with its event's type and job, as every delivery view needs it.
_VIEW = "d.*, e.type AS event_type, e.job_id"
# Its event is of the asking owner's mode (format with the parameter's number): a test key
# reads and retries the deliveries of test events only.
_MODE = "coalesce((e.payload->>'livemode')::boolean, true) = ${}"

# Every tenant with a pending delivery and its earliest `next_attempt_at`, found by a loose
# index scan: one probe of `webhook_deliveries_tenant_due` per tenant, however long its
# backlog.
_OWNERS = """
    owners AS (
        (SELECT tenant_id, next_attempt_at FROM webhook_deliveries
          WHERE status = 'pending' ORDER BY tenant_id, next_attempt_at LIMIT 1)
        UNION ALL
        SELECT later.tenant_id, later.next_attempt_at
          FROM owners o, LATERAL (
               SELECT tenant_id, next_attempt_at FROM webhook_deliveries
                WHERE status = 'pending' AND tenant_id > o.tenant_id
                ORDER BY tenant_id, next_attempt_at LIMIT 1) later
    )"""


PENDING = DeliveryStatus.PENDING
SUCCEEDED, FAILED = DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED


@dataclass(frozen=True)
class DeliveryMove:
    """One edge of the delivery state machine: the states a delivery may leave by it, where
    it goes, and the columns it writes besides `status`, reading the row as it was as `d.*`
    and the values the statement making it is given as `given.*` (`_move`'s `_Given`, or
    what `claim` hands its moves). Every UPDATE of a delivery's row is one of `MOVES`, but
    `follow_url`'s, which changes where a pending one goes, not its state; the
    `webhook_deliveries_state_machine` trigger (migration 0009) refuses any other change
    of status, whoever makes it."""

    name: str
    sources: frozenset[DeliveryStatus]
    target: DeliveryStatus
    sets: str

    @property
    def assignments(self) -> str:
        """The SET list of a statement making the move."""
        return f"status = '{self.target}', {self.sets}"

    @property
    def guard(self) -> str:
        """The WHERE condition that lets it leave its sources only."""
        sources = ", ".join(f"'{s}'" for s in sorted(self.sources))
        return f"d.status IN ({sources})"


# What an attempt's answer writes, whichever move it makes.
_ANSWER = (
    "last_attempt_at = now(), last_status_code = given.status_code, last_error = given.error,"
    " next_attempt_at = coalesce(given.at, d.next_attempt_at)"
)
# A dispatcher takes a due delivery: it is leased for `given.lease_s`, and the attempt about
# to be made is counted (`claim`).
CLAIM = DeliveryMove(
    "claim",
    frozenset({PENDING}),
    PENDING,
    "next_attempt_at = now() + make_interval(secs => given.lease_s),"
    " attempt_count = d.attempt_count + 1",
)
# A claimed delivery handed back unattempted: its receiver's circuit is open (`defer`).
DEFER = DeliveryMove(
    "defer",
    frozenset({PENDING}),
    PENDING,
    "next_attempt_at = given.at, attempt_count = d.attempt_count - 1",
)
# The outcomes of an attempt (`record_attempt`).
SUCCEED = DeliveryMove(
    "succeed", frozenset({PENDING}), SUCCEEDED, f"{_ANSWER}, delivered_at = now()"
)
BACK_OFF = DeliveryMove(
    "back_off", frozenset({PENDING}), PENDING, f"{_ANSWER}, delivered_at = NULL"
)
GIVE_UP = DeliveryMove("give_up", frozenset({PENDING}), FAILED, f"{_ANSWER}, delivered_at = NULL")
# Its endpoint was disabled while it was owed (`fail_pending`, and `claim` for one disabled
# since): failed, saying why unless an attempt already did.
REFUSE = DeliveryMove(
    "refuse",
    frozenset({PENDING}),
    FAILED,
    "last_error = coalesce(d.last_error, given.reason)",
)
# `POST /v1/deliveries/{id}/retry`: due now, whatever its state, to its endpoint's URL.
RESEND = DeliveryMove(
    "resend",
    frozenset({PENDING, SUCCEEDED, FAILED}),
    PENDING,
    "next_attempt_at = now(), url = coalesce(given.url, d.url),"
    " origin = coalesce(given.origin, d.origin)",
)
MOVES = (CLAIM, DEFER, SUCCEED, BACK_OFF, GIVE_UP, REFUSE, RESEND)
# The move an attempt's outcome makes.
_ANSWERED = {SUCCEEDED: SUCCEED, PENDING: BACK_OFF, FAILED: GIVE_UP}


@dataclass(frozen=True)
class _Given:
    """The values a move made by `_move` writes or expects; each move reads the ones it
    needs."""

    attempt: int | None = None  # the attempt the delivery must be at (None: any)
    status_code: int | None = None
    error: str | None = None
    at: datetime | None = None  # when it is next due
    reason: str | None = None
    url: str | None = None

    @property
    def origin(self) -> str | None:
        return origin(self.url) if self.url is not None else None


# The one delivery whose id is `$1` (`_move`'s `where`).
_BY_ID = "d.id = $1"


async def _move(conn: Executor, move: DeliveryMove, where: str, key: str, given: _Given) -> int:
    """Make `move` on the deliveries `where` (a condition on `d` reading `key` as `$1`)
    picks that are in one of the move's sources (and at `given.attempt`, when given); how
    many moved."""
    status = await conn.execute(
        f"""
        UPDATE webhook_deliveries d SET {move.assignments}
          FROM (SELECT $2::int AS attempt, $3::int AS status_code, $4::text AS error,
                       $5::timestamptz AS at, $6::text AS reason, $7::text AS url,
                       $8::text AS origin) given
         WHERE {where} AND {move.guard}
           AND (given.attempt IS NULL OR d.attempt_count = given.attempt)
        """,
        key,
        given.attempt,
        given.status_code,
        given.error,
        given.at,
        given.reason,
        given.url,
        given.origin,
    )
    return int(status.split()[-1])  # "UPDATE <rows>"


@dataclass(frozen=True)
class Target:
    """Where one delivery of an event goes."""

    endpoint_id: str | None  # None: the job's own `webhook_url`, or one of its AMP URLs
    url: str
    format: DeliveryFormat = DeliveryFormat.CREWQ


@dataclass(frozen=True)
class Due:
    id: str
    event_id: str
    event_type: EventType
    tenant_id: str
    endpoint_id: str | None
    url: str
    origin: str  # the receiver, as per-endpoint limits count them (webhook_urls.origin)
    attempt: int  # the number of the attempt about to be made
    payload: dict[str, Any]
    secrets: list[str]  # newest first; two while a rotated secret is in its grace
    traceparent: str | None  # the trace of the work that caused the event
    format: DeliveryFormat = DeliveryFormat.CREWQ
    # An AMP delivery's execution: its `meta` and task texts (`amp_kickoffs`), to render
    # the body from; None for crewq's envelope.
    amp: dict[str, Any] | None = None


@dataclass(frozen=True)
class AttemptRecord:
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None


async def insert_owed(
    conn: Conn, event_id: str, tenant_id: str, targets: list[Target]
) -> list[str]:
    """Owe one delivery of the event to each target, and wake the dispatchers (at commit);
    the deliveries' ids, in the order of `targets`."""
    ids = [new_id("dlv") for _ in targets]
    await conn.execute(
        "WITH d AS (INSERT INTO webhook_deliveries"
        " (id, event_id, tenant_id, endpoint_id, url, origin, format)"
        " SELECT id, $1, $2, endpoint_id, url, origin, format"
        " FROM unnest($3::text[], $4::text[], $5::text[], $7::text[], $8::text[])"
        " AS t (id, endpoint_id, url, origin, format)"
        " RETURNING 1)"
        " SELECT pg_notify($6, '') WHERE EXISTS (SELECT FROM d)",  # one round trip, not two
        event_id,
        tenant_id,
        ids,
        [t.endpoint_id for t in targets],
        [t.url for t in targets],
        DELIVERIES_CHANNEL,
        [origin(t.url) for t in targets],
        [t.format.value for t in targets],
    )
    return ids


async def claim(
    pool: asyncpg.Pool,
    limit: int,
    lease_s: float,
    skip_urls: list[str],
    *,
    per_url: int,
    busy: Mapping[str, int],
    box: SecretBox,
) -> list[Due]:
    """Up to `limit` due deliveries, taken round the tenants that have any (each tenant's
    oldest first, then each one's second, ...), at most `per_url` in flight per receiver
    counting the `busy` ones this dispatcher already has. Receivers are origins (`skip_urls`
    and `busy` are keyed by origin, not URL: no query string makes a receiver new). A
    delivery whose endpoint was disabled while it was owed is failed here instead (a test
    event still goes: it is how to see a receiver is back)."""
    rows = await pool.fetch(
        f"""
        WITH RECURSIVE {_OWNERS},
        candidates AS (
            SELECT c.* FROM owners o, LATERAL (
                SELECT d.id, d.tenant_id, {_ORIGIN} AS origin, d.next_attempt_at,
                       w.disabled_reason AS reason,
                       w.disabled_at IS NOT NULL AND e.type <> 'webhook.test' AS refused
                  FROM webhook_deliveries d
                  JOIN events e ON e.id = d.event_id
                  LEFT JOIN webhook_endpoints w ON w.id = d.endpoint_id
                 WHERE d.tenant_id = o.tenant_id AND d.status = 'pending'
                   AND d.next_attempt_at <= now() AND {_ORIGIN} <> ALL($3::text[])
                 ORDER BY d.tenant_id, d.next_attempt_at
                 -- A fair share each, looking {_LOOK_AHEAD} times as far as it needs, so
                 -- rows of URLs already at their limit can be passed over.
                 LIMIT (SELECT ceil($1::float8 * {_LOOK_AHEAD} / greatest(count(*), 1))::int
                          FROM owners WHERE next_attempt_at <= now())
                   FOR UPDATE OF d SKIP LOCKED) c
             WHERE o.next_attempt_at <= now()
        ), refused AS (
            UPDATE webhook_deliveries d SET {REFUSE.assignments}
              FROM candidates given
             WHERE d.id = given.id AND given.refused AND {REFUSE.guard}
        ), due AS (
            SELECT id FROM (
                SELECT id, next_attempt_at,
                       row_number() OVER (PARTITION BY tenant_id ORDER BY next_attempt_at)
                           AS turn
                  FROM (SELECT c.id, c.tenant_id, c.next_attempt_at,
                               row_number() OVER (PARTITION BY c.origin
                                                  ORDER BY c.next_attempt_at)
                               + coalesce(b.n, 0) AS slot
                          FROM candidates c
                          LEFT JOIN unnest($5::text[], $6::int[]) AS b (origin, n)
                                 ON b.origin = c.origin
                         WHERE NOT c.refused) by_url
                 WHERE slot <= $4) by_tenant
             ORDER BY turn, next_attempt_at
             LIMIT $1
        )
        UPDATE webhook_deliveries d SET {CLAIM.assignments}
          FROM due, events e, (SELECT $2::float8 AS lease_s) given
         WHERE d.id = due.id AND e.id = d.event_id AND {CLAIM.guard}
        RETURNING d.id, d.event_id, e.type AS event_type, d.tenant_id, d.endpoint_id, d.url,
                  {_ORIGIN} AS origin,
                  d.attempt_count, e.payload, e.traceparent, d.format,
                  -- An AMP body is rendered from the event with its execution's meta and
                  -- task texts (migration 0012).
                  CASE WHEN d.format <> 'crewq' THEN (
                      SELECT jsonb_build_object('meta', a.meta, 'tasks', a.tasks)
                        FROM amp_kickoffs a WHERE a.job_id = e.job_id)
                  END AS amp,
                  -- A job's own URL: its tenant's secret of the job's mode (a test secret
                  -- not made yet is made below, by tenants.signing_secret).
                  CASE WHEN d.endpoint_id IS NULL AND e.payload->>'livemode' = 'false'
                  THEN {TENANT_TEST.signing_of("d.tenant_id")}
                  WHEN d.endpoint_id IS NULL THEN {TENANT_LIVE.signing_of("d.tenant_id")}
                  ELSE {ENDPOINT.signing_of("d.endpoint_id")}
                  END AS secrets
        """,
        limit,
        lease_s,
        skip_urls,
        per_url,
        list(busy),
        list(busy.values()),
    )
    due = []
    for r in rows:
        secrets = [box.open(sealed) for sealed in r["secrets"]]
        if not secrets:  # a test job's own URL, before any test key asked for its secret
            made = await tenants.signing_secret(pool, Owner(r["tenant_id"], False), box)
            secrets = [made] if made is not None else []
        due.append(
            Due(
                id=r["id"],
                event_id=r["event_id"],
                event_type=EventType(r["event_type"]),
                tenant_id=r["tenant_id"],
                endpoint_id=r["endpoint_id"],
                url=r["url"],
                origin=r["origin"],
                attempt=r["attempt_count"],
                payload=r["payload"],
                secrets=secrets,
                traceparent=r["traceparent"],
                format=DeliveryFormat(r["format"]),
                amp=r["amp"],
            )
        )
    return due


async def seconds_until_due(db: Executor, skip_urls: list[str]) -> float | None:
    """Until the earliest pending delivery not to one of `skip_urls` (origins) is due (negative: it
    is overdue); None when there is none."""
    wait: float | None = await db.fetchval(
        f"""
        WITH RECURSIVE {_OWNERS}
        SELECT extract(epoch FROM min(first.next_attempt_at) - now())::float8
          FROM owners o, LATERAL (
               SELECT next_attempt_at FROM webhook_deliveries d
                WHERE d.tenant_id = o.tenant_id AND d.status = 'pending'
                  AND {_ORIGIN} <> ALL($1::text[])
                ORDER BY d.tenant_id, d.next_attempt_at LIMIT 1) first
        """,
        skip_urls,
    )
    return wait


@dataclass(frozen=True)
class Backlog:
    pending: int  # deliveries still owed
    due: int  # of those, due now
    oldest_due_s: float | None  # how long the most overdue one has been due


async def backlog(db: Executor) -> Backlog:
    row = await db.fetchrow(
        """
        SELECT count(*) AS pending,
               count(*) FILTER (WHERE next_attempt_at <= now()) AS due,
               extract(epoch FROM now() - min(next_attempt_at)
                       FILTER (WHERE next_attempt_at <= now()))::float8 AS oldest_due_s
          FROM webhook_deliveries WHERE status = 'pending'
        """
    )
    assert row is not None
    return Backlog(row["pending"], row["due"], row["oldest_due_s"])


async def record_attempt(
    conn: Conn,
    due: Due,
    attempt: AttemptRecord,
    status: DeliveryStatus,
    retry_at: datetime | None,
) -> bool:
    """Store one attempt and move the delivery on: `succeeded`, `pending` again at
    `retry_at`, or `failed`. False: the delivery moved on without this attempt (disabled,
    retried by hand, or the lease ran out and another dispatcher took it)."""
    error, body = storable(attempt.error), storable(attempt.response_body)
    answer = _Given(attempt=due.attempt, status_code=attempt.status_code, error=error, at=retry_at)
    if not await _move(conn, _ANSWERED[status], _BY_ID, due.id, answer):
        return False
    await conn.execute(
        "INSERT INTO delivery_attempts (delivery_id, number, duration_ms, status_code, error,"
        " response_body) VALUES ($1, $2, $3, $4, $5, $6)",
        due.id,
        due.attempt,
        attempt.duration_ms,
        attempt.status_code,
        error,
        body,
    )
    if due.event_type is EventType.WEBHOOK_TEST:
        await conn.execute("SELECT pg_notify($1, $2)", ATTEMPTS_CHANNEL, due.id)
    return True


async def defer(pool: asyncpg.Pool, due: Due, until: datetime) -> None:
    """Hand a claimed delivery back unattempted (its endpoint's circuit is open)."""
    await _move(pool, DEFER, _BY_ID, due.id, _Given(attempt=due.attempt, at=until))


async def fail_pending(conn: Conn, endpoint_id: str, reason: DisabledReason) -> None:
    """A disabled endpoint is sent nothing more: its owed deliveries fail now (they can be
    retried by hand once it is enabled again). One already under way may still arrive; its
    attempt then goes unrecorded, as the row is no longer pending."""
    await _move(conn, REFUSE, "d.endpoint_id = $1", endpoint_id, _Given(reason=reason))


async def follow_url(conn: Conn, endpoint_id: str, url: str) -> None:
    """What an endpoint is still owed goes to its new URL."""
    await conn.execute(
        "UPDATE webhook_deliveries SET url = $2, origin = $3"
        " WHERE endpoint_id = $1 AND status = 'pending'",
        endpoint_id,
        url,
        origin(url),
    )


# --- reads ---


def _summary(row: asyncpg.Record) -> DeliverySummary:
    return DeliverySummary(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        job_id=row["job_id"],
        url=row["url"],
        status=row["status"],
        attempt_count=row["attempt_count"],
        next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
        last_attempt_at=row["last_attempt_at"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        delivered_at=row["delivered_at"],
        created_at=row["created_at"],
    )


def _attempt(row: asyncpg.Record) -> DeliveryAttempt:
    return DeliveryAttempt(
        number=row["number"],
        attempted_at=row["attempted_at"],
        duration_ms=row["duration_ms"],
        status_code=row["status_code"],
        error=row["error"],
        response_body=row["response_body"],
    )


async def _with_attempts(db: Executor, rows: list[asyncpg.Record]) -> list[Delivery]:
    attempts: dict[str, list[DeliveryAttempt]] = {r["id"]: [] for r in rows}
    if rows:
        for a in await db.fetch(
            "SELECT * FROM delivery_attempts WHERE delivery_id = ANY($1::text[])"
            " ORDER BY delivery_id, number",
            list(attempts),
        ):
            attempts[a["delivery_id"]].append(_attempt(a))
    return [Delivery(**_summary(r).model_dump(), attempts=attempts[r["id"]]) for r in rows]


async def recent(db: Executor, endpoint_ids: list[str], n: int) -> dict[str, list[DeliverySummary]]:
    """The last `n` deliveries of each endpoint (an index range scan per endpoint)."""
    found: dict[str, list[DeliverySummary]] = {i: [] for i in endpoint_ids}
    if not endpoint_ids or n <= 0:
        return found
    rows = await db.fetch(
        f"""
        SELECT {_VIEW}
          FROM unnest($1::text[]) AS w(id)
         CROSS JOIN LATERAL (
               SELECT * FROM webhook_deliveries x WHERE x.endpoint_id = w.id
                ORDER BY x.id DESC LIMIT $2) d
          JOIN events e ON e.id = d.event_id
         ORDER BY d.id DESC
        """,
        endpoint_ids,
        n,
    )
    for row in rows:
        found[row["endpoint_id"]].append(_summary(row))
    return found


async def endpoint_page(
    db: Executor,
    owner: Owner,
    endpoint_id: str,
    *,
    status: DeliveryStatus | None,
    before: str | None,
    limit: int,
) -> tuple[list[Delivery], bool]:
    """An endpoint's deliveries, newest first (ids are time-ordered), each with every
    attempt; `before` is the last id of the previous page."""
    rows = await db.fetch(
        f"""
        SELECT {_VIEW} FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.endpoint_id = $1 AND d.tenant_id = $2 AND {_MODE.format(6)}
           AND ($3::text IS NULL OR d.status = $3)
           AND ($4::text IS NULL OR d.id < $4)
         ORDER BY d.id DESC
         LIMIT $5
        """,
        endpoint_id,
        owner.tenant_id,
        status,
        before,
        one_more(limit),
        owner.livemode,
    )
    page, has_more = cut(rows, limit)
    return await _with_attempts(db, page), has_more


async def job_page(
    db: Executor, owner: Owner, job_id: str, *, before: str | None, limit: int
) -> tuple[list[Delivery], bool]:
    """Every delivery a job's events owed (its own `webhook_url` and registered endpoints),
    newest first, each with every attempt."""
    rows = await db.fetch(
        f"""
        SELECT {_VIEW} FROM events e JOIN webhook_deliveries d ON d.event_id = e.id
         WHERE e.job_id = $1 AND e.tenant_id = $2 AND {_MODE.format(5)}
           AND ($3::text IS NULL OR d.id < $3)
         ORDER BY d.id DESC
         LIMIT $4
        """,
        job_id,
        owner.tenant_id,
        before,
        one_more(limit),
        owner.livemode,
    )
    page, has_more = cut(rows, limit)
    return await _with_attempts(db, page), has_more


async def get(db: Executor, owner: Owner, delivery_id: str) -> Delivery | None:
    row = await db.fetchrow(
        f"SELECT {_VIEW} FROM webhook_deliveries d JOIN events e ON e.id = d.event_id"
        f" WHERE d.id = $1 AND d.tenant_id = $2 AND {_MODE.format(3)}",
        delivery_id,
        owner.tenant_id,
        owner.livemode,
    )
    if row is None:
        return None
    [delivery] = await _with_attempts(db, [row])
    return delivery


async def first_attempt(db: Executor, delivery_id: str) -> DeliveryAttempt | None:
    row = await db.fetchrow(
        "SELECT * FROM delivery_attempts WHERE delivery_id = $1 ORDER BY number LIMIT 1",
        delivery_id,
    )
    return _attempt(row) if row else None


class RetryOutcome(StrEnum):
    QUEUED = "queued"
    NOT_FOUND = "not_found"
    ENDPOINT_DISABLED = "endpoint_disabled"
    IN_FLIGHT = "in_flight"  # an attempt is under way right now


async def retry(pool: asyncpg.Pool, owner: Owner, delivery_id: str) -> RetryOutcome:
    """Make a delivery due now, whatever its state (a succeeded one is sent again with the
    same webhook-id), to its endpoint's current URL. An attempt under way (claimed, not
    yet recorded) is left alone, so no two attempts of one row ever overlap."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""
            SELECT w.disabled_at, w.url AS endpoint_url,
                   -- claimed (the lease runs) but the attempt not recorded yet
                   d.attempt_count > 0 AND d.next_attempt_at > now() AND NOT EXISTS (
                       SELECT 1 FROM delivery_attempts a
                        WHERE a.delivery_id = d.id AND a.number = d.attempt_count) AS in_flight
              FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
              LEFT JOIN webhook_endpoints w ON w.id = d.endpoint_id
             WHERE d.id = $1 AND d.tenant_id = $2 AND {_MODE.format(3)}
               FOR UPDATE OF d
            """,
            delivery_id,
            owner.tenant_id,
            owner.livemode,
        )
        if row is None:
            return RetryOutcome.NOT_FOUND
        if row["disabled_at"] is not None:
            return RetryOutcome.ENDPOINT_DISABLED
        if row["in_flight"]:
            return RetryOutcome.IN_FLIGHT
        await _move(conn, RESEND, _BY_ID, delivery_id, _Given(url=row["endpoint_url"]))
        await conn.execute(f"NOTIFY {DELIVERIES_CHANNEL}")
    return RetryOutcome.QUEUED
