"""What each tenant used, per calendar month (UTC): every statement on `tenant_usage`.

The count is a counter bumped by one SQL function, `crewq_count_job_v1` (migration 0006),
where a live job is inserted (`crewq_submit_job_v1`, which shared/store/jobs.py `insert` calls)
or run
again by a manual retry (shared/store/jobs.py `restart`): an upsert evaluated under the row's
lock, so concurrent requests can neither both take the last job of a quota nor lose a
count, and retention deleting old jobs gives nothing back. This module reads it.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime

from shared.runtime.db import Executor


def month_starts(at: datetime) -> date:
    return at.astimezone(UTC).date().replace(day=1)


def month_ends(at: datetime) -> datetime:
    """When the month holding `at` ends (UTC): when its quota resets."""
    start = month_starts(at)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


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
