"""When jobs run (issue 22): a delayed job starts no earlier than asked, an expired one
never starts, and a tenant's waiting jobs start by priority. Real processes, real Postgres."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.fakes import FakeLLM
from tests.harness import Platform

pytestmark = pytest.mark.slow


async def test_a_delayed_job_waits_scheduled_and_an_expired_one_never_starts(
    own_stack: Platform, llm: FakeLLM
) -> None:
    stack = own_stack
    await stack.start_api()
    await stack.start_worker()
    tag = f"delay{time.time_ns()}"
    asked = time.time()
    delayed = await stack.submit("echo", {"message": f"{tag} later"}, delay=4)
    assert delayed["status"] == "scheduled" and delayed["run_at"], delayed
    at = datetime.now(UTC) + timedelta(seconds=3)
    run_at = await stack.submit("echo", {"message": f"{tag} at"}, run_at=at.isoformat())
    assert run_at["status"] == "scheduled"
    # A ttl shorter than the wait for its tenant's one slot: it expires unstarted.
    key, tenant_id, _ = await stack.new_tenant("ttl")
    conn = await stack.db()
    try:
        await conn.execute("UPDATE tenants SET max_running_jobs = 1 WHERE id = $1", tenant_id)
    finally:
        await conn.close()
    busy = await stack.submit("echo", {"message": f"[[sleep:6]] {tag} busy"}, key=key)
    await stack.wait_for_status(busy["id"], {"running"}, timeout=30, key=key)
    lapsing = await stack.submit("echo", {"message": f"{tag} never"}, key=key, ttl=1)

    done = await stack.wait_for_status(delayed["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed"
    started = datetime.fromisoformat(done["started_at"]).timestamp()
    assert started >= asked + 4, started - asked
    done_at = await stack.wait_for_status(run_at["id"], {"completed", "failed"}, timeout=60)
    assert datetime.fromisoformat(done_at["started_at"]) >= at
    expired = await stack.wait_for_status(
        lapsing["id"], {"expired", "completed"}, timeout=60, key=key
    )
    assert expired["status"] == "expired" and expired["attempts"] == []
    assert not llm.requests_with(f"{tag} never")
    assert await stack.job_events(lapsing["id"]) == ["job.expired"]

    # Refused: both kinds of start time, and a start already gone.
    for fields, named in (
        ({"delay": 5, "run_at": at.isoformat()}, "run_at"),
        ({"run_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}, "run_at"),
        ({"priority": 5000}, "priority"),
    ):
        body = {"crew": "echo", "inputs": {"message": "x"}, **fields}
        status, refused, _ = await stack.request("POST", "/v1/jobs", json=body)
        assert status == 400 and named in refused["error"]["message"], refused


async def test_a_tenant_s_waiting_jobs_start_by_priority(own_stack: Platform, llm: FakeLLM) -> None:
    stack = own_stack
    key, tenant_id, _ = await stack.new_tenant("prio")
    conn = await stack.db()
    try:
        await conn.execute("UPDATE tenants SET max_running_jobs = 1 WHERE id = $1", tenant_id)
    finally:
        await conn.close()
    await stack.start_api()
    await stack.start_worker()
    tag = f"prio{time.time_ns()}"
    busy = await stack.submit("echo", {"message": f"[[sleep:3]] {tag} busy"}, key=key)
    await stack.wait_for_status(busy["id"], {"running"}, timeout=30, key=key)
    low = [await stack.submit("echo", {"message": f"{tag} low {i}"}, key=key) for i in range(5)]
    high = await stack.submit("echo", {"message": f"{tag} high"}, key=key, priority=10)
    for job in [*low, high]:
        await stack.wait_for_status(job["id"], {"completed"}, timeout=90, key=key)
    starts = {j["id"]: (await stack.job(j["id"], key=key))["started_at"] for j in [*low, high]}
    # The high one was submitted last, and started first when the slot came free.
    first = min(starts, key=lambda i: starts[i])
    assert first == high["id"], starts


async def test_two_jobs_of_one_concurrency_key_never_overlap(
    own_stack: Platform, llm: FakeLLM
) -> None:
    stack = own_stack
    await stack.start_api()
    await stack.start_worker(CREWQ_WORKER_CONCURRENCY="2")
    tag = f"key{time.time_ns()}"
    key = {"key": f"customer-{tag}", "limit": 1}
    first = await stack.submit("echo", {"message": f"[[sleep:2]] {tag} a"}, concurrency=key)
    second = await stack.submit("echo", {"message": f"[[sleep:2]] {tag} b"}, concurrency=key)
    done = [
        await stack.wait_for_status(j["id"], {"completed", "failed"}, timeout=60)
        for j in (first, second)
    ]
    assert [d["status"] for d in done] == ["completed", "completed"]
    assert done[0]["concurrency_key"] == f"customer-{tag}"
    spans = sorted(
        (datetime.fromisoformat(d["started_at"]), datetime.fromisoformat(d["finished_at"]))
        for d in done
    )
    assert spans[1][0] >= spans[0][1], spans  # the second started once the first ended
    # `reject` while the key holds its limit: 409, and no job.
    busy = await stack.submit("echo", {"message": f"[[sleep:3]] {tag} c"}, concurrency=key)
    body = {
        "crew": "echo",
        "inputs": {"message": f"{tag} d"},
        "concurrency": {**key, "strategy": "reject"},
    }
    status, refused, _ = await stack.request("POST", "/v1/jobs", json=body)
    assert status == 409 and refused["error"]["code"] == "CONCURRENCY_KEY_BUSY", refused
    # `cancel_running`: the key's running job is stopped, and the new one runs.
    await stack.wait_for_status(busy["id"], {"running"}, timeout=30)
    body["concurrency"] = {**key, "strategy": "cancel_running"}
    status, took_over, _ = await stack.request("POST", "/v1/jobs", json=body)
    assert status == 202, took_over
    cancelled = await stack.wait_for_status(busy["id"], {"cancelled", "completed"}, timeout=30)
    assert cancelled["status"] == "cancelled"
    assert (await stack.wait_for_status(took_over["id"], {"completed"}, timeout=60))["attempt"] == 1
