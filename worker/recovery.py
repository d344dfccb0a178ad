"""Recovery loops every worker runs, safe to run in many places at once.

- The reaper hands a job whose worker died (its heartbeat stopped) to another worker
  within `heartbeat_timeout` + `reaper_interval` seconds, whatever the job's timeout: arq
  alone would wait for the dead worker's in-progress key to expire (timeout + 10 s).
- The reconciler puts back on the queue every pending job Redis forgot (a restart without
  persistence, FLUSHALL): Postgres is the source of truth, Redis only carries wake-ups.
"""

import asyncio
import logging

import asyncpg
from arq.connections import ArqRedis

from shared import jobs, queue
from shared.settings import Settings

log = logging.getLogger(__name__)

# The API inserts a job and then enqueues it; leave it that long to do so.
_ENQUEUE_GRACE_S = 5.0


async def reap_once(db: asyncpg.Pool, redis: ArqRedis, settings: Settings) -> list[str]:
    requeue = await jobs.reap(db, settings.heartbeat_timeout, settings.timeout_grace)
    for job_id in requeue:
        log.warning("job %s: worker lost, handed to another worker", job_id)
        await queue.requeue_now(redis, job_id)
    return requeue


async def reconcile_once(db: asyncpg.Pool, redis: ArqRedis) -> list[str]:
    """Queue every pending job arq does not hold, and free every pending job stuck behind a
    stale in-progress claim (its worker died between the Postgres write and arq's own
    bookkeeping: a pending job is in progress for milliseconds, not half a minute)."""
    restored: list[str] = []
    after = None
    while page := await jobs.pending_jobs(db, _ENQUEUE_GRACE_S, after):
        states = await queue.arq_state(redis, [row["id"] for row in page])
        for row, (held, in_progress) in zip(page, states, strict=True):
            if not held:
                await queue.enqueue(redis, row["id"], row["run_after"])
                restored.append(row["id"])
            elif in_progress and row["overdue"]:
                await queue.requeue_now(redis, row["id"])
                restored.append(row["id"])
        after = page[-1]["id"]
    if restored:
        log.warning("re-queued %d pending jobs the queue had lost", len(restored))
    return restored


async def run_recovery(db: asyncpg.Pool, redis: ArqRedis, settings: Settings) -> None:
    """Reap and reconcile every `reaper_interval` until cancelled; outages are logged and
    the loop goes on."""
    while True:
        try:
            await reap_once(db, redis, settings)
            await reconcile_once(db, redis)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("recovery pass failed: %s", exc)
        await asyncio.sleep(settings.reaper_interval)
