"""Webhook endpoints a tenant registers, in Postgres: every statement on `webhook_endpoints`,
and the health an endpoint's delivery attempts give it.

Every query is scoped by owner (tenant and mode): an id of another tenant, or of the
other mode, reads as unknown. The API only
writes rows; the dispatcher is the one that speaks to receivers.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from schemas.events import STEP_EVENTS, EventType
from schemas.webhooks import (
    DeliveryStatus,
    DeliverySummary,
    DisabledReason,
    WebhookEndpoint,
    WebhookSecret,
)
from shared.domain.owners import Owner
from shared.runtime.db import Conn, Executor, TenantLock, lock_tenant
from shared.runtime.ids import new_id, new_signing_secret
from shared.runtime.secret_box import SecretBox
from shared.store import deliveries, signing_secrets
from shared.store.deliveries import AttemptRecord, Due, Target
from shared.store.paging import cut, one_more

RECENT_DELIVERIES = 5

# An endpoint is its owner's when it is of the owner's tenant and mode ($2, $3: `_of`).
_OWNED = "tenant_id = $2 AND livemode = $3"


def _of(owner: Owner) -> tuple[str, bool]:
    return owner.tenant_id, owner.livemode


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


async def _view(db: Executor, row: asyncpg.Record) -> WebhookEndpoint:
    recent = await deliveries.recent(db, [row["id"]], RECENT_DELIVERIES)
    return _endpoint(row, recent[row["id"]])


@dataclass(frozen=True)
class Created:
    endpoint: WebhookEndpoint
    secret: str  # shown in this answer only


@dataclass(frozen=True)
class TooMany:
    limit: int


async def create(
    pool: asyncpg.Pool,
    owner: Owner,
    *,
    url: str,
    events: list[str],
    description: str,
    default_limit: int,
    box: SecretBox,
) -> Created | TooMany:
    """A new enabled endpoint and its signing secret, unless the tenant already has as many
    as it may (its own bound, or `default_limit`)."""
    secret = new_signing_secret()
    tenant_id = owner.tenant_id
    async with pool.acquire() as conn, conn.transaction():
        await lock_tenant(conn, TenantLock.ENDPOINTS, tenant_id)
        limit = await conn.fetchval(
            "SELECT coalesce(max_webhook_endpoints, $2) FROM tenants WHERE id = $1",
            tenant_id,
            default_limit,
        )
        count = await conn.fetchval(
            "SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1", tenant_id
        )
        if count >= limit:
            return TooMany(limit)
        row = await conn.fetchrow(
            "INSERT INTO webhook_endpoints"
            " (id, tenant_id, url, description, events, secret, livemode)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
            new_id("we"),
            tenant_id,
            url,
            description,
            events,
            box.seal(secret),
            owner.livemode,
        )
    assert row is not None
    return Created(_endpoint(row, []), secret)


async def page(
    db: Executor, owner: Owner, *, before: str | None, limit: int
) -> tuple[list[WebhookEndpoint], bool]:
    """Newest first (ids are time-ordered); `before` is the last id of the previous page."""
    rows = await db.fetch(
        "SELECT * FROM webhook_endpoints WHERE tenant_id = $1 AND livemode = $4"
        " AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        owner.tenant_id,
        before,
        one_more(limit),
        owner.livemode,
    )
    shown, has_more = cut(rows, limit)
    recent = await deliveries.recent(db, [r["id"] for r in shown], RECENT_DELIVERIES)
    return [_endpoint(r, recent[r["id"]]) for r in shown], has_more


async def get(db: Executor, owner: Owner, endpoint_id: str) -> WebhookEndpoint | None:
    row = await db.fetchrow(
        f"SELECT * FROM webhook_endpoints WHERE id = $1 AND {_OWNED}", endpoint_id, *_of(owner)
    )
    return await _view(db, row) if row else None


async def exists(db: Executor, owner: Owner, endpoint_id: str) -> bool:
    found = await db.fetchval(
        f"SELECT 1 FROM webhook_endpoints WHERE id = $1 AND {_OWNED}", endpoint_id, *_of(owner)
    )
    return found is not None


async def subscribed(conn: Conn, owner: Owner, event_type: EventType) -> list[Target]:
    """The owner's enabled endpoints that take `event_type`: those naming it, and for all
    but the steps of a running crew, those subscribed to `*`. A test job's events go to
    test endpoints only, a live job's to live ones."""
    rows = await conn.fetch(
        "SELECT id, url FROM webhook_endpoints"
        " WHERE tenant_id = $1 AND livemode = $4 AND disabled_at IS NULL"
        " AND (events @> ARRAY[$2] OR ($3 AND events @> ARRAY['*']))",
        owner.tenant_id,
        event_type,
        event_type not in STEP_EVENTS,
        owner.livemode,
    )
    return [Target(r["id"], r["url"]) for r in rows]


async def target(conn: Conn, owner: Owner, endpoint_id: str) -> Target | None:
    """One endpoint, enabled or not (a test send goes to a disabled one too)."""
    url = await conn.fetchval(
        f"SELECT url FROM webhook_endpoints WHERE id = $1 AND {_OWNED}",
        endpoint_id,
        *_of(owner),
    )
    return Target(endpoint_id, url) if url is not None else None


async def update(
    pool: asyncpg.Pool,
    owner: Owner,
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
            f"SELECT url, disabled_at FROM webhook_endpoints WHERE id = $1 AND {_OWNED} FOR UPDATE",
            endpoint_id,
            *_of(owner),
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
            owner.tenant_id,
            url,
            events,
            description,
            enabled,
            DisabledReason.BY_API,
        )
        assert row is not None  # locked above
        if url is not None and url != before["url"]:
            await deliveries.follow_url(conn, endpoint_id, url)
        if enabled is False and before["disabled_at"] is None:
            await deliveries.fail_pending(conn, endpoint_id, DisabledReason(row["disabled_reason"]))
        return await _view(conn, row)


async def delete(db: Executor, owner: Owner, endpoint_id: str) -> bool:
    """Remove the endpoint; its deliveries and their attempts go with it."""
    deleted = await db.fetchval(
        f"DELETE FROM webhook_endpoints WHERE id = $1 AND {_OWNED} RETURNING id",
        endpoint_id,
        *_of(owner),
    )
    return deleted is not None


async def rotate_secret(
    db: Executor, owner: Owner, endpoint_id: str, grace_s: int, box: SecretBox
) -> WebhookSecret | None:
    """A new secret; the one it replaces keeps signing alongside it for `grace_s` (the
    dispatcher signs with both while `previous_secret_expires_at` is ahead), or is
    forgotten at once when `grace_s` is 0."""
    rotated = await signing_secrets.rotate(
        db, signing_secrets.ENDPOINT, endpoint_id, grace_s, box, owner=owner
    )
    if rotated is None:
        return None
    return WebhookSecret(
        endpoint_id=endpoint_id,
        secret=rotated.secret,
        previous_secret_expires_at=rotated.previous_secret_expires_at,
    )


async def forget_expired_secrets(db: Executor) -> int:
    """Clear rotated-out secrets whose grace has passed: they sign nothing any more, and a
    secret not kept cannot leak. Returns how many were cleared."""
    return await signing_secrets.forget_expired(db, signing_secrets.ENDPOINT)


async def reseal(conn: Conn, box: SecretBox) -> int:
    """Seal every endpoint's secrets with the newest key (`crewq secrets reseal`)."""
    return await signing_secrets.reseal(conn, box, signing_secrets.ENDPOINT)


async def _note_attempt(
    conn: Conn,
    endpoint_id: str,
    succeeded: bool,
    disable: DisabledReason | None,
    disable_after_s: float,
) -> None:
    """What an attempt says of its endpoint's health: a success clears `failing_since`; a
    failure starts it, and disables the endpoint when `disable` says why (410 Gone) or when
    it has failed without a success for `disable_after_s`."""
    if succeeded:
        await conn.execute(
            "UPDATE webhook_endpoints SET failing_since = NULL"
            " WHERE id = $1 AND failing_since IS NOT NULL",
            endpoint_id,
        )
        return
    disabled = await conn.fetchval(
        """
        UPDATE webhook_endpoints
           SET failing_since = coalesce(failing_since, now()),
               disabled_at = CASE WHEN $2::text IS NOT NULL
                                    OR failing_since < now() - make_interval(secs => $3)
                                  THEN now() END,
               disabled_reason = CASE WHEN $2::text IS NOT NULL THEN $2
                                      WHEN failing_since < now() - make_interval(secs => $3)
                                      THEN $4 END,
               updated_at = now()
         WHERE id = $1 AND disabled_at IS NULL
        RETURNING disabled_reason
        """,
        endpoint_id,
        disable,
        disable_after_s,
        DisabledReason.FAILING,
    )
    if disabled is not None:
        await deliveries.fail_pending(conn, endpoint_id, DisabledReason(disabled))


async def record_attempt(
    pool: asyncpg.Pool,
    due: Due,
    attempt: AttemptRecord,
    status: DeliveryStatus,
    retry_at: datetime | None,
    *,
    disable: DisabledReason | None,
    disable_after_s: float,
) -> bool:
    """Store one attempt, move its delivery on, and note what it says of its endpoint, in
    one transaction. False: the delivery had moved on without this attempt."""
    async with pool.acquire() as conn, conn.transaction():
        if due.endpoint_id is not None:
            # The endpoint's row first, then its delivery's: the order in which deleting
            # an endpoint (whose deliveries go with it) and disabling one (which fails
            # them) take the same two locks. The other order deadlocked against them.
            await conn.execute(
                "SELECT 1 FROM webhook_endpoints WHERE id = $1 FOR NO KEY UPDATE",
                due.endpoint_id,
            )
        if not await deliveries.record_attempt(conn, due, attempt, status, retry_at):
            return False
        if due.endpoint_id is not None:
            await _note_attempt(
                conn,
                due.endpoint_id,
                status is DeliveryStatus.SUCCEEDED,
                disable,
                disable_after_s,
            )
    return True
