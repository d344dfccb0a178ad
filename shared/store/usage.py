"""What each tenant used, per calendar month (UTC): every statement on `tenant_usage`.

The count is a counter bumped by one SQL function, `crewq_count_job_v1` (migration 0006),
where a live job is inserted (`crewq_submit_job_v1`, `_v2`, which
shared/store/job_submission.py `insert` calls) or run again by a manual retry
(shared/store/jobs.py `restart`): an upsert evaluated under the row's lock, so concurrent
requests can neither both take the last job of a quota nor lose a count, and retention
deleting old jobs gives nothing back. This module reads it, and what a tenant's live jobs
of the month spent on models (summed from `jobs.usage`) against its monthly caps
(`tenants.max_tokens_per_month`, `max_cost_usd_per_month`).
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime

from schemas.jobs import Budget
from shared.runtime.db import Executor


def month_starts(at: datetime) -> date:
    return at.astimezone(UTC).date().replace(day=1)


def month_ends(at: datetime) -> datetime:
    """When the month holding `at` ends (UTC): when its quota resets."""
    start = month_starts(at)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


@dataclass(frozen=True)
class QuotaExceeded:
    """The tenant's quota of live jobs this month is used up, until `resets_at`: what a
    submission (shared/store/job_submission.py `insert`) or a restart (shared/store/jobs.py
    `restart`) answers instead of a job."""

    limit: int
    resets_at: datetime


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


# A tenant's live jobs created this month (UTC): what their model calls spent.
_MONTH_SPEND = """
    SELECT coalesce(sum((usage->>'total_tokens')::bigint), 0)::bigint AS tokens,
           coalesce(sum((usage->>'cost_usd')::float8), 0) AS cost_usd
      FROM jobs
     WHERE tenant_id = $1 AND livemode AND usage IS NOT NULL
       AND created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
"""


@dataclass(frozen=True)
class ModelSpend:
    tokens: int
    cost_usd: float


async def model_spend_this_month(db: Executor, tenant_id: str) -> ModelSpend:
    """What the tenant's live jobs of this month have spent on models (the jobs_tenant_created
    index finds them)."""
    row = await db.fetchrow(_MONTH_SPEND, tenant_id)
    assert row is not None
    return ModelSpend(int(row["tokens"]), float(row["cost_usd"]))


async def caps_left(db: Executor, tenant_id: str, job_id: str, livemode: bool) -> Budget | None:
    """What the tenant's monthly model caps leave for this job, in the job's own terms (its
    whole spending, earlier attempts included, as its budget counts it); None when the
    tenant has no cap, or the job is a test key's (it spends nothing real)."""
    if not livemode:
        return None
    row = await db.fetchrow(
        f"""
        WITH month AS ({_MONTH_SPEND})
        SELECT t.max_tokens_per_month, t.max_cost_usd_per_month, m.tokens, m.cost_usd,
               coalesce((j.usage->>'total_tokens')::bigint, 0) AS job_tokens,
               coalesce((j.usage->>'cost_usd')::float8, 0) AS job_cost
          FROM tenants t, month m, jobs j
         WHERE t.id = $1 AND j.id = $2
        """,
        tenant_id,
        job_id,
    )
    if row is None or (
        row["max_tokens_per_month"] is None and row["max_cost_usd_per_month"] is None
    ):
        return None
    tokens = cost = None
    if row["max_tokens_per_month"] is not None:
        others = row["tokens"] - row["job_tokens"]
        tokens = max(1, row["max_tokens_per_month"] - others)
    if row["max_cost_usd_per_month"] is not None:
        others_cost = row["cost_usd"] - row["job_cost"]
        cost = max(1e-9, row["max_cost_usd_per_month"] - others_cost)
    return Budget(max_tokens=tokens, max_cost_usd=cost)
