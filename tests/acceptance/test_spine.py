"""The spine end to end: submit over HTTP, run a real CrewAI crew on a worker against an
OpenAI-compatible server, keep state in Postgres, deliver a signed webhook."""

import asyncio
import hashlib
import hmac
import subprocess
import sys
import time

import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from crewq import verify_webhook
from schemas.account import Plan, Scope
from shared.store.keys import create_key
from tests.fakes import FakeLLM, Receiver
from tests.harness import Platform


async def test_job_runs_end_to_end_and_webhook_verifies(
    stack: Platform, llm: FakeLLM, receiver: Receiver
) -> None:
    receiver.configure("happy", secrets=[stack.signing_secret])
    status, created, headers = await stack.request(
        "POST",
        "/v1/jobs",
        json={
            "crew": "research",
            "inputs": {"topic": "queues"},
            "webhook_url": receiver.url("happy"),
            "timeout": 600,
            "max_retries": 2,
            "metadata": {"source": "website"},
        },
    )
    assert status == 202, created
    assert created["id"].startswith("job_") and created["status"] == "pending"
    assert headers["Location"] == f"/v1/jobs/{created['id']}"

    conn = await stack.db()
    try:  # in Postgres before the response was sent
        assert await conn.fetchval("SELECT count(*) FROM jobs WHERE id = $1", created["id"]) == 1
    finally:
        await conn.close()

    job = await stack.wait_for_status(created["id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    result = job["result"]
    assert [t["name"] for t in result["tasks"]] == ["research_task", "report_task"]
    assert all("fake-llm says" in t["raw"] for t in result["tasks"])
    assert "write a short report on queues" in result["raw"]
    assert result["offline"] is False and result["models"] == ["openai/gpt-4o-mini"]
    assert job["token_usage"]["total_tokens"] == 36  # two LLM calls of 18 tokens each
    assert job["worker_id"] and job["attempt"] == 1
    assert job["started_at"] and job["finished_at"] and job["last_activity_at"]
    assert job["metadata"] == {"source": "website"}
    assert llm.requests_with("Research queues"), "the crew never reached the LLM server"

    [hook] = await receiver.wait_for("happy", 1)
    assert hook.verified, "standardwebhooks rejected the signature"
    event = hook.event
    assert event["type"] == "job.completed" and event["id"].startswith("evt_")
    assert event["data"]["id"] == job["id"] and event["data"]["status"] == "completed"
    assert hook.headers["webhook-id"] == event["id"]
    expected = hmac.new(stack.signing_secret.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["X-Crewq-Signature"] == f"sha256={expected}"
    assert hook.headers["User-Agent"].startswith("crewq/")
    assert verify_webhook(stack.signing_secret, hook.headers, hook.body)["id"] == event["id"]  # type: ignore[index]
    with pytest.raises(WebhookVerificationError):
        Webhook(stack.signing_secret).verify(
            hook.body.replace(b"completed", b"failed"), hook.headers
        )


async def test_crew_that_raises_fails_with_crew_error(stack: Platform, receiver: Receiver) -> None:
    receiver.configure("boom", secrets=[stack.signing_secret])
    job = await stack.submit("boom", {"reason": "bad input"}, webhook_url=receiver.url("boom"))
    job = await stack.wait_for_status(job["id"], {"completed", "failed"})
    assert job["status"] == "failed"
    assert job["error"]["code"] == "CREW_ERROR"
    assert "the crew refused: bad input" in job["error"]["message"]
    assert job["attempt"] == 1, "a permanent failure must not be retried"
    [hook] = await receiver.wait_for("boom", 1)
    assert hook.verified and hook.event["type"] == "job.failed"
    assert hook.event["data"]["error"]["code"] == "CREW_ERROR"


async def test_receiver_failing_twice_gets_the_event_on_the_third_attempt(
    stack: Platform, receiver: Receiver
) -> None:
    receiver.configure("flaky", fail_first=2, secrets=[stack.signing_secret])
    job = await stack.submit("echo", {"message": "hello"}, webhook_url=receiver.url("flaky"))
    await stack.wait_for_status(job["id"], {"completed"})
    await receiver.wait_for("flaky", 1)
    calls = receiver.at("flaky")
    assert [c.status for c in calls] == [500, 500, 200]
    assert len({c.headers["webhook-id"] for c in calls}) == 1, (
        "webhook-id must be stable across retries"
    )
    assert all(c.verified for c in calls)
    status, listing, _ = await stack.request("GET", f"/v1/jobs/{job['id']}/deliveries")
    assert status == 200
    [delivery] = [d for d in listing["data"] if d["url"] == receiver.url("flaky")]
    assert delivery["status"] == "succeeded"
    assert [(a["number"], a["status_code"]) for a in delivery["attempts"]] == [
        (1, 500),
        (2, 500),
        (3, 200),
    ]
    assert delivery["attempts"][0]["response_body"] == "receiver flaky answered 500"


async def test_unknown_crew_is_refused_before_queueing(stack: Platform) -> None:
    conn = await stack.db()
    try:
        before = await conn.fetchval("SELECT count(*) FROM jobs")
        status, body, headers = await stack.request(
            "POST", "/v1/jobs", json={"crew": "nope", "inputs": {}}
        )
        after = await conn.fetchval("SELECT count(*) FROM jobs")
    finally:
        await conn.close()
    assert status == 422
    assert body["error"]["code"] == "UNKNOWN_CREW"
    assert "research" in body["error"]["details"]["available"]
    assert body["error"]["request_id"] == headers["X-Request-Id"]
    assert before == after


async def test_missing_inputs_are_refused(stack: Platform) -> None:
    status, body, _ = await stack.request(
        "POST", "/v1/jobs", json={"crew": "research", "inputs": {}}
    )
    assert status == 422
    assert body["error"]["code"] == "MISSING_INPUTS"
    assert body["error"]["details"]["missing"] == ["topic"]


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, "UNAUTHENTICATED"), ({"Authorization": "Bearer crq_wrong"}, "INVALID_API_KEY")],
)
async def test_requests_without_a_valid_key_get_401(
    stack: Platform, headers: dict[str, str], code: str
) -> None:
    assert stack.http is not None
    async with stack.http.post("/v1/jobs", json={"crew": "echo"}, headers=headers) as resp:
        body = await resp.json()
        assert resp.status == 401
        assert body["error"]["code"] == code
        assert body["error"]["request_id"] == resp.headers["X-Request-Id"]


async def test_x_api_key_header_and_scopes(stack: Platform) -> None:
    read_only, _, _ = await stack.new_tenant("reader", ["jobs:read"])
    assert stack.http is not None
    async with stack.http.get("/v1/jobs", headers={"X-API-Key": read_only}) as resp:
        assert resp.status == 200
    async with stack.http.post(
        "/v1/jobs",
        json={"crew": "echo", "inputs": {"message": "x"}},
        headers={"X-API-Key": read_only},
    ) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "INSUFFICIENT_SCOPE"


async def test_bad_bodies_get_clear_errors(stack: Platform) -> None:
    status, body, _ = await stack.request(
        "POST", "/v1/jobs", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and body["error"]["code"] == "INVALID_JSON"
    status, body, _ = await stack.request(
        "POST",
        "/v1/jobs",
        json={"crew": "echo", "inputs": {"message": "x"}, "timeout": 0, "colour": 1},
    )
    assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR"
    assert body["error"]["details"] == {
        "timeout": ["must be an integer between 1 and 7200"],
        "colour": ["is not a known field"],
    }
    status, body, _ = await stack.request("GET", "/v1/nowhere")
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"


async def test_list_jobs_newest_first_with_cursor_and_filters(stack: Platform) -> None:
    key, _, _ = await stack.new_tenant("lister")
    ids = [(await stack.submit("echo", {"message": f"m{i}"}, key=key))["id"] for i in range(5)]
    failing = await stack.submit("boom", {"reason": "r"}, key=key)
    await stack.wait_for_status(failing["id"], {"failed"}, key=key)

    seen: list[str] = []
    cursor = None
    while True:
        query = "/v1/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await stack.request("GET", query, key=key)
        assert status == 200
        seen.extend(j["id"] for j in page["data"])
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert seen == [failing["id"], *reversed(ids)]

    _, by_crew, _ = await stack.request("GET", "/v1/jobs?crew=boom", key=key)
    assert [j["id"] for j in by_crew["data"]] == [failing["id"]]
    _, by_status, _ = await stack.request("GET", "/v1/jobs?status=failed", key=key)
    assert [j["id"] for j in by_status["data"]] == [failing["id"]]
    status, body, _ = await stack.request("GET", "/v1/jobs?status=bogus", key=key)
    assert status == 400 and list(body["error"]["details"]) == ["status"]
    # Another tenant's job is invisible.
    status, body, _ = await stack.request("GET", f"/v1/jobs/{ids[0]}")
    assert status == 404 and body["error"]["code"] == "JOB_NOT_FOUND"


async def test_crews_are_listed_with_their_inputs(stack: Platform) -> None:
    status, body, _ = await stack.request("GET", "/v1/crews")
    assert status == 200
    crews = {c["name"]: c for c in body["data"]}
    assert crews["research"]["inputs"] == ["topic"]
    assert crews["research"]["agents"] == ["researcher", "writer"]
    assert crews["research"]["description"].startswith("Researches a topic")
    assert crews["haiku"]["kind"] == "callable" and crews["haiku"]["inputs"] == ["subject"]


async def test_callable_crew_runs(stack: Platform) -> None:
    job = await stack.submit("haiku", {"subject": "autumn rain"})
    job = await stack.wait_for_status(job["id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    assert "Write a haiku about autumn rain" in job["result"]["raw"]


async def test_idempotency_key_returns_the_same_job(stack: Platform) -> None:
    body = {"crew": "echo", "inputs": {"message": "once"}}
    headers = {"Idempotency-Key": "order-42"}
    s1, first, _ = await stack.request("POST", "/v1/jobs", json=body, headers=headers)
    s2, second, h2 = await stack.request("POST", "/v1/jobs", json=body, headers=headers)
    assert (s1, s2) == (202, 200)
    assert first["id"] == second["id"] and h2["Idempotent-Replayed"] == "true"
    s3, third, _ = await stack.request(
        "POST", "/v1/jobs", json={**body, "inputs": {"message": "other"}}, headers=headers
    )
    assert s3 == 409 and third["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


async def test_account_shows_the_signing_secret(stack: Platform) -> None:
    status, body, _ = await stack.request("GET", "/v1/account")
    assert status == 200
    assert body["webhook_signing_secret"] == stack.signing_secret
    assert body["tenant_id"] == stack.tenant_id


def test_keys_create_prints_only_the_key(stack: Platform) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "crewq",
            "keys",
            "create",
            "--tenant",
            "cli-made",
            "--scopes",
            "jobs:read",
        ],
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = out.stdout.strip()
    assert key.startswith("crq_") and "\n" not in key
    bad = subprocess.run(
        [sys.executable, "-m", "crewq", "keys", "create", "--tenant", "x", "--scopes", "root"],
        env=stack.env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "unknown scopes: root" in bad.stderr


async def test_rate_limit_per_tenant(stack: Platform) -> None:
    """The free plan's 10 requests a second, counted per tenant in a one-second window."""
    key, tenant_id, _ = await stack.new_tenant("throttled", plan=Plan.FREE)
    second_key = await _second_key(stack, tenant_id)
    if time.time() % 1 > 0.5:  # the window is the clock second: do not straddle two
        await asyncio.sleep(1 - time.time() % 1 + 0.01)
    answers = await asyncio.gather(
        *(stack.request("GET", "/v1/crews", key=k) for k in [key] * 7 + [second_key] * 7)
    )
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] * 10 + [429] * 4
    for status, body, headers in answers:
        assert headers["X-RateLimit-Limit"] == headers["RateLimit-Limit"] == "10"
        assert int(headers["X-RateLimit-Reset"]) > time.time() - 1
        if status == 429:
            assert body["error"]["code"] == "RATE_LIMITED" and headers["Retry-After"] == "1"
            assert headers["X-RateLimit-Remaining"] == "0"
    other, _, _ = await stack.new_tenant("unthrottled", plan=Plan.PRO)
    status, _, headers = await stack.request("GET", "/v1/crews", key=other)
    assert status == 200 and headers["X-RateLimit-Limit"] == "100"
    assert headers["X-RateLimit-Remaining"] == "99"


async def _second_key(stack: Platform, tenant_id: str) -> str:
    conn = await stack.db()
    try:
        created = await create_key(conn, tenant_id, [Scope.JOBS_READ])
    finally:
        await conn.close()
    return created.key


async def test_trace_context_reaches_the_webhook(stack: Platform, receiver: Receiver) -> None:
    receiver.configure("traced", secrets=[stack.signing_secret])
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    status, _, _ = await stack.request(
        "POST",
        "/v1/jobs",
        json={
            "crew": "echo",
            "inputs": {"message": "traced"},
            "webhook_url": receiver.url("traced"),
        },
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    assert status == 202
    [hook] = await receiver.wait_for("traced", 1)
    assert hook.headers["traceparent"].split("-")[1] == trace_id


async def test_nul_characters_are_refused_not_500(stack: Platform) -> None:
    status, body, _ = await stack.request(
        "POST", "/v1/jobs", json={"crew": "echo", "inputs": {"message": "a\u0000b"}}
    )
    assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR"
    assert body["error"]["details"] == {"inputs.message": ["must not contain NUL (\\u0000)"]}
    status, body, _ = await stack.request("GET", "/v1/jobs?crew=%00")
    assert status == 400 and body["error"]["code"] == "INVALID_REQUEST"


async def test_signing_secret_is_shown_only_to_webhook_managers(stack: Platform) -> None:
    reader, _, _ = await stack.new_tenant("no-secret", ["jobs:read", "account:read"])
    status, body, _ = await stack.request("GET", "/v1/account", key=reader)
    assert status == 200 and body["webhook_signing_secret"] is None
    status, body, headers = await stack.request("DELETE", "/v1/crews")
    assert status == 405 and body["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert "GET" in headers["Allow"]


async def _read_sse(
    stack: Platform, job_id: str, last_event_id: str | None = None
) -> list[dict[str, str]]:
    """Read a job's event stream to its end: one dict of fields per event."""
    assert stack.http is not None
    headers = {**stack.headers(), "Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    async with stack.http.get(f"/v1/jobs/{job_id}/events", headers=headers) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        return await stack.read_sse(resp)


async def test_job_events_stream_live_and_resume(stack: Platform) -> None:
    job = await stack.submit("echo", {"message": "[[sleep:1]] streamed"})
    live = await asyncio.wait_for(_read_sse(stack, job["id"]), timeout=60)
    assert [e["event"] for e in live] == [
        "job.started",
        "task.started",
        "llm.completed",
        "task.completed",
        "job.completed",
    ]
    envelope = orjson.loads(live[-1]["data"])
    assert envelope["id"] == live[-1]["id"] and envelope["data"]["status"] == "completed"
    resumed = await asyncio.wait_for(_read_sse(stack, job["id"], live[0]["id"]), timeout=10)
    assert [e["id"] for e in resumed] == [e["id"] for e in live[1:]]
