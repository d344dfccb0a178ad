"""Bulk cancels and retries, done by every worker a batch at a time.

Each pass takes one running operation no other worker holds (shared/store/bulk_operations.py
`take_batch`) and moves its next jobs one by one with the functions the single-job routes
use (`jobs.request_cancel`, `jobs.restart`: each its own short transaction through the
`Move` table), carrying out what each move leaves to do (a pending job's end counted, a
retried job queued) and broadcasting the cancel of a running job to its worker, as
`POST /v1/jobs/{id}/cancel` does. So no transaction spans more than one job, and an API
restart loses nothing: the operation is in Postgres until its last batch is counted.
"""

import logging

import asyncpg

from schemas.bulk import BulkKind, BulkOperation, BulkStatus
from shared.domain import after_commit
from shared.domain.owners import Owner
from shared.runtime import metrics, queue
from shared.runtime.periodic import every
from shared.runtime.settings import Settings
from shared.store import bulk_operations, jobs

log = logging.getLogger(__name__)

# Jobs per batch: a batch's count commits (and shows in the operation's progress) at once.
BATCH = 100


async def _cancel(db: asyncpg.Pool, redis: queue.Redis, owner: Owner, job_id: str) -> bool:
    cancel = await jobs.request_cancel(db, owner, job_id)
    await after_commit.carry_out(cancel.after, redis)
    if cancel.outcome is jobs.CancelOutcome.REQUESTED:
        try:
            await queue.publish_cancel(redis, job_id)
        except queue.REDIS_UNAVAILABLE as exc:
            # The worker's heartbeat sees the request in Postgres within seconds anyway.
            log.warning("cancel of %s not broadcast (%s)", job_id, exc)
    return cancel.outcome in (jobs.CancelOutcome.CANCELLED, jobs.CancelOutcome.REQUESTED)


async def _retry(
    db: asyncpg.Pool,
    redis: queue.Redis,
    owner: Owner,
    job_id: str,
    monthly_limit: int | None,
) -> bool:
    restarted = await jobs.restart(db, owner, job_id, monthly_limit)
    if not isinstance(restarted, jobs.Restarted):
        return False  # not failed or cancelled (any more), or past the monthly quota
    await after_commit.carry_out(restarted.after, redis)
    return True


async def do_batch(db: asyncpg.Pool, redis: queue.Redis, size: int = BATCH) -> BulkOperation | None:
    """One batch of one operation; the operation as it stands after it, None when no
    operation is left to do."""
    async with bulk_operations.take_batch(db, size) as batch:
        if batch is None:
            return None
        changed = 0
        for job_id in batch.job_ids:
            if batch.kind is BulkKind.CANCEL:
                moved = await _cancel(db, redis, batch.owner, job_id)
            else:
                moved = await _retry(db, redis, batch.owner, job_id, batch.monthly_limit)
            metrics.bulk_handled(batch.kind.value, moved)
            changed += moved
        return await bulk_operations.record_batch(batch, changed)


async def run_bulk(db: asyncpg.Pool, redis: queue.Redis, settings: Settings) -> None:
    """Do every operation's batches, then look again every `bulk_interval`."""

    async def work() -> None:
        while (operation := await do_batch(db, redis)) is not None:
            if operation.status is BulkStatus.DONE:
                log.info(
                    "bulk %s %s: %d of %d jobs changed",
                    operation.kind,
                    operation.id,
                    operation.changed,
                    operation.matched,
                )

    await every(
        settings.bulk_interval,
        work,
        on_transient=lambda exc: log.warning("bulk operations pass failed: %s", exc),
    )
