"""The scheduler every worker runs: fire each due schedule tick as one job.

Every `scheduler_interval` it claims due schedules one at a time until none is left
(shared/store/schedules.py `fire_one`: `FOR UPDATE SKIP LOCKED`, the job inserted and the
next tick set in one transaction), so however many workers run it, a tick makes one job.
Each job is queued once its transaction has committed, as a submission's is.
"""

import logging

import asyncpg

from shared.domain import after_commit
from shared.runtime import metrics, queue
from shared.runtime.periodic import every
from shared.runtime.settings import Settings
from shared.store import schedules

log = logging.getLogger(__name__)


def bounds_of(settings: Settings) -> schedules.Bounds:
    return schedules.Bounds(
        settings.tenant_max_pending_jobs,
        settings.tenant_max_running_jobs,
        settings.schedule_missed_after,
    )


async def fire_due(
    db: asyncpg.Pool, redis: queue.Redis, bounds: schedules.Bounds
) -> list[schedules.Fired]:
    """Fire every due tick no other scheduler holds; what each came to."""
    fired: list[schedules.Fired] = []
    while (tick := await schedules.fire_one(db, bounds)) is not None:
        await after_commit.carry_out(tick.after, redis)
        fired.append(tick)
        if tick.job_id is not None:
            assert tick.created_at is not None
            drift = (tick.created_at - tick.due).total_seconds()
            metrics.schedule_tick(metrics.TickOutcome.JOB, None if tick.missed else drift)
        elif tick.refused is not None:
            log.warning(
                "schedule %s: its tick's job was refused (%s)", tick.schedule_id, tick.refused
            )
            metrics.schedule_tick(metrics.TickOutcome.REFUSED, None)
        else:
            log.info("schedule %s: skipped ticks missed since %s", tick.schedule_id, tick.due)
            metrics.schedule_tick(metrics.TickOutcome.SKIPPED, None)
    return fired


async def run_scheduler(db: asyncpg.Pool, redis: queue.Redis, settings: Settings) -> None:
    bounds = bounds_of(settings)

    async def fire() -> None:
        await fire_due(db, redis, bounds)

    await every(
        settings.scheduler_interval,
        fire,
        on_transient=lambda exc: log.warning("scheduler pass failed: %s", exc),
    )
