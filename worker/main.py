"""The worker process: its consumer (worker/consumer.py, arq's worker) takes job ids off
the queue in Redis, the runner runs their crews.

Around arq it adds what a bare arq worker lacks: it survives Redis going away (a bare
worker dies when its connection drops, arq #435/#386), drains gracefully on SIGTERM
(finishes running crews up to `drain_timeout`, then hands the rest back without spending
an attempt, still heartbeating and honouring cancels meanwhile), and runs the recovery and
retention loops. Its long-lived tasks are supervised: should one end, the worker hands its
running jobs back at once and exits non-zero, to be restarted.
"""

import asyncio
import logging

import asyncpg

from schemas.health import ProcessReport
from schemas.jobs import MAX_TIMEOUT_S
from shared.domain import after_commit
from shared.domain.crews import CrewRegistry
from shared.runtime import fingerprints, llm_providers, metrics, queue
from shared.runtime.db import pool_for
from shared.runtime.model_limits import REFRESH_S, merged
from shared.runtime.periodic import every, skip_transient
from shared.runtime.queue import REDIS_UNAVAILABLE
from shared.runtime.role import Life
from shared.runtime.secret_box import SecretBox
from shared.runtime.settings import Settings
from shared.store import job_sweeps, jobs, model_limits, processes
from worker.bulk import run_bulk
from worker.checkpoints import CheckpointKeeper
from worker.consumer import PromptWorker, consumer_for, listen
from worker.crew import dirs as crewai_dirs
from worker.crew.pool import CrewPool
from worker.recovery import run_recovery, run_retention
from worker.runner import JobRunner, StopReason
from worker.scheduler import run_scheduler

log = logging.getLogger(__name__)


def crew_models(settings: Settings, registry: CrewRegistry) -> list[str]:
    """Every model the registered crews may use here (the offline model alone when no
    provider is configured: every agent then runs on it)."""
    default = settings.default_model()
    named = [default]
    for spec in registry.crews.values():
        named += spec.models(default)
    return list(dict.fromkeys(named))


class WorkerService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.life = Life(metrics.Role.WORKER, settings)
        self.worker_id = processes.new_id(settings.worker_id)
        self.stopping = self.life.stopping
        self.db: asyncpg.Pool | None = None
        self.redis: queue.Redis | None = None
        self.redis_ready = asyncio.Event()
        self.crews = CrewPool(
            settings.worker_concurrency,
            max_jobs=settings.child_max_jobs,
            max_rss_mb=settings.child_max_rss_mb,
        )
        self.runner: JobRunner | None = None
        self.consumer: PromptWorker | None = None
        self.wake = asyncio.Event()  # a job was queued, or a slot freed: poll the queue now

    def _consumer(self, redis: queue.Redis) -> PromptWorker:
        assert self.runner is not None
        return consumer_for(
            redis,
            self.wake,
            self.runner.run,
            max_jobs=self.settings.worker_concurrency,
            # crewq enforces each job's own timeout in the crew pool; this is a backstop.
            job_timeout_s=MAX_TIMEOUT_S
            + self.settings.timeout_grace
            + self.settings.drain_timeout
            + 60,
        )

    async def _consume(self) -> None:
        """Run the consumer, rebuilding it whenever Redis drops, until cancelled. The
        connection pool outlives each consumer: redis-py opens fresh connections once Redis
        is back."""
        delay = 0.5
        while True:
            try:
                if self.redis is None:
                    self.redis = await queue.connect(self.settings.require_redis_url)
                    self.redis_ready.set()
                self.consumer = self._consumer(self.redis)
                log.info("worker %s consuming %s", self.worker_id, queue.QUEUE_NAME)
                delay = 0.5
                await self.consumer.consume()
            except REDIS_UNAVAILABLE as exc:
                log.warning("redis unavailable (%s); reconnecting in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _listen(self) -> None:
        """Poll the queue the moment a job is queued, and stop a running crew the moment its job
        is cancelled (should a message be lost: the backstop poll, and the heartbeat within
        `heartbeat_interval`, notice anyway)."""
        assert self.runner is not None
        runner = self.runner

        def cancel(job_id: str) -> None:
            if runner.stop(job_id, StopReason.CANCEL):
                log.info("job %s: cancel requested, stopping its crew", job_id)

        async def follow() -> None:
            await listen(await self._connected_redis(), self.wake, cancel)

        await every(
            1,
            follow,
            on_transient=lambda exc: log.warning("queue listener lost redis (%s); retrying", exc),
        )

    async def _sample_backlog(self) -> None:
        """Keep the gauges of what waits current for scrapes (a gauge cannot ask Redis or
        Postgres itself): the queue's depth, and the due and parked jobs."""
        assert self.db is not None
        db, redis = self.db, await self._connected_redis()

        async def queue_depth() -> None:
            metrics.QUEUE_DEPTH.set(await queue.depth(redis))

        async def jobs_waiting() -> None:
            waiting = await job_sweeps.pending_summary(db)
            metrics.jobs_waiting(waiting.due, waiting.parked, waiting.oldest_due_s)

        async def sample() -> None:
            # Each gauge on its own: Redis away leaves the jobs counted, and the other way.
            await skip_transient(
                queue_depth, lambda exc: log.debug("queue depth not sampled: %s", exc)
            )
            await skip_transient(
                jobs_waiting, lambda exc: log.debug("waiting jobs not counted: %s", exc)
            )

        await every(
            self.settings.process_heartbeat_interval,
            sample,
            on_transient=lambda exc: None,  # `sample` skips its own
        )

    async def _model_limits(self) -> None:
        """Keep the runner's per-model limits current: CREWQ_MODEL_LIMITS with the rows of
        `crewq models set` over it. Postgres away: the last limits read stay in force."""
        assert self.db is not None and self.runner is not None
        db, runner = self.db, self.runner

        async def refresh() -> None:
            limits = merged(self.settings.model_limits, await model_limits.all_limits(db))
            if limits != runner.model_limits:
                log.info("model limits: %s", {m: lim.model_dump() for m, lim in limits.items()})
            runner.model_limits = limits

        await every(
            REFRESH_S,
            refresh,
            on_transient=lambda exc: log.warning("model limits not refreshed: %s", exc),
        )

    async def _recovery(self) -> None:
        assert self.db is not None
        await run_recovery(self.db, await self._connected_redis(), self.settings)

    async def _scheduler(self) -> None:
        assert self.db is not None
        await run_scheduler(self.db, await self._connected_redis(), self.settings)

    async def _bulk(self) -> None:
        assert self.db is not None
        await run_bulk(self.db, await self._connected_redis(), self.settings)

    async def _connected_redis(self) -> queue.Redis:
        """The pool `_consume` opens; it is kept for the worker's lifetime."""
        await self.redis_ready.wait()
        assert self.redis is not None
        return self.redis

    async def _after_commit(self, after: jobs.AfterCommit) -> None:
        """What an ended attempt leaves to do; should Redis be away, the reconciler queues
        the job later."""
        await after_commit.carry_out(after, await self._connected_redis())

    async def _drain(self, timeout: float) -> None:
        """Stop taking jobs, let running crews finish for `timeout`, then hand the rest back;
        heartbeats and cancels keep working meanwhile (they are separate tasks)."""
        assert self.runner is not None
        if self.consumer is not None:
            self.consumer.stop_taking_jobs()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        log.info("draining: %d running jobs, up to %.0f s", len(self.runner.active), timeout)
        while self.runner.active and loop.time() < deadline:
            await asyncio.sleep(0.1)
        for job_id in list(self.runner.active):
            log.info("job %s: handing it back", job_id)
            self.runner.stop(job_id, StopReason.SHUTDOWN)
        if self.consumer is not None:
            pending = self.consumer.running()
            if pending:
                await asyncio.wait(pending, timeout=15)

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or until a supervised task ends (exit 1)."""
        return await self.life.run(self)

    async def start_up(self, life: Life) -> None:
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
        keeper = CheckpointKeeper(
            self.db,
            SecretBox.from_setting(self.settings.checkpoint_key)
            if self.settings.checkpoint_key
            else None,
            self.settings.checkpoint_max_bytes,
        )
        if not keeper.enabled:
            log.warning(
                "CREWQ_CHECKPOINT_KEY is not set: crews run without checkpoints (a retried job"
                " starts from its first task) and a task asking for a person fails its job"
            )
        self.runner = JobRunner(
            self.settings,
            self.db,
            self.crews,
            registry,
            self.worker_id,
            self._after_commit,
            keeper,
        )
        log.info(
            "worker %s ready: %d crews, concurrency %d, model %s",
            self.worker_id,
            len(registry.crews),
            self.settings.worker_concurrency,
            self.settings.default_model(),
        )
        runner = self.runner
        life.register(
            self.db,
            self.worker_id,
            self.settings.worker_concurrency,
            ProcessReport(
                crews=sorted(registry.crews),
                crew_errors=crew_errors,
                default_model=self.settings.default_model(),
                llm_connections=llm_providers.connections(crew_models(self.settings, registry)),
                fingerprints=fingerprints.of_config(
                    self.settings, secret_key=False, checkpoint_key=True
                ),
            ),
            lambda: len(runner.active),
        )
        life.supervisor.start("consume", self._consume())
        life.supervisor.start("backlog gauges", self._sample_backlog())
        life.supervisor.start("queue listener", self._listen())
        life.supervisor.start("recovery", self._recovery())
        life.supervisor.start("model limits", self._model_limits())
        life.supervisor.start("scheduler", self._scheduler())
        life.supervisor.start("bulk operations", self._bulk())
        if self.settings.retention_days:
            life.supervisor.start("retention", run_retention(self.db, self.settings))

    async def wind_down(self, failed: bool) -> None:
        if failed:
            log.error("worker %s: handing its jobs back and exiting", self.worker_id)
            await self._drain(timeout=0)
        else:
            log.info("worker %s stopping", self.worker_id)
            await self._drain(self.settings.drain_timeout)
        if self.consumer is not None:
            self.consumer.stop()

    async def close(self) -> None:
        assert self.db is not None
        if self.redis is not None:
            try:
                await self.redis.close(close_connection_pool=True)
            except REDIS_UNAVAILABLE as exc:
                log.warning("closing redis: %s", exc)
        await self.crews.close()
        await self.db.close()
        log.info("worker %s stopped", self.worker_id)


async def serve(settings: Settings) -> int:
    # Before anything starts: crew processes that cannot import CrewAI would only die with
    # the forkserver's EOFError; say which folder is unwritable and what to set instead.
    problem = crewai_dirs.unwritable()
    if problem is not None:
        log.error("worker cannot start: %s", problem)
        return 78  # EX_CONFIG: a restart alone will not help
    service = WorkerService(settings)
    return await service.life.serve(service)
