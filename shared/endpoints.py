"""Webhook endpoints a tenant registers, and the deliveries owed to them, in Postgres.

Every query is scoped by tenant: an id of another tenant reads as unknown. The API only
writes rows and NOTIFYs; the dispatcher is the one that speaks to receivers.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import asyncpg

from schemas.events import Event, EventType
from schemas.webhooks import (
    Delivery,
    DeliveryAttempt,
    DeliverySummary,
    WebhookEndpoint,
    WebhookSecret,
)
from shared.db import Executor
from shared.deliveries import fail_pending
from shared.events import DELIVERIES_CHANNEL
from shared.ids import new_id, new_signing_secret
from shared.tracing import current_traceparent

RECENT_DELIVERIES = 5
DISABLED_BY_API = "disabled through the API"

# A delivery row with its event's type and job, as every delivery view needs it.
_DELIVERY_COLUMNS = "d.*, e.type AS event_type, e.job_id"


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


def _endpoint(row: asyncpg.Record, recent: list[DeliverySummary]) -> WebhookEndpoint:
    grace_ends = row["previous_secret_expires_at"]
    return WebhookEndpoint(
        id=row["id"],
        url=row["url"],
        description=row["description"],
        events=list(row["events"]),
        enabled=row["disabled_at"] is None,
        disabled_at=row["disabled_at"],
        disabled_reason=row["disabled_reason"],
        failing_since=row["failing_since"],
        previous_secret_expires_at=grace_ends
        if grace_ends and grace_ends > datetime.now(UTC)
        else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        recent_deliveries=recent,
    )


async def _recent(
    db: Executor, endpoint_ids: list[str], n: int
) -> dict[str, list[DeliverySummary]]:
    """The last `n` deliveries of each endpoint (an index range scan per endpoint)."""
    found: dict[str, list[DeliverySummary]] = {i: [] for i in endpoint_ids}
    if not endpoint_ids or n <= 0:
        return found
    rows = await db.fetch(
        f"""
        SELECT {_DELIVERY_COLUMNS}
          FROM unnest($1::text[]) AS w(id)
         CROSS JOIN LATERAL (
               SELECT * FROM webhook_deliveries x WHERE x.endpoint_id = w.id
                ORDER BY x.created_at DESC, x.id DESC LIMIT $2) d
          JOIN events e ON e.id = d.event_id
         ORDER BY d.created_at DESC, d.id DESC
        """,
        endpoint_ids,
        n,
    )
    for row in rows:
        found[row["endpoint_id"]].append(_summary(row))
    return found


async def _view(db: Executor, row: asyncpg.Record) -> WebhookEndpoint:
    recent = await _recent(db, [row["id"]], RECENT_DELIVERIES)
    return _endpoint(row, recent[row["id"]])


async def create(
    db: Executor, tenant_id: str, *, url: str, events: list[str], description: str
) -> tuple[WebhookEndpoint, str]:
    """A new enabled endpoint and its signing secret (which only this answer shows)."""
    secret = new_signing_secret()
    row = await db.fetchrow(
        "INSERT INTO webhook_endpoints (id, tenant_id, url, description, events, secret)"
        " VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        new_id("we"),
        tenant_id,
        url,
        description,
        events,
        secret,
    )
    assert row is not None
    return _endpoint(row, []), secret


async def page(
    db: Executor, tenant_id: str, *, before: str | None, limit: int
) -> tuple[list[WebhookEndpoint], bool]:
    """Newest first (ids are time-ordered); `before` is the last id of the previous page."""
    rows = await db.fetch(
        "SELECT * FROM webhook_endpoints WHERE tenant_id = $1 AND ($2::text IS NULL OR id < $2)"
        " ORDER BY id DESC LIMIT $3",
        tenant_id,
        before,
        limit + 1,
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    recent = await _recent(db, [r["id"] for r in rows], RECENT_DELIVERIES)
    return [_endpoint(r, recent[r["id"]]) for r in rows], has_more


async def get(db: Executor, tenant_id: str, endpoint_id: str) -> WebhookEndpoint | None:
    row = await db.fetchrow(
        "SELECT * FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2", endpoint_id, tenant_id
    )
    return await _view(db, row) if row else None


async def update(
    pool: asyncpg.Pool,
    tenant_id: str,
    endpoint_id: str,
    *,
    url: str | None,
    events: list[str] | None,
    description: str | None,
    enabled: bool | None,
) -> WebhookEndpoint | None:
    """Change what is given. Re-enabling forgets the failures that disabled the endpoint;
    disabling fails what it is still owed. Owed deliveries follow a URL change."""
    async with pool.acquire() as conn, conn.transaction():
        before = await conn.fetchrow(
            "SELECT url, disabled_at FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2"
            " FOR UPDATE",
            endpoint_id,
            tenant_id,
        )
        if before is None:
            return None
        row = await conn.fetchrow(
            """
            UPDATE webhook_endpoints
               SET url = coalesce($3, url),
                   events = coalesce($4, events),
                   description = coalesce($5, description),
                   disabled_at = CASE WHEN $6::bool THEN NULL
                                      WHEN NOT $6::bool THEN coalesce(disabled_at, now())
                                      ELSE disabled_at END,
                   disabled_reason = CASE WHEN $6::bool THEN NULL
                                          WHEN NOT $6::bool THEN coalesce(disabled_reason, $7)
                                          ELSE disabled_reason END,
                   failing_since = CASE WHEN $6::bool THEN NULL ELSE failing_since END,
                   updated_at = now()
             WHERE id = $1 AND tenant_id = $2
            RETURNING *
            """,
            endpoint_id,
            tenant_id,
            url,
            events,
            description,
            enabled,
            DISABLED_BY_API,
        )
        assert row is not None  # locked above
        if url is not None and url != before["url"]:
            await conn.execute(
                "UPDATE webhook_deliveries SET url = $2"
                " WHERE endpoint_id = $1 AND status = 'pending'",
                endpoint_id,
                url,
            )
        if enabled is False and before["disabled_at"] is None:
            await fail_pending(conn, endpoint_id, row["disabled_reason"])
        return await _view(conn, row)


async def delete(db: Executor, tenant_id: str, endpoint_id: str) -> bool:
    """Remove the endpoint; its deliveries and their attempts go with it."""
    deleted = await db.fetchval(
        "DELETE FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2 RETURNING id",
        endpoint_id,
        tenant_id,
    )
    return deleted is not None


async def rotate_secret(
    db: Executor, tenant_id: str, endpoint_id: str, grace_s: int
) -> WebhookSecret | None:
    """A new secret; the one it replaces keeps signing alongside it for `grace_s` (the
    dispatcher signs with both while `previous_secret_expires_at` is ahead)."""
    secret = new_signing_secret()
    row = await db.fetchrow(
        """
        UPDATE webhook_endpoints
           SET previous_secret = secret, secret = $3,
               previous_secret_expires_at = now() + make_interval(secs => $4), updated_at = now()
         WHERE id = $1 AND tenant_id = $2
        RETURNING previous_secret_expires_at
        """,
        endpoint_id,
        tenant_id,
        secret,
        float(grace_s),
    )
    if row is None:
        return None
    return WebhookSecret(
        endpoint_id=endpoint_id,
        secret=secret,
        previous_secret_expires_at=row["previous_secret_expires_at"] if grace_s > 0 else None,
    )


@dataclass(frozen=True)
class SentTest:
    event_id: str
    delivery_id: str


async def send_test(pool: asyncpg.Pool, tenant_id: str, endpoint_id: str) -> SentTest | None:
    """Owe a `webhook.test` event to this endpoint alone, even a disabled one (a test is how
    to see a receiver is back before enabling it again)."""
    event = Event(
        id=new_id("evt"),
        type=EventType.WEBHOOK_TEST,
        created_at=datetime.now(UTC),
        data={"endpoint_id": endpoint_id, "message": "a test event from crewq"},
    )
    async with pool.acquire() as conn, conn.transaction():
        url = await conn.fetchval(
            "SELECT url FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2",
            endpoint_id,
            tenant_id,
        )
        if url is None:
            return None
        await conn.execute(
            "INSERT INTO events (id, tenant_id, type, payload, created_at, traceparent)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            event.id,
            tenant_id,
            event.type.value,
            event.model_dump(mode="json"),
            event.created_at,
            current_traceparent(),
        )
        delivery_id = await conn.fetchval(
            "INSERT INTO webhook_deliveries (id, event_id, tenant_id, endpoint_id, url)"
            " VALUES ('dlv_' || replace(gen_random_uuid()::text, '-', ''), $1, $2, $3, $4)"
            " RETURNING id",
            event.id,
            tenant_id,
            endpoint_id,
            url,
        )
        await conn.execute(f"NOTIFY {DELIVERIES_CHANNEL}")
    return SentTest(event_id=event.id, delivery_id=delivery_id)


async def first_attempt(db: Executor, delivery_id: str) -> DeliveryAttempt | None:
    row = await db.fetchrow(
        "SELECT * FROM delivery_attempts WHERE delivery_id = $1 ORDER BY number LIMIT 1",
        delivery_id,
    )
    return _attempt(row) if row else None


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


async def deliveries_page(
    db: Executor,
    tenant_id: str,
    endpoint_id: str,
    *,
    status: str | None,
    before: str | None,
    limit: int,
) -> tuple[list[Delivery], bool] | None:
    """Newest first, each with every attempt; None when the endpoint is unknown. Delivery
    ids are random, so the cursor (the last id seen) is looked up for its position."""
    if (
        await db.fetchval(
            "SELECT 1 FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2",
            endpoint_id,
            tenant_id,
        )
        is None
    ):
        return None
    rows = await db.fetch(
        f"""
        SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.endpoint_id = $1 AND d.tenant_id = $2
           AND ($3::text IS NULL OR d.status = $3)
           AND ($4::text IS NULL OR (d.created_at, d.id) <
                (SELECT c.created_at, c.id FROM webhook_deliveries c
                  WHERE c.id = $4 AND c.endpoint_id = $1))
         ORDER BY d.created_at DESC, d.id DESC
         LIMIT $5
        """,
        endpoint_id,
        tenant_id,
        status,
        before,
        limit + 1,
    )
    has_more = len(rows) > limit
    return await _with_attempts(db, list(rows[:limit])), has_more


async def job_deliveries(db: Executor, tenant_id: str, job_id: str) -> list[Delivery]:
    """Every delivery a job's events owed (its own `webhook_url` and registered endpoints),
    oldest first, each with every attempt."""
    rows = await db.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events e ON e.id = d.event_id"
        " WHERE e.job_id = $1 AND d.tenant_id = $2 ORDER BY d.created_at, d.id",
        job_id,
        tenant_id,
    )
    return await _with_attempts(db, list(rows))


async def get_delivery(db: Executor, tenant_id: str, delivery_id: str) -> Delivery | None:
    row = await db.fetchrow(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events e ON e.id = d.event_id"
        " WHERE d.id = $1 AND d.tenant_id = $2",
        delivery_id,
        tenant_id,
    )
    if row is None:
        return None
    [delivery] = await _with_attempts(db, [row])
    return delivery


class RetryOutcome(StrEnum):
    QUEUED = "queued"
    NOT_FOUND = "not_found"
    ENDPOINT_DISABLED = "endpoint_disabled"
    IN_FLIGHT = "in_flight"  # an attempt is under way right now


async def retry_delivery(pool: asyncpg.Pool, tenant_id: str, delivery_id: str) -> RetryOutcome:
    """Make a delivery due now, whatever its state (a succeeded one is sent again with the
    same webhook-id), to its endpoint's current URL. An attempt under way (claimed, not
    yet recorded) is left alone, so no two attempts of one row ever overlap."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """
            SELECT w.disabled_at, w.url AS endpoint_url,
                   -- claimed (the lease runs) but the attempt not recorded yet
                   d.attempt_count > 0 AND d.next_attempt_at > now() AND NOT EXISTS (
                       SELECT 1 FROM delivery_attempts a
                        WHERE a.delivery_id = d.id AND a.number = d.attempt_count) AS in_flight
              FROM webhook_deliveries d LEFT JOIN webhook_endpoints w ON w.id = d.endpoint_id
             WHERE d.id = $1 AND d.tenant_id = $2
               FOR UPDATE OF d
            """,
            delivery_id,
            tenant_id,
        )
        if row is None:
            return RetryOutcome.NOT_FOUND
        if row["disabled_at"] is not None:
            return RetryOutcome.ENDPOINT_DISABLED
        if row["in_flight"]:
            return RetryOutcome.IN_FLIGHT
        await conn.execute(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(),"
            " url = coalesce($2, url) WHERE id = $1",
            delivery_id,
            row["endpoint_url"],
        )
        await conn.execute(f"NOTIFY {DELIVERIES_CHANNEL}")
    return RetryOutcome.QUEUED
