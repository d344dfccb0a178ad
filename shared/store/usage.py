"""What each tenant used, per calendar month (UTC): every statement on `tenant_usage`.

The count is a counter bumped by one SQL function, `crewq_count_job_v1` (migration 0006),
where a live job is inserted (`crewq_submit_job_v1`, `_v2`, which
shared/store/job_submission.py `insert` calls) or run again by a manual retry
(shared/store/jobs.py `restart`): an upsert evaluated under the row's lock, so concurrent
requests can neither both take the last job of a quota nor lose a count, and retention
deleting old jobs gives nothing back. This module reads it, and what a tenant's live jobs
of the month spent on models (summed from `jobs.usage`) against its monthly caps
(`tenants.max_tokens_per_month`, `max_cost_usd_per_month`), and what an owner's recent
jobs did, per crew (`metrics`: states, run time, queue wait, spending).
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg

from schemas.jobs import Budget, JobStatus, Spent
from shared.domain.owners import Owner
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


# The owner's jobs created in the last $3, per crew and in total (the empty grouping set,
# `grouping(crew) = 1`), in one statement. `jobs_tenant_created (tenant_id, created_at)`
# finds them; an ended job's attempts are summed through job_attempts' primary key.
# A job's run time is its attempts' (waits for a retry or for a person left out); its queue
# wait, from when it was due to its first start, is known only while `run_after` still says
# when it was due: a retry, a hand-back or an answer moves it past `started_at`.
_ENDED_AFTER_RUNNING = ", ".join(
    f"'{s}'" for s in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
)
_BY_STATUS = ", ".join(f"count(*) FILTER (WHERE status = '{s}') AS \"{s}\"" for s in JobStatus)
_METRICS = f"""
    WITH picked AS (
        SELECT j.crew, j.status, ran.seconds AS run_s,
               CASE WHEN j.started_at >= j.run_after
                    THEN extract(epoch FROM j.started_at - greatest(j.created_at, j.run_after))
               END::float8 AS wait_s,
               coalesce((j.usage->>'prompt_tokens')::bigint, 0) AS prompt_tokens,
               coalesce((j.usage->>'completion_tokens')::bigint, 0) AS completion_tokens,
               coalesce((j.usage->>'total_tokens')::bigint, 0) AS total_tokens,
               coalesce((j.usage->>'cost_usd')::float8, 0) AS cost_usd,
               coalesce((j.usage->>'llm_calls')::bigint, 0) AS llm_calls
          FROM jobs j
          LEFT JOIN LATERAL (
                SELECT sum(extract(epoch FROM a.finished_at - a.started_at))::float8 AS seconds
                  FROM job_attempts a
                 WHERE a.job_id = j.id AND a.finished_at IS NOT NULL
                   AND j.status IN ({_ENDED_AFTER_RUNNING})
          ) ran ON true
         WHERE j.tenant_id = $1 AND j.livemode = $2 AND j.created_at >= now() - $3::interval
    )
    SELECT crew, grouping(crew) = 1 AS total, now() AS until, count(*) AS jobs,
           {_BY_STATUS},
           percentile_cont(0.5) WITHIN GROUP (ORDER BY run_s) AS run_p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY run_s) AS run_p95,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY wait_s) AS wait_p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY wait_s) AS wait_p95,
           sum(prompt_tokens)::bigint AS prompt_tokens,
           sum(completion_tokens)::bigint AS completion_tokens,
           sum(total_tokens)::bigint AS total_tokens,
           coalesce(sum(cost_usd), 0)::float8 AS cost_usd,
           sum(llm_calls)::bigint AS llm_calls
      FROM picked
     GROUP BY GROUPING SETS ((crew), ())
     ORDER BY grouping(crew) DESC, crew
"""


@dataclass(frozen=True)
class Measures:
    """What a group of jobs did (seconds; None: no job of the group has the measure)."""

    jobs: int
    by_status: dict[JobStatus, int]
    run_p50: float | None
    run_p95: float | None
    wait_p50: float | None
    wait_p95: float | None
    spent: Spent


@dataclass(frozen=True)
class Metrics:
    since: datetime
    until: datetime
    totals: Measures
    crews: dict[str, Measures]  # by crew name, in name order


def _measures(row: asyncpg.Record) -> Measures:
    return Measures(
        jobs=row["jobs"],
        by_status={s: row[s.value] for s in JobStatus},
        run_p50=row["run_p50"],
        run_p95=row["run_p95"],
        wait_p50=row["wait_p50"],
        wait_p95=row["wait_p95"],
        spent=Spent(
            prompt_tokens=row["prompt_tokens"] or 0,
            completion_tokens=row["completion_tokens"] or 0,
            total_tokens=row["total_tokens"] or 0,
            cost_usd=row["cost_usd"],
            llm_calls=row["llm_calls"] or 0,
        ),
    )


async def metrics(db: Executor, owner: Owner, period: timedelta) -> Metrics:
    """What the owner's jobs (its tenant's, of its mode) created in the last `period` did,
    per crew and in total. Jobs retention has deleted are not counted."""
    rows = await db.fetch(_METRICS, owner.tenant_id, owner.livemode, period)
    total = rows[0]  # the empty grouping set answers a row even for no jobs at all
    assert total["total"]
    return Metrics(
        since=total["until"] - period,
        until=total["until"],
        totals=_measures(total),
        crews={r["crew"]: _measures(r) for r in rows[1:]},
    )
