"""What each tenant used, per calendar month (UTC): every statement on `tenant_usage`.

The count is a counter bumped in the transaction that inserts the job, under the tenant's
submission lock (shared/jobs.py `insert`): concurrent submissions can neither both take the
last job of a quota nor lose a count, and retention deleting old jobs gives nothing back.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime

from shared.db import Conn, Executor


def month_starts(at: datetime) -> date:
    return at.astimezone(UTC).date().replace(day=1)


def month_ends(at: datetime) -> datetime:
    """When the month holding `at` ends (UTC): when its quota resets."""
    start = month_starts(at)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


async def now(db: Executor) -> datetime:
    """The database's clock, which every quota decision reads (not each process's own)."""
    value: datetime = await db.fetchval("SELECT now()")
    return value


async def count_job(conn: Conn, tenant_id: str, limit: int | None) -> bool:
    """Count one job against this month's quota; False (and nothing counted) when the
    tenant has already created `limit` jobs this month. Run in the inserting transaction."""
    counted = await conn.fetchval(
        """
        INSERT INTO tenant_usage AS u (tenant_id, month, jobs)
        SELECT $1, date_trunc('month', now() AT TIME ZONE 'UTC')::date, 1
         WHERE $2::bigint IS NULL OR $2 > 0
        ON CONFLICT (tenant_id, month) DO UPDATE SET jobs = u.jobs + 1
         WHERE $2::bigint IS NULL OR u.jobs < $2
        RETURNING jobs
        """,
        tenant_id,
        limit,
    )
    return counted is not None


@dataclass(frozen=True)
class MonthUsage:
    jobs: int
    resets_at: datetime


async def this_month(db: Executor, tenant_id: str) -> MonthUsage:
    row = await db.fetchrow(
        """
        SELECT now() AS now,
               coalesce((SELECT jobs FROM tenant_usage
                          WHERE tenant_id = $1
                            AND month = date_trunc('month', now() AT TIME ZONE 'UTC')::date),
                        0) AS jobs
        """,
        tenant_id,
    )
    assert row is not None
    return MonthUsage(jobs=row["jobs"], resets_at=month_ends(row["now"]))
