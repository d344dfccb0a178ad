"""Faults and bad input, end to end with real processes: a role whose long-lived task breaks
exits non-zero after handing its work back; what a crew or a receiver sends is stored even
when Postgres could not hold it as sent; streams, tests and logs behave."""

import asyncio
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import redis.asyncio as aioredis

from shared.runtime import queue
from shared.runtime.db import create_pool
from shared.runtime.queue import QUEUE_NAME
from shared.store import job_submission
from tests.acceptance.test_webhooks import register, settled_deliveries, unique
from tests.fakes import FakeLLM, Receiver
from tests.harness import Platform, Process


async def _exit_code(process: Process, timeout: float = 40) -> int:
    return await asyncio.wait_for(asyncio.to_thread(process.popen.wait), timeout)


async def test_a_worker_whose_queue_breaks_hands_its_job_back_and_exits_nonzero(
    own_stack: Platform, llm: FakeLLM
) -> None:
    await own_stack.start_api()
    worker = await own_stack.start_worker()
    job = await own_stack.submit("echo", {"message": "[[sleep-first:30:qbreak]] queue breaks"})
    await own_stack.wait_for_status(job["id"], {"running"}, timeout=30)
    while not llm.requests_with("qbreak"):  # its crew is at work
        await asyncio.sleep(0.05)
    redis = aioredis.Redis.from_url(own_stack.redis_url)
    try:  # the queue's key holds something arq cannot read: not a lost connection
        await redis.delete(QUEUE_NAME)
        await redis.set(QUEUE_NAME, "not a sorted set")
        assert await _exit_code(worker) == 1
        assert "task 'consume' failed; stopping" in worker.log()
    finally:
        await redis.aclose()
    # Handed back, not lost: the next worker takes it (tests/chaos.py restarts workers).
    handed_back = await own_stack.job(job["id"])
    assert handed_back["status"] == "pending"
    assert [a["outcome"] for a in handed_back["attempts"]] == ["released"]


async def _revoke_and_drop_listener(platform: Platform, role: str) -> None:
    """The role may no longer log in; its LISTEN connection drops and cannot come back."""
    conn = await platform.db()
    try:
        await conn.execute(f"ALTER ROLE {role} NOLOGIN")
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE usename = $1 AND application_name LIKE '%-listen'",
            role,
        )
    finally:
        await conn.close()


async def test_a_dispatcher_whose_listener_cannot_come_back_exits_nonzero(
    own_stack: Platform,
) -> None:
    role, url = await own_stack.login_role()
    dispatcher = await own_stack.start_dispatcher(CREWQ_DATABASE_URL=url)
    await _revoke_and_drop_listener(own_stack, role)
    assert await _exit_code(dispatcher) == 1
    assert "task 'listener' failed; stopping" in dispatcher.log()


async def test_an_api_whose_listener_cannot_come_back_exits_nonzero(own_stack: Platform) -> None:
    role, url = await own_stack.login_role()
    api = await own_stack.start_api(CREWQ_DATABASE_URL=url)
    status, _, _ = await own_stack.request("GET", "/v1/jobs")
    assert status == 200
    await _revoke_and_drop_listener(own_stack, role)
    assert await _exit_code(api) == 1
    assert "task 'notification listener' failed; stopping" in api.log()


async def test_unclean_crew_output_is_stored_cleaned_not_run_again(stack: Platform) -> None:
    job = await stack.submit("echo", {"message": "[[unclean]] dirty"})
    done = await stack.wait_for_status(job["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed" and done["attempt"] == 1, done
    raw = done["result"]["raw"]
    assert "nul: lone:\ufffd end" in raw and "\x00" not in raw


async def test_a_receiver_answering_bytes_postgres_cannot_hold_is_sent_the_event_once(
    stack: Platform, receiver: Receiver
) -> None:
    key, _, _ = await stack.new_tenant("hooks-bytes")
    name = unique("bytes")
    hook = await register(stack, key, receiver.url(name), ["job.completed"])
    receiver.configure(name, body=b"ok\x00 \xff\xfe done", secrets=[hook["secret"]])
    await stack.submit("echo", {"message": "bytes"}, key=key)
    [delivery] = await settled_deliveries(stack, key, hook["id"], 1)
    assert delivery["status"] == "succeeded"
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] == 200 and attempt["response_body"] == "ok \ufffd\ufffd done"
    await asyncio.sleep(1)
    assert len(receiver.at(name)) == 1


async def test_webhook_urls_are_logged_without_their_query_strings(
    stack: Platform, receiver: Receiver
) -> None:
    key, _, _ = await stack.new_tenant("hooks-redacted")
    name = unique("redacted")
    secret_token = f"tok-{uuid.uuid4().hex}"
    hook = await register(stack, key, f"{receiver.url(name)}?token={secret_token}")
    receiver.configure(name, secrets=[hook["secret"]])
    await stack.submit("echo", {"message": "redacted"}, key=key)
    await settled_deliveries(stack, key, hook["id"], 3)
    dispatcher = next(p for p in stack.processes if p.role == "dispatcher")
    assert f"to {receiver.url(name)}?…: 200" in dispatcher.log()
    assert all(secret_token not in p.log() for p in stack.processes)


async def test_a_webhook_test_waits_on_a_notification_not_by_polling(
    own_stack: Platform, receiver: Receiver
) -> None:
    await own_stack.start_api()
    await own_stack.start_dispatcher()
    name = unique("listen")
    hook = await register(own_stack, own_stack.key, receiver.url(name))
    receiver.configure(name, sleep=1.5, secrets=[hook["secret"]])
    status, result, _ = await own_stack.request("POST", f"/v1/webhooks/{hook['id']}/test")
    assert status == 200 and result["succeeded"], result
    # Each look-up of a test's attempt is one scan of this index, which nothing else in this
    # database has scanned, and Postgres counts them (a backend may report its counts late,
    # so wait for them to come in; late counts only make the number smaller).
    scans = (
        "SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes"
        " WHERE indexrelname = 'delivery_attempts_delivery'"
    )
    conn = await own_stack.db()
    try:
        deadline = time.monotonic() + 15
        while (look_ups := await conn.fetchval(scans)) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    assert 1 <= look_ups <= 3, f"{look_ups} look-ups while the receiver took 1.5 s: polling"


async def test_a_jobs_deliveries_are_paged(stack: Platform, receiver: Receiver) -> None:
    key, _, _ = await stack.new_tenant("hooks-paged")
    name, own = unique("paged"), unique("paged-own")
    hook = await register(stack, key, receiver.url(name))
    receiver.configure(name, secrets=[hook["secret"]])
    job = await stack.submit("echo", {"message": "paged"}, key=key, webhook_url=receiver.url(own))
    await stack.wait_for_status(job["id"], {"completed"}, key=key)
    await receiver.wait_for(own, 1)
    seen: list[str] = []
    cursor = None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await stack.request(
            "GET", f"/v1/jobs/{job['id']}/deliveries{query}", key=key
        )
        assert status == 200 and len(page["data"]) <= 2
        seen += [d["id"] for d in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert len(seen) == 4 and seen == sorted(seen, reverse=True)  # 3 to the endpoint, 1 own


def _sse_headers(stack: Platform) -> dict[str, str]:
    """A key's headers asking for server-sent events (JSON is the default)."""
    return {**stack.headers(), "Accept": "text/event-stream"}


async def _sse_types(stack: Platform, job_id: str) -> list[str]:
    assert stack.http is not None
    types = []
    async with stack.http.get(f"/v1/jobs/{job_id}/events", headers=_sse_headers(stack)) as resp:
        assert resp.status == 200
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                types.append(line.removeprefix("event: "))
    return types


async def test_a_retried_jobs_stream_runs_to_its_new_outcome(stack: Platform) -> None:
    job = await stack.submit("boom", {"reason": "twice"}, max_retries=0)
    await stack.wait_for_status(job["id"], {"failed"})
    status, _, _ = await stack.request("POST", f"/v1/jobs/{job['id']}/retry")
    assert status == 202
    types = await asyncio.wait_for(_sse_types(stack, job["id"]), timeout=60)
    assert types == ["job.started", "job.failed", "job.retrying", "job.started", "job.failed"]


async def test_a_client_closing_its_stream_is_not_a_database_outage(stack: Platform) -> None:
    assert stack.http is not None
    job = await stack.submit("echo", {"message": "[[sleep:2]] watched"})
    async with stack.http.get(f"/v1/jobs/{job['id']}/events", headers=_sse_headers(stack)) as resp:
        await resp.content.readline()  # the stream has begun
    await stack.wait_for_status(job["id"], {"completed"})
    await asyncio.sleep(0.5)  # the stream met the closed connection when it wrote
    api = next(p for p in stack.processes if p.role == "api")
    assert "postgres unavailable" not in api.log()
    assert "unhandled error" not in api.log()


async def test_a_job_whose_queue_entry_was_lost_is_queued_again(stack: Platform) -> None:
    """Redis kept a pending job's key but lost its place in the queue (the API queued it a
    while ago): the reconciler must not take the key for the job being held."""
    pool = await create_pool(stack.database_url, role="test")
    redis = await queue.connect(stack.redis_url)
    try:
        inserted = await job_submission.insert(
            pool,
            job_submission.NewJob(
                stack.tenant_id, "echo", {"message": "entry lost"}, {}, None, 60, 0
            ),
            default_max_pending=10_000,
            default_cap=10,
        )
        assert isinstance(inserted, job_submission.Inserted) and not inserted.parked
        job_id = inserted.job.id
        await pool.execute(
            "UPDATE jobs SET created_at = now() - interval '1 minute' WHERE id = $1", job_id
        )
        await queue.enqueue(redis, job_id, datetime.now(UTC) + timedelta(hours=1))
        assert await redis.zrem(QUEUE_NAME, job_id) == 1
        assert await redis.exists(f"arq:job:{job_id}") == 1
    finally:
        await redis.aclose()
        await pool.close()
    done = await stack.wait_for_status(job_id, {"completed", "failed"}, timeout=30)
    assert done["status"] == "completed" and done["attempt"] == 1


async def test_tenant_bounds_on_pending_jobs_endpoints_and_streams(own_stack: Platform) -> None:
    await own_stack.start_api()  # no worker: jobs stay pending
    conn: asyncpg.Connection = await own_stack.db()
    try:
        name = await conn.fetchval("SELECT name FROM tenants WHERE id = $1", own_stack.tenant_id)
    finally:
        await conn.close()
    bounds = ["--max-pending-jobs", "2", "--max-webhook-endpoints", "1", "--max-event-streams", "1"]
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crewq", "tenants", "set", "--tenant", name, *bounds,
        env=own_stack.env, stdout=subprocess.PIPE,
    )  # fmt: skip
    out = (await cli.communicate())[0].decode()
    assert cli.returncode == 0
    assert "max pending jobs: 2" in out and "max event streams: 1" in out

    first = await own_stack.submit("echo", {"message": "1"})
    await own_stack.submit("echo", {"message": "2"})
    status, body, headers = await own_stack.request(
        "POST", "/v1/jobs", json={"crew": "echo", "inputs": {"message": "3"}}
    )
    assert status == 429 and body["error"]["code"] == "TOO_MANY_PENDING_JOBS"
    assert int(headers["Retry-After"]) > 0 and body["error"]["details"] == {"limit": 2}
    other, _, _ = await own_stack.new_tenant("unbounded")
    assert (await own_stack.submit("echo", {"message": "elsewhere"}, key=other))["id"]

    await register(own_stack, own_stack.key, "http://127.0.0.1:9/one")
    status, body, _ = await own_stack.request(
        "POST", "/v1/webhooks", json={"url": "http://127.0.0.1:9/two"}
    )
    assert status == 422 and body["error"]["code"] == "TOO_MANY_WEBHOOK_ENDPOINTS"

    assert own_stack.http is not None
    async with own_stack.http.get(
        f"/v1/jobs/{first['id']}/events", headers=_sse_headers(own_stack)
    ) as held:
        assert held.status == 200
        status, body, headers = await own_stack.request(
            "GET", f"/v1/jobs/{first['id']}/events", headers={"Accept": "text/event-stream"}
        )
        assert status == 429 and body["error"]["code"] == "TOO_MANY_STREAMS"
        assert headers["Retry-After"]
    # Closing the stream gives its slot back.
    deadline = time.monotonic() + 10
    while True:
        async with own_stack.http.get(
            f"/v1/jobs/{first['id']}/events", headers=_sse_headers(own_stack)
        ) as again:
            if again.status == 200 or time.monotonic() > deadline:
                break
        await asyncio.sleep(0.1)
    assert again.status == 200
