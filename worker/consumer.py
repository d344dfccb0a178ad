"""Taking jobs off arq's queue the moment they are there.

arq finds new jobs by polling its queue. crewq's enqueue also publishes a wake-up
(shared/runtime/queue.py), and a worker that hears one, or frees one of its own slots, polls at
once: a job starts a millisecond or two after it is queued instead of after half the poll
interval on average, and an idle worker polls only as a backstop. Redis pub/sub delivers
at most once (a worker reconnecting misses what was published meanwhile), so the poll
stays, to catch a lost wake-up and a deferred job falling due.

A payload in the queue that crewq did not write (a pickle, above all, which would run
code as arq read it) is refused: logged with its arq job id, dropped, and nothing run."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from arq import Worker
from arq.connections import ArqRedis
from arq.worker import Function, Retry, func

from shared.runtime import queue
from shared.runtime.logs import log_context

log = logging.getLogger(__name__)

# How often an idle worker polls arq's queue anyway.
BACKSTOP_POLL_S = 0.25

# The arq job id of the job `run_job` is taking up: arq hands its deserializer the payload
# alone, and the refusal should say which one, and check the payload names that job.
_arq_job_id: ContextVar[str | None] = ContextVar("arq_job_id", default=None)


def _load_job(payload: bytes) -> dict[str, Any]:
    job_id = _arq_job_id.get()
    try:
        return queue.load_job(payload, job_id)
    except queue.RefusedPayload as exc:
        # arq then drops the job key and its queue entry and goes on with the next job.
        log.error("job %s: refused its queue payload, %s; nothing was run", job_id, exc)
        raise


def job_function(handle: Callable[[str], Awaitable[queue.Handled]]) -> Function:
    """arq's `run_job` function for `handle` (the runner's `run`), answering arq in its own
    terms: `Requeue` is arq's `Retry`, which keeps the job key and defers the queue entry;
    `Done` ends the delivery, and arq drops the job (no result is kept)."""

    async def run_job(ctx: dict[str, Any], job_id: str) -> str:
        match await handle(job_id):
            case queue.Requeue(after=after):
                raise Retry(defer=after)
            case queue.Done(why=why):
                return why

    # Tries are not arq's to count: Postgres holds each job's attempts and retry budget.
    return func(run_job, name=queue.RUN_JOB, keep_result=0, max_tries=10_000)


class PromptWorker(Worker):
    """arq's worker, polling when `wake` is set rather than only every `poll_delay`.

    It always reads and writes crewq's JSON records (shared/runtime/queue.py), never arq's default
    pickle, and refuses any other payload.

    It reaches into three of arq 0.28's internals (pinned): `_poll_iteration`, one look at
    the queue, which it follows with a wait for `wake` in place of arq's fixed sleep;
    `_release_sem_dec_counter_on_complete`, where a finished job frees its slot; and
    `run_job`, a task of its own per job, which tells the deserializer the job's id."""

    def __init__(self, *args: Any, wake: asyncio.Event, **kwargs: Any) -> None:
        super().__init__(
            *args, job_serializer=queue.dump_record, job_deserializer=_load_job, **kwargs
        )
        self._wake = wake
        self._backstop_s = self.poll_delay_s
        self.poll_delay_s = 0  # arq's own sleep between polls: the wait below replaces it

    async def _poll_iteration(self) -> None:
        self._wake.clear()  # a wake-up arriving during this poll is kept for the next one
        await super()._poll_iteration()
        # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that
        # arrives as the wait ends (CPython #86296), and the worker would never stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._backstop_s):
                await self._wake.wait()

    async def run_job(self, job_id: str, score: int) -> None:
        _arq_job_id.set(job_id)  # run_job is a task of its own: this stays with this job
        with log_context(job_id=job_id):
            await super().run_job(job_id, score)

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._wake.set()  # a slot is free: look for the next job now

    async def consume(self) -> None:
        """Take and run jobs until cancelled or Redis goes away (its error is raised)."""
        await self.async_run()

    def stop_taking_jobs(self) -> None:
        """Draining: run what it has, take nothing more."""
        self.allow_pick_jobs = False

    def running(self) -> list[asyncio.Task[Any]]:
        """The tasks of the deliveries it is running."""
        return [task for task in self.tasks.values() if not task.done()]

    def stop(self) -> None:
        """Stop consuming (its running deliveries' tasks are left to end)."""
        if self.main_task is not None:
            self.main_task.cancel()


def consumer_for(
    redis: queue.Redis,
    wake: asyncio.Event,
    handle: Callable[[str], Awaitable[queue.Handled]],
    *,
    max_jobs: int,
    job_timeout_s: float,
) -> PromptWorker:
    """The worker's consumer: `handle` (the runner's `run`) takes each job id delivered, up
    to `max_jobs` at once."""
    return PromptWorker(
        wake=wake,
        functions=[job_function(handle)],
        redis_pool=redis,
        queue_name=queue.QUEUE_NAME,
        max_jobs=max_jobs,
        job_timeout=job_timeout_s,
        keep_result=0,
        poll_delay=BACKSTOP_POLL_S,  # wake-ups start jobs at once; this is the backstop
        handle_signals=False,
        health_check_interval=30,
        log_results=False,
    )


async def listen(redis: ArqRedis, wake: asyncio.Event, cancel: Callable[[str], None]) -> None:
    """Follow the queue's wake-ups (setting `wake`) and cancel requests (calling `cancel`
    with the job's id) until cancelled. Redis going away ends it with that error, for the
    caller to retry."""
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(queue.WAKE_CHANNEL, queue.CANCEL_CHANNEL)
        wake.set()  # anything queued while this was not subscribed
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            if message["channel"] == queue.WAKE_CHANNEL.encode():
                wake.set()
            else:
                cancel(message["data"].decode())
