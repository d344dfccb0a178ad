"""One attempt of one job: claim it in Postgres, run its crew in a child process, record
exactly one outcome.

Every state write is compare-and-set on (status, attempt), so a duplicate queue delivery, a
reaper that gave the job to another worker, or a cancel that won the race all make this
attempt's outcome a no-op instead of a second one. An attempt holds a lease, renewed by its
heartbeat; a crew whose lease cannot be renewed is stopped before the reaper may give its
job to another worker, so no job ever runs twice at once.
"""

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import asyncpg

from schemas.jobs import AttemptOutcome, ErrorCode, JobError, JobResult
from shared.domain.crews import CrewRegistry
from shared.domain.prices import Prices
from shared.runtime import metrics
from shared.runtime.db import is_connection_error, with_db_retry
from shared.runtime.logs import bind, log_context
from shared.runtime.model_limits import ModelLimit
from shared.runtime.queue import Done, Handled, Requeue
from shared.runtime.settings import OFFLINE_MODEL, Settings
from shared.runtime.tracing import span_from
from shared.store import job_attempts, jobs, usage
from shared.store.checkpoints import Checkpoint
from worker.checkpoints import CheckpointKeeper
from worker.crew.pool import Crashed, CrewPool, Outcome, Stopped, TimedOut
from worker.crew.protocol import CrewFailed, CrewFinished, InputNeeded, RunRequest
from worker.steps import StepRecorder

log = logging.getLogger(__name__)


class StopReason(StrEnum):
    CANCEL = "cancel"  # the client cancelled the job
    LOST = "lost"  # the attempt is no longer this worker's, or its lease could not be renewed
    SHUTDOWN = "shutdown"  # the worker hands the job back (draining, or a task of it failed)


@dataclass
class ActiveJob:
    claim: job_attempts.Claim
    claimed_at: float  # loop time just before the claim: when its lease began, at the latest
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reason: StopReason | None = None

    def request_stop(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason = reason
        self.stop.set()


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        db: asyncpg.Pool,
        crews: CrewPool,
        registry: CrewRegistry,
        worker_id: str,
        after_commit: Callable[[jobs.AfterCommit], Awaitable[None]],
        keeper: CheckpointKeeper,
    ) -> None:
        self.settings = settings
        self.db = db
        self.keeper = keeper
        self.prices = Prices(settings.model_prices)  # what each model call cost, for `usage`
        self.crews = crews
        self.registry = registry
        self.worker_id = worker_id
        # What an ended attempt leaves to do (count it, queue the job it unparked):
        # shared/domain/after_commit.py `carry_out`, with the worker's queue client.
        self.after_commit = after_commit
        self.active: dict[str, ActiveJob] = {}
        # The per-model limits in force, kept current by the worker's loop (worker/main.py).
        self.model_limits: dict[str, ModelLimit] = dict(settings.model_limits)

    def stop(self, job_id: str, reason: StopReason) -> bool:
        active = self.active.get(job_id)
        if active is None:
            return False
        active.request_stop(reason)
        return True

    async def run(self, job_id: str) -> Handled:
        """Run one delivery of the job; what the queue is to do with it next."""
        traceparent = await with_db_retry(lambda: jobs.traceparent_of(self.db, job_id))
        with (
            log_context(job_id=job_id),
            span_from(traceparent, "job.run", **{"crewq.job_id": job_id}),
        ):
            return await self._run(job_id)

    async def _run(self, job_id: str) -> Handled:
        async with self.crews.slots:
            claimed_at = asyncio.get_running_loop().time()
            started = await with_db_retry(
                lambda: job_attempts.start_attempt(
                    self.db, job_id, self.worker_id, self.settings.tenant_max_running_jobs
                )
            )
            if isinstance(started, job_attempts.NotStarted):
                log.info("job %s not started: %s", job_id, started.reason)
                if started.after is not None:
                    await self.after_commit(started.after)
                if started.retry_in is not None:
                    return Requeue(started.retry_in)
                return Done(started.reason)
            bind(tenant_id=started.tenant_id)
            metrics.job_started(started.crew, started.waited_s)
            with metrics.JOBS_RUNNING.track_inprogress():
                return await self._attempt(ActiveJob(started, claimed_at))

    async def _attempt(self, active: ActiveJob) -> Handled:
        claim = active.claim
        spec = self.registry.get(claim.crew)
        if spec is None:
            await self._end(
                claim,
                AttemptOutcome.FAILED,
                error=JobError(
                    code=ErrorCode.CREW_CONFIG_ERROR,
                    message=f"crew {claim.crew!r} is not registered on worker {self.worker_id}",
                ),
            )
            return Done("failed")

        self.active[claim.job_id] = active
        steps = StepRecorder(
            self.db, claim, self.keeper, self.prices, self.settings.job_max_output_bytes
        )
        resume = await with_db_retry(lambda: self.keeper.newest(claim))
        caps = await with_db_retry(
            lambda: usage.caps_left(self.db, claim.tenant_id, claim.job_id, claim.livemode)
        )
        heartbeat = asyncio.create_task(self._heartbeat(active), name=f"heartbeat {claim.job_id}")
        log.info("job %s attempt %d: running crew %s", claim.job_id, claim.attempt, claim.crew)
        try:
            outcome = await self.crews.run(
                RunRequest(
                    claim.job_id,
                    claim.tenant_id,
                    spec,
                    claim.inputs,
                    # A test key's sandbox job never reaches a provider, whatever its crew says.
                    self.settings.default_model() if claim.livemode else OFFLINE_MODEL,
                    self.settings.llm_retry_attempts,
                    self.settings.llm_retry_max_wait,
                    resume=resume.state if resume else None,
                    answer=claim.answer,
                    checkpoints=self.keeper.enabled,
                    budget=claim.budget,
                    spent=claim.usage,
                    caps=caps,
                    model_limits=self.model_limits,
                ),
                timeout=claim.timeout_s,
                stop=active.stop,
                on_step=steps.record,
            )
        finally:
            steps.close()
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat  # it never raises: what it cannot do, it turns into a stop
            self.active.pop(claim.job_id, None)
        return await self._record(active, outcome)

    async def _heartbeat(self, active: ActiveJob) -> None:
        """Renew the attempt's lease every `heartbeat_interval` until cancelled, and stop the
        crew when the job is cancelled or is no longer this attempt's. The reaper hands a job
        silent for `heartbeat_timeout` to another worker, so a lease that cannot be renewed
        stops the crew one interval before that: the attempt is lost, never run twice. A lost
        connection is retried until then; any other error stops the crew at once."""
        loop = asyncio.get_running_loop()
        interval = self.settings.heartbeat_interval
        lease = self.settings.heartbeat_timeout - interval
        renewed = active.claimed_at
        job_id = active.claim.job_id
        while True:
            await asyncio.sleep(min(interval, max(0.0, renewed + lease - loop.time())))
            sent = loop.time()
            left = renewed + lease - sent
            if left <= 0:
                log.error("job %s: lease not renewed for %.1f s; stopping its crew", job_id, lease)
                active.request_stop(StopReason.LOST)
                return
            try:
                async with asyncio.timeout(left):
                    ours, cancel = await job_attempts.heartbeat(self.db, active.claim)
            except Exception as exc:
                if is_connection_error(exc):
                    log.warning(
                        "job %s: heartbeat failed (%s); %.1f s of lease left", job_id, exc, left
                    )
                    continue
                log.error("job %s: heartbeat failed; stopping its crew", job_id, exc_info=exc)
                active.request_stop(StopReason.LOST)
                return
            renewed = sent
            if not ours:
                active.request_stop(StopReason.LOST)
            elif cancel:
                active.request_stop(StopReason.CANCEL)

    async def _end(
        self, claim: job_attempts.Claim, outcome: AttemptOutcome, **fields: Any
    ) -> jobs.Moved | None:
        bound = self.settings.job_max_output_bytes
        moved = await with_db_retry(
            lambda: job_attempts.end_attempt(
                self.db, claim, outcome, max_output_bytes=bound, **fields
            )
        )
        if moved is None:
            log.info(
                "job %s attempt %d: outcome discarded, job moved on", claim.job_id, claim.attempt
            )
        else:
            await self.after_commit(moved.after)
        return moved

    async def _complete(
        self, claim: job_attempts.Claim, result: JobResult, token_usage: dict[str, Any] | None
    ) -> str:
        try:
            await self._end(claim, AttemptOutcome.COMPLETED, result=result, token_usage=token_usage)
            return "completed"
        except Exception as exc:
            if is_connection_error(exc):
                raise
            # Left running, the job would be re-run after WORKER_LOST, and fail the same way.
            log.error("job %s: its result cannot be stored", claim.job_id, exc_info=exc)
            reason = f"{type(exc).__name__}: {exc}"
        error = JobError(
            code=ErrorCode.CREW_ERROR,
            message=f"the crew's result could not be stored: {reason}"[:2000],
        )
        await self._end(claim, AttemptOutcome.FAILED, error=error)
        return "failed"

    def _retry_delay(self, counted_attempt: int) -> float:
        base = self.settings.retry_base_delay * 2 ** (counted_attempt - 1)
        # Full jitter on the upper half, so retries of many jobs do not arrive in lockstep.
        return float(min(self.settings.retry_max_delay, base) * random.uniform(0.5, 1.0))

    async def _retry_or_fail(self, claim: job_attempts.Claim, error: JobError) -> Handled:
        if claim.retries_left <= 0:
            await self._end(claim, AttemptOutcome.FAILED, error=error)
            return Done("failed")
        delay = self._retry_delay(claim.counted_attempt)
        if await self._end(claim, AttemptOutcome.RETRYING, error=error, retry_in=delay) is None:
            return Done("discarded")
        log.info(
            "job %s attempt %d failed (%s); retry in %.1f s",
            claim.job_id,
            claim.attempt,
            error.code,
            delay,
        )
        return Requeue(delay)

    async def _pause(self, claim: job_attempts.Claim, needed: InputNeeded) -> Handled:
        """The crew waits for a person: keep its state, end the attempt in awaiting_input
        (its crew process and slot go to other jobs), and let the job wait."""
        state = Checkpoint(needed.tasks_done, needed.task, True, needed.state)
        await self.keeper.keep(claim, state)
        spec = self.registry.get(claim.crew)
        waits = claim.input_timeout_s or (spec and spec.input_timeout)
        default = claim.input_default or (spec and spec.input_default)
        asked = job_attempts.InputAsked(
            task=needed.task,
            task_index=needed.task_index,
            output=needed.output,
            prompt=needed.prompt,
            default_action=default or self.settings.job_input_default,
        )
        waits_s = float(waits or self.settings.job_input_timeout)
        bound = self.settings.job_max_output_bytes
        moved = await with_db_retry(
            lambda: job_attempts.pause(self.db, claim, asked, waits_s, bound)
        )
        if moved is None:
            return Done("discarded")
        await self.after_commit(moved.after)
        log.info(
            "job %s attempt %d: task %r waits for input (%.0f s, then %s)",
            claim.job_id,
            claim.attempt,
            needed.task,
            waits_s,
            asked.default_action,
        )
        return Done("awaiting_input")

    async def _record(self, active: ActiveJob, outcome: Outcome) -> Handled:
        claim = active.claim
        if active.reason is StopReason.CANCEL and not isinstance(outcome, CrewFinished):
            # Cancelled is final: a crew that failed or timed out while being cancelled is
            # not retried, and a draining worker does not hand it back.
            await self._end(claim, AttemptOutcome.CANCELLED)
            return Done("cancelled")
        match outcome:
            case CrewFinished(result=result, token_usage=token_usage):
                return Done(await self._complete(claim, result, token_usage))
            case InputNeeded():
                return await self._pause(claim, outcome)
            case CrewFailed(transient=True):
                error = JobError(code=outcome.code, message=outcome.message)
                return await self._retry_or_fail(claim, error)
            case CrewFailed():
                if outcome.traceback:
                    log.warning("job %s crew error:\n%s", claim.job_id, outcome.traceback)
                error = JobError(code=outcome.code, message=outcome.message)
                await self._end(claim, AttemptOutcome.FAILED, error=error)
                return Done("failed")
            case TimedOut():
                metrics.job_timed_out(claim.crew)
                error = JobError(
                    code=ErrorCode.TIMEOUT,
                    message=f"crew ran past its timeout of {claim.timeout_s} s and was stopped",
                )
                await self._end(claim, AttemptOutcome.FAILED, error=error)
                return Done("failed")
            case Crashed(message=message):
                return await self._retry_or_fail(
                    claim, JobError(code=ErrorCode.CREW_ERROR, message=message)
                )
            case Stopped() if active.reason is StopReason.SHUTDOWN:
                if await self._end(claim, AttemptOutcome.RELEASED) is not None:
                    return Requeue(0)  # another worker takes it from the queue now
                return Done("discarded")
            case Stopped():
                # The reaper moves the job on once the lease has run out.
                return Done("lost")
        raise AssertionError(f"unknown outcome {outcome!r}")
