"""The references `crewq bench` measures crewq against: bare arq, SAQ and Celery workers
running the same one-agent CrewAI crew, or a no-op, each in a process of its own and with
its recommended production settings (nothing tuned to lose).

    python -m benchmarks.references {arq,arq-tuned,saq,celery} {crew,noop} REDIS_URL [PG_URL]

The crew is plain CrewAI, as their users would write it: a new `LLM`, `Agent`, `Task` and
`Crew` per job, `kickoff` in a thread (arq, SAQ: their jobs are coroutines) or in the
prefork pool's process (Celery). Its model is the fake OpenAI-compatible server named by
OPENAI_BASE_URL. Each finished job pushes its finish time to the Redis list `bench:done`,
so every system is timed the same way, without its own result polling.
"""

import asyncio
import os
import sys
import time
from typing import Any, ClassVar

import redis

DONE_KEY = "bench:done"
QUEUE = "bench"
CONCURRENCY = 2  # crews at a time, as crewq's worker runs them


def kickoff(message: str) -> str:
    from crewai import LLM, Agent, Crew, Task

    llm = LLM(model="openai/gpt-4o-mini", max_retries=0)
    agent = Agent(role="Responder", goal="Answer", backstory="You answer briefly.", llm=llm)
    task = Task(description=f"Reply to: {message}", expected_output="One sentence.", agent=agent)
    return str(Crew(agents=[agent], tasks=[task]).kickoff())


def _mark_done(client: redis.Redis) -> None:
    client.rpush(DONE_KEY, repr(time.time()))


# --- arq -------------------------------------------------------------------------------


def run_arq(mode: str, redis_url: str, poll_delay: float) -> None:
    from arq.connections import RedisSettings
    from arq.worker import func, run_worker

    marker = redis.Redis.from_url(redis_url)

    async def crew(ctx: dict[str, Any], message: str) -> str:
        result = await asyncio.to_thread(kickoff, message)
        _mark_done(marker)
        return result

    async def noop(ctx: dict[str, Any]) -> None:
        _mark_done(marker)

    class Settings:
        functions: ClassVar = [func(crew, name="crew"), func(noop, name="noop")]
        redis_settings = RedisSettings.from_dsn(redis_url)
        queue_name = QUEUE
        max_jobs = CONCURRENCY if mode == "crew" else 10  # arq's default is 10
        poll_delay = 0.5
        keep_result = 0

    Settings.poll_delay = poll_delay
    run_worker(Settings)  # type: ignore[arg-type]


# --- SAQ -------------------------------------------------------------------------------


def run_saq(mode: str, redis_url: str) -> None:
    from saq import Queue, Worker

    marker = redis.Redis.from_url(redis_url)

    async def crew(ctx: dict[str, Any], *, message: str) -> str:
        result = await asyncio.to_thread(kickoff, message)
        _mark_done(marker)
        return result

    async def noop(ctx: dict[str, Any]) -> None:
        _mark_done(marker)

    async def main() -> None:
        queue = Queue.from_url(redis_url, name=QUEUE)
        worker: Any = Worker(
            queue,
            functions=[("crew", crew), ("noop", noop)],
            concurrency=CONCURRENCY if mode == "crew" else 10,  # SAQ's default is 10
        )
        await worker.start()

    asyncio.run(main())


# --- Celery ----------------------------------------------------------------------------


def celery_app(redis_url: str, pg_url: str) -> Any:
    from celery import Celery

    backend = "db+" + pg_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    app = Celery("bench", broker=redis_url, backend=backend)
    # Celery's own advice for long tasks: acknowledge late, take one at a time.
    app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_default_queue=QUEUE)
    marker = redis.Redis.from_url(redis_url)

    @app.task(name="crew")  # type: ignore[untyped-decorator]
    def crew(message: str) -> str:
        result = kickoff(message)
        _mark_done(marker)
        return result

    @app.task(name="noop")  # type: ignore[untyped-decorator]
    def noop() -> None:
        _mark_done(marker)

    return app


def run_celery(redis_url: str, pg_url: str) -> None:
    app = celery_app(redis_url, pg_url)
    app.worker_main(
        ["worker", "--pool=prefork", f"--concurrency={CONCURRENCY}", "--loglevel=WARNING"]
    )


if __name__ == "__main__":
    system, mode, redis_url = sys.argv[1:4]
    os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
    os.environ.setdefault("CREWAI_DISABLE_VERSION_CHECK", "true")
    # As a real worker imports its crew code at start: not in its first job (SAQ's sweeper
    # would abort a job whose worker is that busy importing, and no user would want that).
    import crewai  # noqa: F401

    if system == "arq":
        run_arq(mode, redis_url, 0.5)
    elif system == "arq-tuned":
        run_arq(mode, redis_url, 0.01)
    elif system == "saq":
        run_saq(mode, redis_url)
    elif system == "celery":
        run_celery(redis_url, sys.argv[4])
    else:
        sys.exit(f"unknown system {system!r}")
