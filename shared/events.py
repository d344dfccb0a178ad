"""The transactional outbox: an event and the deliveries it owes, written in the caller's
transaction so a state change and its webhooks commit (or vanish) together. `emit` is the
only writer of events and of deliveries."""

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from pydantic import BaseModel

from schemas.events import JOB_URL_EVENTS, Event, EventType, WebhookTest
from shared import deliveries, endpoints
from shared.db import Conn, Executor, storable
from shared.deliveries import Target
from shared.ids import new_id
from shared.tracing import current_traceparent

# API processes LISTEN here (payload: the job id) to stream a job's events as they commit.
JOB_EVENTS_CHANNEL = "crewq_job_events"


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
) -> Emitted:
    """Record `type` and owe a delivery of it to the job's own URL (outcome events only) and
    to every enabled endpoint of the tenant subscribed to it; or, with `endpoint_id`, to that
    endpoint alone, enabled or not (a test send). Every string is made storable first: a
    crew's output may hold what Postgres cannot."""
    event = Event(
        id=new_id("evt"),
        type=type,
        livemode=livemode,
        created_at=datetime.now(UTC),
        data=storable(data.model_dump(mode="json")),
    )
    await conn.execute(
        "INSERT INTO events (id, tenant_id, job_id, type, payload, created_at, traceparent)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        event.id,
        tenant_id,
        job_id,
        type,
        event.model_dump(mode="json"),
        event.created_at,
        current_traceparent(),
    )
    if endpoint_id is not None:
        only = await endpoints.target(conn, tenant_id, endpoint_id)
        targets = [only] if only else []
    else:
        targets = await endpoints.subscribed(conn, tenant_id, type)
        if job_webhook_url and type in JOB_URL_EVENTS:
            targets.append(Target(None, job_webhook_url))
    owed = await deliveries.insert_owed(conn, event.id, tenant_id, targets) if targets else []
    if job_id is not None:
        await conn.execute("SELECT pg_notify($1, $2)", JOB_EVENTS_CHANNEL, job_id)
    return Emitted(event, owed)


async def send_test(conn: Conn, tenant_id: str, endpoint_id: str) -> tuple[str, str] | None:
    """Owe a `webhook.test` event to one endpoint, even a disabled one (a test is how to see
    a receiver is back before enabling it again). Returns (event id, delivery id); None when
    the tenant has no such endpoint."""
    async with conn.transaction():
        if not await endpoints.exists(conn, tenant_id, endpoint_id):
            return None
        emitted = await emit(
            conn,
            tenant_id=tenant_id,
            type=EventType.WEBHOOK_TEST,
            data=WebhookTest(endpoint_id=endpoint_id),
            endpoint_id=endpoint_id,
        )
    [delivery_id] = emitted.deliveries
    return emitted.event.id, delivery_id


async def after(db: Executor, job_id: str, after_id: str | None) -> tuple[list[Event], bool]:
    """A job's events in the order they happened, after the event `after_id` (all when None
    or unknown), and whether the job had ended when they were read: read in one statement,
    so an ended job's events up to its end are all there."""
    rows = await db.fetch(
        """
        WITH start AS (SELECT created_at, id FROM events WHERE id = $2 AND job_id = $1),
             job AS (SELECT status IN ('completed', 'failed', 'cancelled') AS ended
                       FROM jobs WHERE id = $1)
        SELECT e.payload, (SELECT ended FROM job) AS ended
          FROM (SELECT 1) one
          LEFT JOIN events e ON e.job_id = $1
               AND (NOT EXISTS (SELECT 1 FROM start)
                    OR (e.created_at, e.id) > (SELECT created_at, id FROM start))
         ORDER BY e.created_at, e.id
        """,
        job_id,
        after_id,
    )
    events = [Event.model_validate(r["payload"]) for r in rows if r["payload"] is not None]
    return events, bool(rows and rows[0]["ended"])


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
