"""Crew execution you can trust: hard timeouts, real cancellation, retries, one outcome."""

import asyncio
import itertools
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime

import psutil
import pytest

from shared.runtime import queue
from tests.fakes import FakeLLM, Receiver
from tests.harness import Platform, Process, eventually


def _worker(stack: Platform) -> Process:
    return next(p for p in stack.processes if p.role == "worker")


async def _wait_running(stack: Platform, job_id: str, key: str | None = None) -> dict[str, object]:
    return await stack.wait_for_status(job_id, {"running"}, timeout=30, key=key)


def _alive(pids: list[int]) -> list[int]:
    return [
        p
        for p in pids
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]


async def test_timeout_kills_the_crew_process(
    stack: Platform, llm: FakeLLM, measure: Callable[[str, float], None]
) -> None:
    job = await stack.submit("echo", {"message": "[[sleep:30]] timeout-probe"}, timeout=2)
    await _wait_running(stack, job["id"])
    deadline_wait = time.monotonic()
    while not llm.requests_with("timeout-probe") and time.monotonic() - deadline_wait < 10:
        await asyncio.sleep(0.05)
    crew_pids = _worker(stack).crew_pids()
    assert crew_pids, "no crew process found under the worker's forkserver"

    job = await stack.wait_for_status(job["id"], {"failed", "completed"}, timeout=20)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "TIMEOUT"
    assert "2 s" in job["error"]["message"]
    started = job["attempts"][0]["started_at"]
    finished = job["finished_at"]
    overrun = (
        datetime.fromisoformat(finished) - datetime.fromisoformat(started)
    ).total_seconds() - 2
    measure("timeout: job ended after its deadline by", overrun)
    assert overrun < 5, f"the job ended {overrun:.1f} s after its deadline"

    requests_at_end = len(llm.requests_with("timeout-probe"))
    await asyncio.sleep(1.5)
    # The child that ran the crew was killed (the pool starts a fresh one in its place).
    assert len(_alive(crew_pids)) < len(crew_pids), "the crew process outlived its timeout"
    assert len(llm.requests_with("timeout-probe")) == requests_at_end, (
        "LLM called after the deadline"
    )
    assert await stack.job_events(job["id"]) == ["job.started", "job.failed"]


async def test_cancel_running_job_kills_it(
    stack: Platform, llm: FakeLLM, receiver: Receiver, measure: Callable[[str, float], None]
) -> None:
    receiver.configure("cancel", secrets=[stack.signing_secret])
    job = await stack.submit(
        "echo", {"message": "[[sleep:30]] cancel-probe"}, webhook_url=receiver.url("cancel")
    )
    await _wait_running(stack, job["id"])
    while not llm.requests_with("cancel-probe"):
        await asyncio.sleep(0.05)
    before = set(_worker(stack).crew_pids())

    asked = time.monotonic()
    status, body, _ = await stack.request("POST", f"/v1/jobs/{job['id']}/cancel")
    assert status == 202 and body["cancel_requested_at"]
    job = await stack.wait_for_status(job["id"], {"cancelled", "completed", "failed"}, timeout=10)
    took = time.monotonic() - asked
    measure("cancel: running job cancelled after", took)
    assert job["status"] == "cancelled"
    assert took < 5
    [hook] = await receiver.wait_for("cancel", 1)
    assert hook.event["type"] == "job.cancelled" and hook.verified
    after = set(_worker(stack).crew_pids())
    assert before - after, "the cancelled crew's process is still alive"

    status, body, _ = await stack.request("POST", f"/v1/jobs/{job['id']}/cancel")
    assert status == 409 and body["error"]["code"] == "JOB_ALREADY_FINISHED"


async def _capped_tenant(stack: Platform, prefix: str) -> tuple[str, str]:
    """A new tenant of the stack that may run one job at a time: (its key, its id)."""
    key, tenant_id, _ = await stack.new_tenant(prefix)
    conn = await stack.db()
    try:
        name = await conn.fetchval("SELECT name FROM tenants WHERE id = $1", tenant_id)
    finally:
        await conn.close()
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crewq", "tenants", "set", "--tenant", name,
        "--max-running-jobs", "1", env=stack.env, stdout=subprocess.PIPE,
    )  # fmt: skip
    stdout, _ = await cli.communicate()
    assert cli.returncode == 0 and "max running jobs: 1" in stdout.decode()
    return key, tenant_id


async def test_cancel_pending_job(stack: Platform) -> None:
    key, _ = await _capped_tenant(stack, "cancel-pending")
    blocker = await stack.submit("echo", {"message": "[[sleep:3]] blocker"}, key=key)
    job = await stack.submit("echo", {"message": "never runs"}, key=key)  # waits its turn
    status, body, _ = await stack.request("POST", f"/v1/jobs/{job['id']}/cancel", key=key)
    assert status == 200 and body["status"] == "cancelled"
    await stack.wait_for_status(blocker["id"], {"completed"}, key=key)  # its turn came
    await asyncio.sleep(0.5)
    job = await stack.job(job["id"], key=key)
    assert job["status"] == "cancelled" and job["attempt"] == 0, "a cancelled job must never start"
    assert job["attempts"] == [] and await stack.job_events(job["id"]) == ["job.cancelled"]


async def test_rate_limited_llm_is_retried_inside_the_job(stack: Platform, llm: FakeLLM) -> None:
    job = await stack.submit("echo", {"message": "[[status:429x2:ratelimited]]"})
    job = await stack.wait_for_status(job["id"], {"completed", "failed"}, timeout=60)
    assert job["status"] == "completed", job
    assert job["attempt"] == 1, "tenacity, not a whole-job retry, should absorb two 429s"
    assert len(llm.requests_with("ratelimited")) == 3
    times = [r.at for r in llm.requests_with("ratelimited")]
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(times)), "Retry-After: 1 not honoured"


@pytest.mark.slow
async def test_provider_down_retries_the_whole_job_then_fails(
    stack: Platform, llm: FakeLLM
) -> None:
    # 503 on every call: each attempt spends its in-job tries, then the job is retried
    # as a whole (max_retries=1), then it fails with LLM_UNAVAILABLE.
    job = await stack.submit("echo", {"message": "[[status:503x1000:providerdown]]"}, max_retries=1)
    job = await stack.wait_for_status(job["id"], {"completed", "failed"}, timeout=120)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "LLM_UNAVAILABLE"
    assert [a["outcome"] for a in job["attempts"]] == ["retrying", "failed"]
    assert await stack.job_events(job["id"]) == [
        "job.started",
        "job.retrying",
        "job.started",
        "job.failed",
    ]


async def test_retry_endpoint_starts_a_failed_job_again(stack: Platform) -> None:
    job = await stack.submit("boom", {"reason": "first"})
    await stack.wait_for_status(job["id"], {"failed"})
    status, body, _ = await stack.request("POST", f"/v1/jobs/{job['id']}/retry")
    assert status == 202 and body["status"] == "pending"
    job = await stack.wait_for_status(job["id"], {"failed"}, timeout=30)
    assert job["attempt"] == 2 and len(job["attempts"]) == 2
    completed = await stack.submit("echo", {"message": "done"})
    await stack.wait_for_status(completed["id"], {"completed"})
    status, body, _ = await stack.request("POST", f"/v1/jobs/{completed['id']}/retry")
    assert status == 409 and body["error"]["code"] == "JOB_NOT_RETRYABLE"


async def test_duplicate_queue_delivery_never_runs_a_job_twice(stack: Platform) -> None:
    job = await stack.submit("echo", {"message": "once only"})
    await stack.wait_for_status(job["id"], {"completed"})
    redis = await queue.connect(stack.redis_url)
    try:
        assert await queue.enqueue(redis, job["id"])  # arq delivers it again
        await asyncio.sleep(1.5)
    finally:
        await redis.aclose()
    again = await stack.job(job["id"])
    assert again["status"] == "completed" and again["attempt"] == 1
    assert again["result"] == (await stack.job(job["id"]))["result"]
    assert await stack.job_events(job["id"]) == ["job.started", "job.completed"]


async def test_tenant_cap_limits_running_jobs(stack: Platform) -> None:
    key, tenant_id = await _capped_tenant(stack, "capped")
    other_key, _, _ = await stack.new_tenant("other")  # the default cap of 10 applies
    capped = [
        await stack.submit("echo", {"message": f"[[sleep:1]] cap{i}"}, key=key) for i in range(4)
    ]
    free = await stack.submit("echo", {"message": "not starved"}, key=other_key)
    peak = 0
    conn = await stack.db()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE tenant_id = $1 AND status = 'running'",
                tenant_id,
            )
            peak = max(peak, running)
            statuses = await conn.fetch(
                "SELECT status FROM jobs WHERE id = ANY($1)", [j["id"] for j in capped]
            )
            if all(s["status"] == "completed" for s in statuses):
                break
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    assert peak == 1, f"{peak} jobs of a tenant capped at 1 ran at once"
    other = await stack.job(free["id"], key=other_key)
    assert other["status"] == "completed", "the other tenant was starved"
    # The capped jobs waited parked, off the queue, and were queued one by one as slots
    # freed: none was offered to the worker while its tenant was at its cap.
    worker = next(p for p in stack.processes if p.role == "worker")
    assert not any(f"job {j['id']} not started: parked" in worker.log() for j in capped), (
        "a capped job was offered before its slot came"
    )


@pytest.mark.slow
async def test_crew_processes_are_recycled_after_max_jobs(own_stack: Platform) -> None:
    await own_stack.start_api()
    worker = await own_stack.start_worker(CREWQ_WORKER_CONCURRENCY="1", CREWQ_CHILD_MAX_JOBS="2")
    [first] = worker.crew_pids()
    seen: set[int] = set()
    for i in range(4):
        job = await own_stack.submit("echo", {"message": f"[[sleep:0.3]] recycle {i}"})
        await own_stack.wait_for_status(job["id"], {"running"}, timeout=30)
        seen.update(worker.crew_pids())
        await own_stack.wait_for_status(job["id"], {"completed"}, timeout=30)
    # After its two jobs the first child got a successor; it served on only until that one
    # was warm, and the next job let it go.
    assert len(seen) >= 2
    job = await own_stack.submit("echo", {"message": "after the recycle"})
    await own_stack.wait_for_status(job["id"], {"completed"}, timeout=30)

    async def first_gone() -> bool:
        alive = worker.crew_pids()
        return first not in alive and len(alive) == 1

    await eventually(first_gone, what="the used-up crew process let go")
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE


async def test_reaper_ends_a_job_running_past_its_timeout(stack: Platform) -> None:
    # A job whose worker keeps heartbeating but never ends it (a wedged worker): the
    # reaper in any live worker fails it once timeout + grace has passed.
    conn = await stack.db()
    try:
        job_id = "job_wedged" + time.strftime("%H%M%S")
        await conn.execute(
            "INSERT INTO jobs (id, tenant_id, crew, inputs, status, timeout_s, max_retries,"
            " attempt, worker_id, started_at, last_activity_at)"
            " VALUES ($1, $2, 'echo', '{}', 'running', 1, 0, 1, 'wedged-worker',"
            " now() - interval '1 minute', now() + interval '1 hour')",
            job_id,
            stack.tenant_id,
        )
        await conn.execute(
            "INSERT INTO job_attempts (job_id, number, worker_id, started_at)"
            " VALUES ($1, 1, 'wedged-worker', now() - interval '1 minute')",
            job_id,
        )
    finally:
        await conn.close()
    job = await stack.wait_for_status(job_id, {"failed"}, timeout=15)
    assert job["error"]["code"] == "TIMEOUT"
    assert job["attempts"][0]["outcome"] == "timeout"
