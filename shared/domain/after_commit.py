"""Carrying out what a job's move leaves to do once its transaction has committed
(`jobs.AfterCommit`): count the job's end or retry, and queue the jobs it calls for. Every
caller of a job-moving store function (the worker's runner, the reaper, the API's routes)
hands the answer's `after` to `carry_out`, so none queues or counts by hand.

Queueing is best effort: the job is safe in Postgres, and should Redis be away the
reconciler (worker/recovery.py) queues every pending job the queue does not hold once it
is back. Only Redis being unavailable is waited out so; any other error is a bug and is
raised."""

import logging

from shared.runtime import metrics, queue
from shared.store.jobs import AfterCommit, Finished, Queueing, Retried

log = logging.getLogger(__name__)


def _count(count: Finished | Retried) -> None:
    match count:
        case Finished(crew=crew, status=status, ran_s=ran_s):
            metrics.job_finished(crew, metrics.JobOutcome(status.value), ran_s)
        case Retried(crew=crew, reason=reason):
            metrics.job_retried(crew, reason)


async def carry_out(after: AfterCommit, redis: queue.Redis) -> None:
    """Count, then queue: the counts never wait on Redis, nor are lost with it."""
    for count in after.counts:
        _count(count)
    for entry in after.queue:
        try:
            if entry.how is Queueing.AT_ONCE:
                await queue.requeue_now(redis, entry.job_id)
            else:
                await queue.enqueue(redis, entry.job_id)
        except queue.REDIS_UNAVAILABLE as exc:
            log.warning(
                "job %s stored but not queued yet (%s); the reconciler will", entry.job_id, exc
            )
