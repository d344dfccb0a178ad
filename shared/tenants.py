"""Tenants in Postgres: every write to `tenants`, and what the API reads of one.

A tenant owns jobs, webhook endpoints and API keys, signs its jobs' own webhooks with its
signing secret, and may have bounds of its own; a bound left unset (NULL) is the
platform's default (`CREWQ_TENANT_MAX_*`).
"""

from dataclasses import dataclass
from datetime import datetime

from shared.db import Conn, Executor
from shared.ids import new_id, new_signing_secret


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    signing_secret: str
    created_at: datetime
    max_running_jobs: int | None
    max_pending_jobs: int | None
    max_webhook_endpoints: int | None
    max_event_streams: int | None


# The bounds `crewq tenants set` may change, by column.
LIMITS = ("max_running_jobs", "max_pending_jobs", "max_webhook_endpoints", "max_event_streams")


async def ensure(conn: Conn, name: str) -> str:
    """The tenant's id, creating the tenant (and its signing secret) when it is new."""
    row = await conn.fetchrow(
        "INSERT INTO tenants (id, name, signing_secret) VALUES ($1, $2, $3)"
        " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        new_id("ten"),
        name,
        new_signing_secret(),
    )
    assert row is not None
    return str(row["id"])


async def get(db: Executor, tenant_id: str) -> Tenant | None:
    row = await db.fetchrow(
        f"SELECT id, name, signing_secret, created_at, {', '.join(LIMITS)}"
        " FROM tenants WHERE id = $1",
        tenant_id,
    )
    return Tenant(**dict(row)) if row else None


async def set_limits(conn: Conn, name: str, limits: dict[str, int | None]) -> bool:
    """Set some of a tenant's bounds (None: back to the platform default). False when no
    tenant has that name."""
    unknown = set(limits) - set(LIMITS)
    if unknown:
        raise ValueError(f"not a tenant bound: {', '.join(sorted(unknown))}")
    columns = list(limits)
    assignments = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=2))
    done = await conn.fetchval(
        f"UPDATE tenants SET {assignments} WHERE name = $1 RETURNING id",
        name,
        *(limits[c] for c in columns),
    )
    return done is not None
