"""Recovery and retention loops every worker runs, safe to run in many places at once.

- The reaper hands a job whose worker died (its heartbeat stopped) to another worker
  within `heartbeat_timeout` + `reaper_interval` seconds, whatever the job's timeout: the
  queue alone would wait for the dead worker's in-progress key to expire (timeout + 10 s).
- The reconciler puts back on the queue every pending job Redis forgot (a restart without
  persistence, FLUSHALL, a queue entry lost while its job key stayed): Postgres is the
  source of truth, Redis only carries wake-ups. It also unparks jobs whose tenant has free
  slots (its cap was raised), and folds the tenants' job count changes into their counts.
- The input sweep takes the default action of each job whose wait for a person's input is
  over (approve, reject or fail), within `reaper_interval` of its deadline.
- Scheduled jobs are queued as they come due, and unstarted ones past their ttl expire,
  within `reaper_interval` of the time.
- Retention deletes finished jobs older than `retention_days`, in small batches.

A lost connection to Postgres or Redis is logged and the loop goes on; any other error is
a bug, ends the loop, and so stops the worker (see shared/runtime/periodic.py).
"""

import asyncio
import logging

import asyncpg

from shared.domain import after_commit
from shared.runtime import queue
from shared.runtime.periodic import every
from shared.runtime.settings import Settings
from shared.store import (
    bulk_operations,
    endpoints,
    events,
    job_sweeps,
    processes,
    request_failures,
    tenants,
)

log = logging.getLogger(__name__)

# The API inserts a job and then enqueues it; leave it that long to do so.
_ENQUEUE_GRACE_S = 5.0
# Rows deleted per statement: short transactions, short locks, no long WAL bursts.
_RETENTION_BATCH = 500


async def reap_once(db: asyncpg.Pool, redis: queue.Redis, settings: Settings) -> list[str]:
    queued: list[str] = []
    async for reaped in job_sweeps.reap(db, settings.heartbeat_timeout, settings.timeout_grace):
        for job_id in reaped.job_ids:
            log.warning("job %s: queued again after its worker was lost", job_id)
        await after_commit.carry_out(reaped, redis)
        queued += reaped.job_ids
    return queued


async def expire_inputs_once(db: asyncpg.Pool, redis: queue.Redis) -> int:
    """Take the default action of every job that waited for input past its timeout."""
    taken = 0
    async for expired in job_sweeps.expire_inputs(db):
        await after_commit.carry_out(expired, redis)
        taken += 1
    if taken:
        log.info("took the default action of %d jobs nobody answered in time", taken)
    return taken


async def when_due_once(db: asyncpg.Pool, redis: queue.Redis) -> None:
    """Queue the scheduled jobs that came due, and expire the unstarted ones past their ttl."""
    await after_commit.carry_out(await job_sweeps.promote_due(db), redis)
    await after_commit.carry_out(await job_sweeps.lapse_unstarted(db), redis)


async def reconcile_once(db: asyncpg.Pool, redis: queue.Redis, settings: Settings) -> list[str]:
    """Queue every queueable pending job the queue does not hold (not queued, not deferred, not in
    progress), and free every pending job stuck behind a stale in-progress claim (its worker
    died between the Postgres write and the queue's own bookkeeping: a pending job is in progress
    for milliseconds, not ten seconds; a second delivery of one about to start is harmless,
    as starting is compare-and-set)."""
    await job_sweeps.fold_counts(db)
    restored = await job_sweeps.unpark_free_slots(db, settings.tenant_max_running_jobs)
    for job_id in restored:
        await queue.enqueue(redis, job_id)
    after = None
    while page := await job_sweeps.pending_jobs(db, _ENQUEUE_GRACE_S, after):
        states = await queue.states(redis, [row["id"] for row in page])
        for row, state in zip(page, states, strict=True):
            if not state.held:
                await queue.requeue_now(redis, row["id"], row["run_after"])
                restored.append(row["id"])
            elif state.in_progress and row["overdue"]:
                await queue.requeue_now(redis, row["id"])
                restored.append(row["id"])
        after = page[-1]["id"]
    if restored:
        log.warning("queued %d pending jobs the queue did not hold", len(restored))
    return restored


async def run_recovery(db: asyncpg.Pool, redis: queue.Redis, settings: Settings) -> None:
    """Reap, sweep expired inputs and reconcile every `reaper_interval` until cancelled."""

    async def recover() -> None:
        await reap_once(db, redis, settings)
        await expire_inputs_once(db, redis)
        await when_due_once(db, redis)
        await reconcile_once(db, redis, settings)

    await every(
        settings.reaper_interval,
        recover,
        on_transient=lambda exc: log.warning("recovery pass failed: %s", exc),
    )


async def purge_once(db: asyncpg.Pool, retention_days: float) -> int:
    """Delete everything older than `retention_days`, a batch at a time; how many rows."""
    total = 0
    while (
        deleted := await job_sweeps.purge_finished(db, retention_days, _RETENTION_BATCH)
        + await events.purge_without_job(db, retention_days, _RETENTION_BATCH)
    ) > 0:
        total += deleted
        await asyncio.sleep(0)  # let heartbeats and claims through between batches
    return total


async def forget_once(db: asyncpg.Pool, settings: Settings) -> int:
    """Drop what is kept only for a while: failed-request logs past their days,
    rotated-out signing secrets past their grace, processes gone for a day, and bulk
    operations done as long ago as retention keeps jobs. How many rows."""
    return (
        await request_failures.purge(db, settings.request_log_days)
        + await tenants.forget_expired_secrets(db)
        + await endpoints.forget_expired_secrets(db)
        + await processes.forget_gone(db)
        + await bulk_operations.purge(db, settings.retention_days or settings.request_log_days)
    )


async def run_retention(db: asyncpg.Pool, settings: Settings) -> None:
    """Purge every `retention_interval` until cancelled."""

    async def purge() -> None:
        if deleted := await purge_once(db, settings.retention_days):
            log.info("retention: deleted %d finished jobs and lone events", deleted)
        if forgotten := await forget_once(db, settings):
            log.info(
                "retention: forgot %d request logs, expired secrets, gone processes", forgotten
            )

    await every(
        settings.retention_interval,
        purge,
        on_transient=lambda exc: log.warning("retention pass failed: %s", exc),
    )
