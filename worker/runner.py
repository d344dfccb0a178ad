"""One attempt of one job: claim it in Postgres, run its crew in a child process, record
exactly one outcome.

Every state write is compare-and-set on (status, attempt), so a duplicate arq delivery, a
reaper that gave the job to another worker, or a cancel that won the race all make this
attempt's outcome a no-op instead of a second one.
"""

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from arq.worker import Retry

from schemas.jobs import ErrorCode, JobError, JobResult, JobStatus
from shared import jobs
from shared.crews import CrewRegistry
from shared.db import is_connection_error, with_db_retry
from shared.settings import Settings
from shared.tracing import span_from
from worker.crew_pool import CrewPool, Outcome
from worker.crew_protocol import RunRequest

log = logging.getLogger(__name__)


class StopReason:
    CANCEL = "cancel"  # the client cancelled the job
    LOST = "lost"  # the job is no longer this attempt's (reaped, finished elsewhere)
    SHUTDOWN = "shutdown"  # the worker is draining and hands the job back


@dataclass
class ActiveJob:
    claim: jobs.Claim
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None

    def request_stop(self, reason: str) -> None:
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
    ) -> None:
        self.settings = settings
        self.db = db
        self.crews = crews
        self.registry = registry
        self.worker_id = worker_id
        self.active: dict[str, ActiveJob] = {}

    def stop(self, job_id: str, reason: str) -> bool:
        active = self.active.get(job_id)
        if active is None:
            return False
        active.request_stop(reason)
        return True

    async def run(self, job_id: str) -> str:
        traceparent = await with_db_retry(lambda: jobs.traceparent_of(self.db, job_id))
        with span_from(traceparent, "job.run", **{"crewq.job_id": job_id}):
            return await self._run(job_id)

    async def _run(self, job_id: str) -> str:
        async with self.crews.slots:
            started = await with_db_retry(
                lambda: jobs.start_attempt(
                    self.db, job_id, self.worker_id, self.settings.tenant_max_running_jobs
                )
            )
            if isinstance(started, jobs.NotStarted):
                log.info("job %s not started: %s", job_id, started.reason)
                if started.retry_in is not None:
                    raise Retry(defer=started.retry_in)
                return started.reason
            return await self._attempt(started)

    async def _attempt(self, claim: jobs.Claim) -> str:
        job_id = claim.job_id
        spec = self.registry.get(claim.crew)
        if spec is None:
            await self._finish(
                claim,
                JobStatus.FAILED,
                error=JobError(
                    code=ErrorCode.CREW_CONFIG_ERROR,
                    message=f"crew {claim.crew!r} is not registered on worker {self.worker_id}",
                ),
            )
            return "failed"

        active = ActiveJob(claim)
        self.active[job_id] = active
        heartbeat = asyncio.create_task(self._heartbeat(active))
        log.info("job %s attempt %d: running crew %s", job_id, claim.attempt, claim.crew)
        try:
            outcome = await self.crews.run(
                RunRequest(
                    job_id,
                    spec,
                    claim.inputs,
                    self.settings.default_model(),
                    self.settings.llm_retry_attempts,
                    self.settings.llm_retry_max_wait,
                ),
                timeout=claim.timeout_s,
                stop=active.stop,
                on_task=lambda task: self._task_completed(claim, task),
            )
        finally:
            heartbeat.cancel()
            self.active.pop(job_id, None)
        return await self._record(active, outcome)

    async def _task_completed(self, claim: jobs.Claim, task: dict[str, Any]) -> None:
        try:
            await jobs.task_completed(self.db, claim, task)
        except Exception as exc:
            # Progress events are best effort; the job's outcome is not.
            log.warning("job %s: task event not recorded: %s", claim.job_id, exc)

    async def _heartbeat(self, active: ActiveJob) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                ours, cancel = await jobs.heartbeat(self.db, active.claim)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                log.warning("job %s: heartbeat failed: %s", active.claim.job_id, exc)
                continue
            if not ours:
                active.request_stop(StopReason.LOST)
            elif cancel:
                active.request_stop(StopReason.CANCEL)

    async def _finish(self, claim: jobs.Claim, status: JobStatus, **fields: Any) -> bool:
        done = await with_db_retry(lambda: jobs.finish(self.db, claim, status, **fields))
        if not done:
            log.info(
                "job %s attempt %d: outcome discarded, job moved on", claim.job_id, claim.attempt
            )
        return done

    def _retry_delay(self, counted_attempt: int) -> float:
        base = self.settings.retry_base_delay * 2 ** (counted_attempt - 1)
        # Full jitter on the upper half, so retries of many jobs do not arrive in lockstep.
        return float(min(self.settings.retry_max_delay, base) * random.uniform(0.5, 1.0))

    async def _retry_or_fail(self, claim: jobs.Claim, error: JobError) -> str:
        if claim.retries_left > 0:
            delay = self._retry_delay(claim.counted_attempt)
            moved = await with_db_retry(
                lambda: jobs.retry_later(self.db, claim.job_id, claim.attempt, error, delay)
            )
            if moved:
                log.info(
                    "job %s attempt %d failed (%s); retry in %.1f s",
                    claim.job_id,
                    claim.attempt,
                    error.code,
                    delay,
                )
                raise Retry(defer=delay)
            return "discarded"
        await self._finish(claim, JobStatus.FAILED, error=error)
        return "failed"

    async def _record(self, active: ActiveJob, outcome: Outcome) -> str:
        claim = active.claim
        if active.reason == StopReason.CANCEL and outcome.kind != "done":
            # Cancelled is final: a crew that failed or timed out while being cancelled is
            # not retried, and a draining worker does not hand it back.
            await self._finish(claim, JobStatus.CANCELLED)
            return "cancelled"
        if outcome.kind == "done":
            await self._finish(
                claim,
                JobStatus.COMPLETED,
                result=JobResult(**outcome.payload["result"]),
                token_usage=outcome.payload["token_usage"],
            )
            return "completed"
        if outcome.kind == "error":
            error = JobError(code=outcome.payload["code"], message=outcome.payload["message"])
            if outcome.payload.get("transient"):
                return await self._retry_or_fail(claim, error)
            if "traceback" in outcome.payload:
                log.warning("job %s crew error:\n%s", claim.job_id, outcome.payload["traceback"])
            await self._finish(claim, JobStatus.FAILED, error=error)
            return "failed"
        if outcome.kind == "timeout":
            error = JobError(
                code=ErrorCode.TIMEOUT,
                message=f"crew ran past its timeout of {claim.timeout_s} s and was stopped",
            )
            await self._finish(claim, JobStatus.FAILED, error=error)
            return "failed"
        if outcome.kind == "crashed":
            error = JobError(code=ErrorCode.CREW_ERROR, message=outcome.payload["message"])
            return await self._retry_or_fail(claim, error)
        # stopped
        if active.reason == StopReason.SHUTDOWN:
            if await with_db_retry(lambda: jobs.release(self.db, claim)):
                raise Retry(defer=0)
            return "discarded"
        return "lost"
