"""The queries behind /health/debug, the process registry and a running job's steps, against
real Postgres and Redis with no crewq process started."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest_asyncio
from aiohttp import web
from arq.connections import ArqRedis

from crewq.embedded import free_port
from schemas.events import EventType, LlmCompleted, TaskStarted
from schemas.health import (
    ComponentStatus,
    LlmConnection,
    ProcessReport,
    ProcessRole,
    ProcessState,
    Verdict,
)
from schemas.jobs import AttemptOutcome, JobResult, Progress
from shared.domain import diagnostics
from shared.domain.crews import CrewRegistry
from shared.domain.owners import Owner
from shared.runtime import queue
from shared.runtime.db import pending_migrations
from shared.runtime.fingerprints import fingerprint
from shared.runtime.settings import REPO_CREWS, Settings
from shared.store import deliveries, endpoints, job_attempts, job_sweeps, jobs, processes
from tests.fakes import start_site
from tests.integration.factories import endpoint, event_types, start, submit, tenant


def _registration(
    role: ProcessRole = ProcessRole.WORKER, pid_id: str = "w-1", **report: Any
) -> processes.Registration:
    return processes.Registration(pid_id, role, 2, ProcessReport.model_validate(report))


async def test_registered_processes_live_until_they_sign_off_or_fall_silent(
    db: asyncpg.Pool,
) -> None:
    await processes.register(db, _registration(crews=["echo"]))
    await processes.register(db, _registration(ProcessRole.DISPATCHER, "d-1"))
    alive = await processes.alive(db, dead_after_s=20)
    assert [(p.id, p.role) for p in alive] == [
        ("d-1", ProcessRole.DISPATCHER),
        ("w-1", ProcessRole.WORKER),
    ]
    assert alive[1].report.crews == ["echo"] and alive[1].concurrency == 2

    assert await processes.beat(db, "w-1", running=2)
    [worker] = [p for p in await processes.alive(db, 20) if p.id == "w-1"]
    assert worker.running == 2

    await processes.sign_off(db, "d-1")
    await db.execute(
        "UPDATE processes SET last_seen_at = now() - interval '1 minute' WHERE id = 'w-1'"
    )
    assert await processes.alive(db, dead_after_s=20) == []
    assert [p.id for p in await processes.alive(db, dead_after_s=120)] == ["w-1"]
    # Gone, and how: the dispatcher signed off, the worker fell silent (newest seen first).
    gone = await processes.gone(db, dead_after_s=20, within_s=3600)
    assert [(g.info.id, g.state) for g in gone] == [
        ("d-1", ProcessState.STOPPED),
        ("w-1", ProcessState.SILENT),
    ]
    assert [g.info.id for g in await processes.gone(db, dead_after_s=20, within_s=30)] == ["d-1"]
    assert [g.info.id for g in await processes.gone(db, dead_after_s=120, within_s=3600)] == ["d-1"]

    # A beat of a row the retention loop deleted says so: the process registers again.
    assert await processes.forget_gone(db, older_than_s=30) == 1
    assert not await processes.beat(db, "w-1", running=0)


async def test_registering_again_resets_a_restarted_process(db: asyncpg.Pool) -> None:
    await processes.register(db, _registration())
    await processes.beat(db, "w-1", running=3)
    await processes.sign_off(db, "w-1")
    await processes.register(db, _registration(crews=["research"]))
    [again] = await processes.alive(db, 20)
    assert again.running == 0 and again.report.crews == ["research"]


async def test_a_step_writes_progress_and_tokens_and_owes_its_event(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id)
    claim = await start(db, job.id)
    progress = Progress(completed_tasks=0, total_tasks=2, current_task="research")
    started = TaskStarted(
        job_id=job.id, attempt=1, task="research", agent="R", index=1, total_tasks=2
    )
    assert await job_attempts.record_step(
        db, claim, EventType.TASK_STARTED, started, progress=progress
    )
    usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    llm = LlmCompleted(
        job_id=job.id,
        attempt=1,
        task="research",
        agent="R",
        model="m",
        prompt_tokens=11,
        completion_tokens=7,
        duration_ms=5,
    )
    assert await job_attempts.record_step(
        db, claim, EventType.LLM_COMPLETED, llm, token_usage=usage
    )
    state = await jobs.get(db, Owner(tenant_id), job.id)
    assert state is not None
    assert state.progress == progress  # kept: the LLM step did not touch it
    assert state.token_usage == usage
    assert await event_types(db, job.id) == ["job.started", "task.started", "llm.completed"]

    # The attempt ends: a late step of it changes nothing and owes nothing.
    result = JobResult(raw="x", tasks=[], models=["m"], offline=False)
    await job_attempts.end_attempt(db, claim, AttemptOutcome.COMPLETED, result=result)
    assert not await job_attempts.record_step(
        db, claim, EventType.LLM_COMPLETED, llm, token_usage={}
    )
    assert (await event_types(db, job.id))[-1] == "job.completed"


async def test_a_new_attempt_starts_its_progress_afresh(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    job = await submit(db, tenant_id)
    claim = await start(db, job.id)
    progress = Progress(completed_tasks=1, total_tasks=2, current_task=None)
    await job_attempts.record_step(
        db,
        claim,
        EventType.TASK_STARTED,
        TaskStarted(job_id=job.id, attempt=1, task="a", agent=None, index=1, total_tasks=2),
        progress=progress,
        token_usage={"total_tokens": 5},
    )
    await job_attempts.end_attempt(db, claim, AttemptOutcome.RELEASED)
    await start(db, job.id)
    state = await jobs.get(db, Owner(tenant_id), job.id)
    assert state is not None and state.progress is None and state.token_usage is None


async def test_step_events_reach_only_endpoints_that_name_them(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db)
    every = await endpoint(db, tenant_id, "https://a.example/hook", ["*"])
    steps = await endpoint(db, tenant_id, "https://b.example/hook", ["llm.completed"])
    async with db.acquire() as conn:
        llm = await endpoints.subscribed(conn, Owner(tenant_id), EventType.LLM_COMPLETED)
        task = await endpoints.subscribed(conn, Owner(tenant_id), EventType.TASK_COMPLETED)
        done = await endpoints.subscribed(conn, Owner(tenant_id), EventType.JOB_COMPLETED)
    assert [t.endpoint_id for t in llm] == [steps]
    assert [t.endpoint_id for t in task] == [every]
    assert [t.endpoint_id for t in done] == [every]


async def test_pending_summary_and_delivery_backlog(db: asyncpg.Pool) -> None:
    tenant_id = await tenant(db, max_running_jobs=1)
    first = await submit(db, tenant_id)
    await submit(db, tenant_id)  # parked behind the first once that runs
    await db.execute(
        "UPDATE jobs SET created_at = now() - interval '30 seconds',"
        " run_after = now() - interval '30 seconds' WHERE id = $1",
        first.id,
    )
    summary = await job_sweeps.pending_summary(db)
    assert (summary.pending, summary.due, summary.parked) == (2, 1, 1)
    assert summary.oldest_due_s is not None and 29 < summary.oldest_due_s < 60

    await endpoint(db, tenant_id, "https://a.example/hook")
    await start(db, first.id)  # owes job.started to the endpoint
    backlog = await deliveries.backlog(db)
    assert (backlog.pending, backlog.due) == (1, 1)
    assert backlog.oldest_due_s is not None and backlog.oldest_due_s >= 0


async def test_a_migrated_database_has_no_pending_migrations(db: asyncpg.Pool) -> None:
    assert await pending_migrations(db) == []
    await db.execute("DELETE FROM schema_migrations WHERE version = 4")
    assert await pending_migrations(db) == ["0004_observability.sql"]


# --- the diagnostics, against this test's database and Redis ---


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    client = queue.client(redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with diagnostics.http_session() as session:
        yield session


def _probe(
    db: asyncpg.Pool, redis: ArqRedis, http: aiohttp.ClientSession, **overrides: Any
) -> diagnostics.Probe:
    settings = Settings.model_validate({"secret_key": "k1"})
    registry = CrewRegistry.load([REPO_CREWS])
    return diagnostics.Probe(db, redis, settings, registry, http, **overrides)


async def _register_healthy(db: asyncpg.Pool, **report: Any) -> None:
    crews = sorted(CrewRegistry.load([REPO_CREWS]).crews)
    prints = {"CREWQ_SECRET_KEY": fingerprint("k1")}
    await processes.register(db, _registration(crews=crews, fingerprints=prints, **report))
    await processes.register(db, _registration(ProcessRole.DISPATCHER, "d-1", fingerprints=prints))


async def test_no_process_alive_degrades_the_verdict(
    db: asyncpg.Pool, redis: ArqRedis, http: aiohttp.ClientSession
) -> None:
    report = await diagnostics.run(_probe(db, redis, http))
    assert report.status is Verdict.DEGRADED
    parts = report.components
    assert parts["database"].status is ComponentStatus.OK
    assert parts["database"].checks == ["select_1", "migrations_current", "pool"]
    assert parts["redis"].status is ComponentStatus.OK
    assert parts["workers"].status is ComponentStatus.FAIL
    assert "no worker alive" in (parts["workers"].error or "")
    assert parts["dispatcher"].status is ComponentStatus.FAIL


async def test_healthy_processes_make_an_ok_verdict(
    db: asyncpg.Pool, redis: ArqRedis, http: aiohttp.ClientSession
) -> None:
    await _register_healthy(db)
    await queue.enqueue(redis, "job_x")
    report = await diagnostics.run(_probe(db, redis, http))
    assert report.status is Verdict.OK, report.model_dump_json(indent=1)
    assert report.components["queue"].details == {
        "depth": 1,
        "pending_jobs": 0,
        "due_jobs": 0,
        "parked_jobs": 0,
        "oldest_due_job_age_s": None,
    }
    # No provider configured: the offline model runs everything.
    assert report.components["llm_connections"].status is ComponentStatus.SKIPPED


async def test_a_replica_with_another_secret_key_stands_out(
    db: asyncpg.Pool, redis: ArqRedis, http: aiohttp.ClientSession
) -> None:
    await _register_healthy(db)
    other = {"CREWQ_SECRET_KEY": fingerprint("k2")}
    await processes.register(db, _registration(pid_id="w-2", fingerprints=other))
    report = await diagnostics.run(_probe(db, redis, http))
    config = report.components["config"]
    assert report.status is Verdict.DEGRADED and config.status is ComponentStatus.FAIL
    assert fingerprint("k1") in (config.error or "") and fingerprint("k2") in (config.error or "")
    assert "worker w-2" in (config.error or "")


async def test_a_crew_a_worker_cannot_build_fails_the_crews_check(
    db: asyncpg.Pool, redis: ArqRedis, http: aiohttp.ClientSession
) -> None:
    await _register_healthy(db, crew_errors={"research": "ValidationError: bad agent"})
    report = await diagnostics.run(_probe(db, redis, http))
    assert report.components["crews"].status is ComponentStatus.FAIL
    assert "research on worker w-1: ValidationError" in (report.components["crews"].error or "")


async def _provider(status: int) -> tuple[web.AppRunner, str]:
    async def models(request: web.Request) -> web.Response:
        return web.json_response({"error": "no key"}, status=status)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner, port = await start_site(app)
    return runner, f"http://127.0.0.1:{port}/v1/models"


async def test_a_provider_answering_401_is_reachable_and_a_closed_port_is_not(
    db: asyncpg.Pool, redis: ArqRedis, http: aiohttp.ClientSession
) -> None:
    connection = LlmConnection(
        provider="openai", base_url=None, missing_credentials=[], models=["openai/gpt-4o-mini"]
    )
    await _register_healthy(db, llm_connections=[connection.model_dump()])
    runner, url = await _provider(401)
    try:
        report = await diagnostics.run(_probe(db, redis, http, public_url=lambda name: url))
    finally:
        await runner.cleanup()
    llm = report.components["llm_connections"]
    assert llm.status is ComponentStatus.OK, llm
    assert llm.details is not None
    assert llm.details["reachability"] == {"openai": {"reachable": True, "http_status": 401}}

    report = await diagnostics.run(
        _probe(db, redis, http, public_url=lambda name: url)
    )  # now closed
    llm = report.components["llm_connections"]
    assert llm.status is ComponentStatus.FAIL and "unreachable" in (llm.error or "")
    assert report.status is Verdict.DEGRADED


async def test_missing_credentials_fail_the_llm_check(
    db: asyncpg.Pool, redis: ArqRedis, http: aiohttp.ClientSession
) -> None:
    connection = LlmConnection(
        provider="anthropic",
        base_url="https://gateway.example",
        missing_credentials=["ANTHROPIC_API_KEY"],
        models=["anthropic/claude"],
    )
    await _register_healthy(db, llm_connections=[connection.model_dump()])
    report = await diagnostics.run(_probe(db, redis, http))
    llm = report.components["llm_connections"]
    assert llm.status is ComponentStatus.FAIL
    assert llm.error == "anthropic lacks ANTHROPIC_API_KEY"
    assert llm.details is not None and llm.details["credentials_only"] == ["anthropic"]


async def test_redis_down_fails_the_verdict_within_the_cap(
    db: asyncpg.Pool, http: aiohttp.ClientSession
) -> None:
    gone = queue.client(f"redis://127.0.0.1:{free_port()}/0")
    try:
        report = await asyncio.wait_for(diagnostics.run(_probe(db, gone, http)), 10)
    finally:
        await gone.aclose()
    assert report.status is Verdict.FAIL
    assert report.components["redis"].status is ComponentStatus.FAIL
    assert report.components["database"].status is ComponentStatus.OK
