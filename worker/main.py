"""The worker process: arq pulls job ids from Redis, the runner runs their crews.

Around arq it adds what a bare arq worker lacks: it survives Redis going away (a bare
worker dies when its connection drops, arq #435/#386), drains gracefully on SIGTERM
(finishes running crews up to `drain_timeout`, then hands the rest back without spending
an attempt, still heartbeating and honouring cancels meanwhile), and runs the recovery and
retention loops. Its long-lived tasks are supervised: should one end, the worker hands its
running jobs back at once and exits non-zero, to be restarted.
"""

import asyncio
import logging
import signal
from typing import Any

import asyncpg
from arq.connections import ArqRedis
from arq.worker import func

from schemas.health import ProcessReport, ProcessRole
from schemas.jobs import MAX_TIMEOUT_S
from shared import fingerprints, jobs, llm_providers, metrics, processes, queue
from shared.crews import CrewRegistry
from shared.db import is_connection_error, pool_for
from shared.ops_server import Presence, ops_server
from shared.queue import REDIS_UNAVAILABLE
from shared.settings import Settings
from shared.supervisor import Supervisor
from worker import crewai_dirs
from worker.consumer import BACKSTOP_POLL_S, PromptWorker, listen
from worker.crew_pool import CrewPool
from worker.recovery import run_recovery, run_retention
from worker.runner import JobRunner, StopReason

log = logging.getLogger(__name__)


def crew_models(settings: Settings, registry: CrewRegistry) -> list[str]:
    """Every model the registered crews may use here (the offline model alone when no
    provider is configured: every agent then runs on it)."""
    default = settings.default_model()
    named = [default]
    for spec in registry.crews.values():
        named += spec.models(default)
    return list(dict.fromkeys(named))


async def _run_job(ctx: dict[str, Any], job_id: str) -> str:
    runner: JobRunner = ctx["runner"]
    return await runner.run(job_id)


class WorkerService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics_port: int | None = None  # where it serves /metrics and /health, if it does
        self.presence = Presence(ProcessRole.WORKER, settings.process_dead_after)
        self.worker_id = processes.new_id(settings.worker_id)
        self.stopping = asyncio.Event()
        self.supervisor = Supervisor()
        self.db: asyncpg.Pool | None = None
        self.redis: ArqRedis | None = None
        self.redis_ready = asyncio.Event()
        self.crews = CrewPool(
            settings.worker_concurrency,
            max_jobs=settings.child_max_jobs,
            max_rss_mb=settings.child_max_rss_mb,
        )
        self.runner: JobRunner | None = None
        self.arq: PromptWorker | None = None
        self.wake = asyncio.Event()  # a job was queued, or a slot freed: poll arq now

    def _arq_worker(self, redis: ArqRedis) -> PromptWorker:
        assert self.runner is not None
        return PromptWorker(
            wake=self.wake,
            functions=[func(_run_job, name=queue.RUN_JOB, keep_result=0, max_tries=10_000)],
            redis_pool=redis,
            queue_name=queue.QUEUE_NAME,
            ctx={"runner": self.runner},
            max_jobs=self.settings.worker_concurrency,
            # crewq enforces each job's own timeout in the crew pool; arq's is a backstop.
            job_timeout=MAX_TIMEOUT_S
            + self.settings.timeout_grace
            + self.settings.drain_timeout
            + 60,
            keep_result=0,
            poll_delay=BACKSTOP_POLL_S,  # wake-ups start jobs at once; this is the backstop
            handle_signals=False,
            health_check_interval=30,
            log_results=False,
        )

    async def _consume(self) -> None:
        """Run arq, rebuilding it whenever Redis drops, until cancelled. The connection pool
        outlives each arq Worker: redis-py opens fresh connections once Redis is back."""
        delay = 0.5
        while True:
            try:
                if self.redis is None:
                    self.redis = await queue.connect(self.settings.require_redis_url)
                    self.redis_ready.set()
                self.arq = self._arq_worker(self.redis)
                log.info("worker %s consuming %s", self.worker_id, queue.QUEUE_NAME)
                delay = 0.5
                await self.arq.async_run()
            except REDIS_UNAVAILABLE as exc:
                log.warning("redis unavailable (%s); reconnecting in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _listen(self) -> None:
        """Poll arq the moment a job is queued, and stop a running crew the moment its job
        is cancelled (should a message be lost: the backstop poll, and the heartbeat within
        `heartbeat_interval`, notice anyway)."""
        assert self.runner is not None
        runner = self.runner

        def cancel(job_id: str) -> None:
            if runner.stop(job_id, StopReason.CANCEL):
                log.info("job %s: cancel requested, stopping its crew", job_id)

        while True:
            try:
                await listen(await self._connected_redis(), self.wake, cancel)
            except REDIS_UNAVAILABLE as exc:
                log.warning("queue listener lost redis (%s); retrying", exc)
                await asyncio.sleep(1)

    async def _sample_backlog(self) -> None:
        """Keep the gauges of what waits current for scrapes (a gauge cannot ask Redis or
        Postgres itself): the queue's depth, and the due and parked jobs."""
        assert self.db is not None
        redis = await self._connected_redis()
        while True:
            try:
                metrics.QUEUE_DEPTH.set(await queue.depth(redis))
            except REDIS_UNAVAILABLE as exc:
                log.debug("queue depth not sampled: %s", exc)
            try:
                waiting = await jobs.pending_summary(self.db)
                metrics.jobs_waiting(waiting.due, waiting.parked, waiting.oldest_due_s)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                log.debug("waiting jobs not counted: %s", exc)
            await asyncio.sleep(self.settings.process_heartbeat_interval)

    async def _recovery(self) -> None:
        assert self.db is not None
        await run_recovery(self.db, await self._connected_redis(), self.settings)

    async def _connected_redis(self) -> ArqRedis:
        """The pool `_consume` opens; it is kept for the worker's lifetime."""
        await self.redis_ready.wait()
        assert self.redis is not None
        return self.redis

    async def _enqueue(self, job_id: str) -> None:
        """Queue a job now; if Redis is away, the reconciler queues it later."""
        try:
            await queue.enqueue(await self._connected_redis(), job_id)
        except REDIS_UNAVAILABLE as exc:
            log.warning("job %s not queued yet (%s); the reconciler will", job_id, exc)

    async def _drain(self, timeout: float) -> None:
        """Stop taking jobs, let running crews finish for `timeout`, then hand the rest back;
        heartbeats and cancels keep working meanwhile (they are separate tasks)."""
        assert self.runner is not None
        if self.arq is not None:
            self.arq.allow_pick_jobs = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        log.info("draining: %d running jobs, up to %.0f s", len(self.runner.active), timeout)
        while self.runner.active and loop.time() < deadline:
            await asyncio.sleep(0.1)
        for job_id in list(self.runner.active):
            log.info("job %s: handing it back", job_id)
            self.runner.stop(job_id, StopReason.SHUTDOWN)
        if self.arq is not None:
            pending = [t for t in self.arq.tasks.values() if not t.done()]
            if pending:
                await asyncio.wait(pending, timeout=15)

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or until a supervised task ends (exit 1)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        registry = CrewRegistry.load(self.settings.crew_dirs)
        for name, error in registry.errors.items():
            log.error("crew %s not loaded: %s", name, error)
        # A connection for each running job's moves and heartbeat, and the side tasks'.
        self.db = await pool_for(
            self.settings, "worker", default_size=self.settings.worker_concurrency * 2 + 4
        )
        await self.crews.start(llm_providers.crewai_modules(crew_models(self.settings, registry)))
        crew_errors = {**registry.errors, **await self.crews.check(list(registry.crews.values()))}
        for name, error in crew_errors.items():
            log.error("crew %s cannot be built: %s", name, error)
        self.runner = JobRunner(
            self.settings, self.db, self.crews, registry, self.worker_id, self._enqueue
        )
        log.info(
            "worker %s ready: %d crews, concurrency %d, model %s",
            self.worker_id,
            len(registry.crews),
            self.settings.worker_concurrency,
            self.settings.default_model(),
        )
        me = processes.Registration(
            self.worker_id,
            ProcessRole.WORKER,
            self.settings.worker_concurrency,
            ProcessReport(
                crews=sorted(registry.crews),
                crew_errors=crew_errors,
                default_model=self.settings.default_model(),
                llm_connections=llm_providers.connections(crew_models(self.settings, registry)),
                fingerprints=fingerprints.of_config(self.settings, secret_key=False),
                metrics_port=self.metrics_port,
            ),
        )
        runner = self.runner
        self.supervisor.start(
            "registration",
            processes.keep_registered(
                self.db,
                me,
                self.settings.process_heartbeat_interval,
                lambda: len(runner.active),
                self.presence,
            ),
        )
        self.supervisor.start("consume", self._consume())
        self.supervisor.start("backlog gauges", self._sample_backlog())
        self.supervisor.start("queue listener", self._listen())
        self.supervisor.start("recovery", self._recovery())
        if self.settings.retention_days:
            self.supervisor.start("retention", run_retention(self.db, self.settings))
        await self.supervisor.wait(self.stopping)
        if self.supervisor.failure:
            log.error("worker %s: handing its jobs back and exiting", self.worker_id)
            await self._drain(timeout=0)
        else:
            log.info("worker %s stopping", self.worker_id)
            await self._drain(self.settings.drain_timeout)
        if self.arq is not None and self.arq.main_task is not None:
            self.arq.main_task.cancel()
        await self.supervisor.stop()
        if self.redis is not None:
            try:
                await self.redis.close(close_connection_pool=True)
            except REDIS_UNAVAILABLE as exc:
                log.warning("closing redis: %s", exc)
        await self.crews.close()
        await self.db.close()
        log.info("worker %s stopped", self.worker_id)
        return self.supervisor.exit_code


async def serve(settings: Settings) -> int:
    # Before anything starts: crew processes that cannot import CrewAI would only die with
    # the forkserver's EOFError; say which folder is unwritable and what to set instead.
    problem = crewai_dirs.unwritable()
    if problem is not None:
        log.error("worker cannot start: %s", problem)
        return 78  # EX_CONFIG: a restart alone will not help
    metrics.identify(metrics.Role.WORKER)
    service = WorkerService(settings)
    async with ops_server(settings.metrics_host, settings.metrics_port, service.presence) as port:
        service.metrics_port = port
        return await service.serve()
