"""The transactional outbox: an event and the deliveries it owes, written in the caller's
transaction so a state change and its webhooks commit (or vanish) together."""

from datetime import UTC, datetime
from typing import Any

from schemas.events import JOB_URL_EVENTS, Event, EventType
from shared.db import Conn
from shared.ids import new_id
from shared.tracing import current_traceparent

# Dispatchers LISTEN here; Postgres delivers the NOTIFY only when the transaction commits.
DELIVERIES_CHANNEL = "crewq_deliveries"
# API processes LISTEN here (payload: the job id) to stream a job's events as they commit.
JOB_EVENTS_CHANNEL = "crewq_job_events"


async def emit(
    conn: Conn,
    *,
    tenant_id: str,
    type: EventType,
    data: dict[str, Any],
    job_id: str | None = None,
    job_webhook_url: str | None = None,
) -> Event:
    """Record `type` and owe one delivery to the job's own URL (outcome events only) and
    one to every enabled endpoint of the tenant subscribed to it."""
    event = Event(id=new_id("evt"), type=type, created_at=datetime.now(UTC), data=data)
    await conn.execute(
        "INSERT INTO events (id, tenant_id, job_id, type, payload, created_at, traceparent)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        event.id,
        tenant_id,
        job_id,
        type.value,
        event.model_dump(mode="json"),
        event.created_at,
        current_traceparent(),
    )
    owed = await conn.fetchval(
        """
        WITH targets AS (
            SELECT NULL::text AS endpoint_id, $4::text AS url WHERE $4::text IS NOT NULL
            UNION ALL
            SELECT id, url FROM webhook_endpoints
             WHERE tenant_id = $2 AND disabled_at IS NULL AND events && ARRAY[$3, '*']
        ), inserted AS (
            INSERT INTO webhook_deliveries (id, event_id, tenant_id, endpoint_id, url)
            SELECT 'dlv_' || replace(gen_random_uuid()::text, '-', ''), $1, $2, endpoint_id, url
              FROM targets
            RETURNING 1
        )
        SELECT count(*) FROM inserted
        """,
        event.id,
        tenant_id,
        type.value,
        job_webhook_url if type in JOB_URL_EVENTS else None,
    )
    if owed:
        await conn.execute(f"NOTIFY {DELIVERIES_CHANNEL}")
    if job_id is not None:
        await conn.execute("SELECT pg_notify($1, $2)", JOB_EVENTS_CHANNEL, job_id)
    return event
