"""Webhook deliveries in Postgres: claiming due ones, recording attempts.

A claim pushes the row's `next_attempt_at` forward by a lease longer than any request may
take, in the same statement that locks it with SKIP LOCKED: any number of dispatchers share
the work, none holds a transaction open across an HTTP request, and none delivers a row
another is delivering. Recording an attempt is compare-and-set on the attempt count.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.db import Conn


@dataclass(frozen=True)
class Due:
    id: str
    event_id: str
    endpoint_id: str | None
    url: str
    attempt: int  # the number of the attempt about to be made
    payload: dict[str, Any]
    secrets: list[str]  # newest first; more than one while a rotated secret is in its grace
    traceparent: str | None  # the trace of the work that caused the event


async def claim(
    pool: asyncpg.Pool,
    limit: int,
    lease_s: float,
    skip_urls: list[str],
    *,
    per_url: int,
    busy: Mapping[str, int],
) -> list[Due]:
    """Up to `limit` due deliveries, at most `per_url` in flight per URL counting the `busy`
    ones this dispatcher already has, so a backlog for one URL is not claimed only to be
    handed back. The look-ahead is bounded: a URL with a long backlog at the head of the
    queue is full after this claim and skipped by the next, which then reaches the others."""
    rows = await pool.fetch(
        """
        WITH candidates AS (
            SELECT id, url, next_attempt_at FROM webhook_deliveries
             WHERE status = 'pending' AND next_attempt_at <= now() AND url <> ALL($3::text[])
             ORDER BY next_attempt_at
             LIMIT $1 * 4
               FOR UPDATE SKIP LOCKED
        ), due AS (
            SELECT id FROM (
                SELECT c.id, c.next_attempt_at,
                       row_number() OVER (PARTITION BY c.url ORDER BY c.next_attempt_at)
                       + coalesce(b.n, 0) AS slot
                  FROM candidates c
                  LEFT JOIN unnest($5::text[], $6::int[]) AS b (url, n) ON b.url = c.url
            ) ranked
             WHERE slot <= $4
             ORDER BY next_attempt_at
             LIMIT $1
        )
        UPDATE webhook_deliveries d
           SET next_attempt_at = now() + make_interval(secs => $2),
               attempt_count = d.attempt_count + 1
          FROM due
         WHERE d.id = due.id
        RETURNING d.id, d.event_id, d.endpoint_id, d.url, d.attempt_count,
                  (SELECT payload FROM events e WHERE e.id = d.event_id) AS payload,
                  (SELECT traceparent FROM events e WHERE e.id = d.event_id) AS traceparent,
                  CASE WHEN d.endpoint_id IS NULL
                  THEN ARRAY[(SELECT signing_secret FROM tenants t WHERE t.id = d.tenant_id)]
                  ELSE (SELECT ARRAY[w.secret]
                               || CASE WHEN w.previous_secret_expires_at > now()
                                       THEN ARRAY[w.previous_secret]
                                       ELSE ARRAY[]::text[] END
                          FROM webhook_endpoints w WHERE w.id = d.endpoint_id)
                  END AS secrets
        """,
        limit,
        lease_s,
        skip_urls,
        per_url,
        list(busy),
        list(busy.values()),
    )
    return [
        Due(
            id=r["id"],
            event_id=r["event_id"],
            endpoint_id=r["endpoint_id"],
            url=r["url"],
            attempt=r["attempt_count"],
            payload=r["payload"],
            secrets=list(r["secrets"]),
            traceparent=r["traceparent"],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class AttemptRecord:
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None


async def record_attempt(
    pool: asyncpg.Pool,
    due: Due,
    attempt: AttemptRecord,
    *,
    succeeded: bool,
    retry_at: datetime | None,
    disable_endpoint: str | None,
    disable_after_s: float,
) -> bool:
    """Store one attempt and move the delivery on: `succeeded`, due again at `retry_at`, or
    `failed` (no `retry_at`). A failing endpoint is disabled when `disable_endpoint` says why
    (410 Gone) or when it has failed without a success for `disable_after_s`."""
    async with pool.acquire() as conn, conn.transaction():
        status = "succeeded" if succeeded else ("pending" if retry_at else "failed")
        updated = await conn.fetchval(
            """
            UPDATE webhook_deliveries
               SET status = $3, last_attempt_at = now(), last_status_code = $4, last_error = $5,
                   next_attempt_at = coalesce($6, next_attempt_at),
                   delivered_at = CASE WHEN $3 = 'succeeded' THEN now() END
             WHERE id = $1 AND attempt_count = $2 AND status = 'pending'
            RETURNING id
            """,
            due.id,
            due.attempt,
            status,
            attempt.status_code,
            attempt.error,
            retry_at,
        )
        if updated is None:
            return False
        await conn.execute(
            "INSERT INTO delivery_attempts (delivery_id, number, duration_ms, status_code, error,"
            " response_body) VALUES ($1, $2, $3, $4, $5, $6)",
            due.id,
            due.attempt,
            attempt.duration_ms,
            attempt.status_code,
            attempt.error,
            attempt.response_body,
        )
        if due.endpoint_id is None:
            return True
        if succeeded:
            await conn.execute(
                "UPDATE webhook_endpoints SET failing_since = NULL"
                " WHERE id = $1 AND failing_since IS NOT NULL",
                due.endpoint_id,
            )
            return True
        disabled = await conn.fetchval(
            """
            UPDATE webhook_endpoints
               SET failing_since = coalesce(failing_since, now()),
                   disabled_at = CASE WHEN $2::text IS NOT NULL
                                        OR failing_since < now() - make_interval(secs => $3)
                                      THEN now() END,
                   disabled_reason = CASE WHEN $2::text IS NOT NULL THEN $2
                                          WHEN failing_since < now() - make_interval(secs => $3)
                                          THEN 'webhook.disabled: failing for too long' END,
                   updated_at = now()
             WHERE id = $1 AND disabled_at IS NULL
            RETURNING disabled_reason
            """,
            due.endpoint_id,
            disable_endpoint,
            disable_after_s,
        )
        if disabled is not None:
            await fail_pending(conn, due.endpoint_id, disabled)
    return True


async def fail_pending(conn: Conn, endpoint_id: str, reason: str) -> None:
    """A disabled endpoint is sent nothing more: its owed deliveries fail now (they can be
    retried by hand once it is enabled again). One already under way may still arrive; its
    attempt then goes unrecorded, as the row is no longer pending."""
    await conn.execute(
        "UPDATE webhook_deliveries SET status = 'failed', last_error = coalesce(last_error, $2)"
        " WHERE endpoint_id = $1 AND status = 'pending'",
        endpoint_id,
        reason,
    )


async def defer(pool: asyncpg.Pool, due: Due, until: datetime) -> None:
    """Hand a claimed delivery back unattempted (its endpoint's circuit is open)."""
    await pool.execute(
        "UPDATE webhook_deliveries SET next_attempt_at = $3, attempt_count = attempt_count - 1"
        " WHERE id = $1 AND attempt_count = $2 AND status = 'pending'",
        due.id,
        due.attempt,
        until,
    )
