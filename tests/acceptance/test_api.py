"""The API's front door over real HTTP: status codes and the error shape for bad input,
keys with scopes, expiry and revocation, sandbox keys, plans and quotas, batch reads,
the failed-request log, signing-secret rotation, allowlists, headers and the docs."""

import asyncio
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson
from standardwebhooks.webhooks import Webhook

from schemas.account import KeyMode, Plan
from tests.fakes import FakeLLM, Receiver
from tests.harness import Platform

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _error(body: Any, code: str) -> dict[str, Any]:
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, body
    assert error["request_id"].startswith("req_") or error["request_id"]
    return error


async def _raw(stack: Platform, head: bytes, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """Send bytes aiohttp's client would not (header values that are not UTF-8)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    writer.write(head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), orjson.loads(payload)


async def test_malformed_input_gets_a_4xx_in_the_error_shape(stack: Platform) -> None:
    bad_bodies = {
        "timeout as a string": {"crew": "echo", "inputs": {"message": "x"}, "timeout": "600"},
        "empty webhook_url": {"crew": "echo", "inputs": {"message": "x"}, "webhook_url": ""},
        "a huge integer": {"crew": "echo", "metadata": {"id": 2**60}},
        "101 metadata keys": {"crew": "echo", "metadata": {str(i): "v" for i in range(101)}},
        "a long metadata value": {"crew": "echo", "metadata": {"n": "x" * 1001}},
    }
    for what, body in bad_bodies.items():
        status, answer, _ = await stack.request("POST", "/v1/jobs", json=body)
        assert status == 400, (what, answer)
        details = _error(answer, "VALIDATION_ERROR")["details"]
        assert isinstance(details, dict) and all(isinstance(v, list) for v in details.values())
    # Nested hundreds deep, and numbers past 64 bits (orjson would read them as floats).
    for raw in (
        b'{"crew": "echo", "inputs": {"a": ' + b"[" * 600 + b"]" * 600 + b"}}",
        b'{"crew": "echo", "metadata": {"id": 123456789012345678901234567890}}',
    ):
        status, answer, _ = await stack.request(
            "POST", "/v1/jobs", data=raw, headers={"Content-Type": "application/json"}
        )
        assert status == 400, answer
    # Well formed, but cannot be done: 422.
    status, answer, _ = await stack.request("POST", "/v1/jobs", json={"crew": "nope"})
    assert status == 422 and _error(answer, "UNKNOWN_CREW")


async def test_bytes_that_are_not_utf8_in_headers_are_4xx_not_500(stack: Platform) -> None:
    job = await stack.submit("echo", {"message": "hi"})
    bad = b"\xff\xfe\xc3("
    key = stack.key.encode()
    cases = {
        "Authorization": (b"POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer " + bad + b"\r\n", 401),
        "X-API-Key": (b"GET /v1/crews HTTP/1.1\r\nX-API-Key: " + bad + b"\r\n", 401),
        "Idempotency-Key": (
            b"POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer "
            + key
            + b"\r\nContent-Type: application/json\r\nIdempotency-Key: "
            + bad
            + b"\r\n",
            400,
        ),
        "Last-Event-ID": (
            f"GET /v1/jobs/{job['id']}/events HTTP/1.1\r\n".encode()
            + b"Authorization: Bearer "
            + key
            + b"\r\nLast-Event-ID: "
            + bad
            + b"\r\n",
            400,
        ),
    }
    for header, (head, expected) in cases.items():
        status, answer = await _raw(stack, b"Host: x\r\n".join([head, b""]), b'{"crew": "echo"}')
        assert status == expected, (header, answer)
        assert set(answer["error"]) == {"code", "message", "request_id", "details"}


async def test_scopes_expiry_and_revocation(stack: Platform) -> None:
    reader, tenant_id, _ = await stack.new_tenant("scoped", ["jobs:read", "jobs:write"])
    job = await stack.submit("echo", {"message": "x"}, key=reader)
    status, body, headers = await stack.request("POST", f"/v1/jobs/{job['id']}/cancel", key=reader)
    assert status == 403 and _error(body, "INSUFFICIENT_SCOPE")["details"] == {
        "required_scope": "jobs:cancel"
    }
    assert 'error="insufficient_scope"' in headers["WWW-Authenticate"]
    assert 'scope="jobs:cancel"' in headers["WWW-Authenticate"]
    status, current, _ = await stack.request("GET", "/v1/account/api-keys/current", key=reader)
    assert status == 200 and current["scopes"] == ["jobs:read", "jobs:write"]
    assert current["tenant_id"] == tenant_id and current["plan"] == "unlimited"
    assert current["rate_limit"] == {"requests": None, "period": "second"}
    status, body, _ = await stack.request("GET", "/v1/account/api-keys", key=reader)
    assert status == 403 and body["error"]["details"]["required_scope"] == "admin"

    admin, _, _ = await stack.new_tenant("admin", ["admin"])
    status, made, headers = await stack.request(
        "POST",
        "/v1/account/api-keys",
        key=admin,
        json={"name": "ci", "scopes": ["jobs:read"], "expires_in_days": 90},
    )
    assert status == 201 and made["key"].startswith("crq_live_") and made["expires_at"]
    assert headers["Location"] == f"/v1/account/api-keys/{made['id']}"
    status, listed, _ = await stack.request("GET", "/v1/account/api-keys", key=admin)
    assert made["id"] in [k["id"] for k in listed["data"]]
    assert all("key" not in k for k in listed["data"])
    status, _, _ = await stack.request("GET", "/v1/crews", key=made["key"])
    assert status == 200
    # Another tenant's admin cannot revoke it.
    other_admin, _, _ = await stack.new_tenant("admin", ["admin"])
    status, body, _ = await stack.request(
        "DELETE", f"/v1/account/api-keys/{made['id']}", key=other_admin
    )
    assert status == 404 and _error(body, "API_KEY_NOT_FOUND")
    status, revoked, _ = await stack.request(
        "DELETE", f"/v1/account/api-keys/{made['id']}", key=admin
    )
    assert status == 200 and revoked["revoked_at"]
    status, body, headers = await stack.request("GET", "/v1/crews", key=made["key"])
    assert status == 401 and _error(body, "API_KEY_REVOKED") and headers["WWW-Authenticate"]
    # Expired.
    status, made, _ = await stack.request(
        "POST", "/v1/account/api-keys", key=admin, json={"scopes": ["jobs:read"]}
    )
    conn = await stack.db()
    try:
        await conn.execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 s' WHERE id = $1", made["id"]
        )
    finally:
        await conn.close()
    status, body, _ = await stack.request("GET", "/v1/crews", key=made["key"])
    assert status == 401 and _error(body, "API_KEY_EXPIRED")
    # Bad bodies to the key API are 400s naming the field.
    status, body, _ = await stack.request(
        "POST", "/v1/account/api-keys", key=admin, json={"scopes": ["root"]}
    )
    assert status == 400 and "scopes.0" in _error(body, "VALIDATION_ERROR")["details"]


async def test_keys_from_the_command_line(stack: Platform) -> None:
    tenant = f"cli-{uuid.uuid4().hex[:6]}"

    def crewq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "crewq", *args], env=stack.env, capture_output=True, text=True
        )

    made = crewq(
        "keys",
        "create",
        "--tenant",
        tenant,
        "--test",
        "--expires-in",
        "90d",
        "--scopes",
        "jobs:read,admin",
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("crq_test_")
    key_id = made.stderr.split()[0]
    listed = crewq("keys", "list", "--tenant", tenant)
    assert key_id in listed.stdout and key[:16] in listed.stdout and "test" in listed.stdout
    status, current, _ = await stack.request("GET", "/v1/account/api-keys/current", key=key)
    assert status == 200 and current["mode"] == "test" and current["livemode"] is False
    assert current["expires_at"] and current["plan"] == "unlimited"
    plan = crewq("tenants", "set", "--tenant", tenant, "--plan", "free", "--rate-limit", "50")
    assert plan.returncode == 0, plan.stderr
    assert "plan free" in plan.stdout and "requests a second: 50" in plan.stdout
    status, current, _ = await stack.request("GET", "/v1/account/api-keys/current", key=key)
    assert current["plan"] == "free" and current["rate_limit"]["requests"] == 50
    assert current["monthly_job_limit"] == 100
    assert crewq("keys", "revoke", key_id).returncode == 0
    status, _, _ = await stack.request("GET", "/v1/crews", key=key)
    assert status == 401
    bad = crewq("keys", "create", "--tenant", tenant, "--scopes", "root")
    assert bad.returncode != 0 and "unknown scopes: root" in bad.stderr


async def test_test_keys_are_a_sandbox(stack: Platform, llm: FakeLLM, receiver: Receiver) -> None:
    key, _, secret = await stack.new_tenant("sandbox", mode=KeyMode.TEST, plan=Plan.FREE)
    receiver.configure("sandbox", secrets=[secret])
    marker = f"sandbox-{uuid.uuid4().hex[:8]}"
    job = await stack.submit(
        "echo", {"message": marker}, key=key, webhook_url=receiver.url("sandbox")
    )
    assert job["livemode"] is False
    done = await stack.wait_for_status(job["id"], {"completed"}, key=key)
    assert done["result"]["offline"] is True and done["result"]["models"] == ["crewq/offline"]
    assert llm.requests_with(marker) == []  # no provider was called
    [hook] = await receiver.wait_for("sandbox", 1)
    event = orjson.loads(hook.body)
    assert event["livemode"] is False and event["data"]["livemode"] is False
    status, used, _ = await stack.request("GET", "/v1/account/usage", key=key)
    assert status == 200 and used["jobs_this_month"] == 0 and used["jobs_limit"] == 100


async def test_quota_usage_and_its_refusal(stack: Platform) -> None:
    key, _, _ = await stack.new_tenant("quota", plan=Plan.UNLIMITED)
    conn = await stack.db()
    try:
        await conn.execute(
            "UPDATE tenants SET plan = 'free', monthly_job_limit = 3"
            " WHERE id = (SELECT tenant_id FROM api_keys WHERE prefix = $1)",
            key[:16],
        )
    finally:
        await conn.close()
    answers = await asyncio.gather(
        *(
            stack.request(
                "POST", "/v1/jobs", key=key, json={"crew": "echo", "inputs": {"message": "q"}}
            )
            for _ in range(6)
        )
    )
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [202] * 3 + [422] * 3
    refused = next(body for status, body, _ in answers if status == 422)
    error = _error(refused, "QUOTA_EXCEEDED")
    assert "resets at" in error["message"] and error["details"]["limit"] == 3
    status, used, headers = await stack.request("GET", "/v1/account/usage", key=key)
    assert status == 200
    assert (used["jobs_this_month"], used["jobs_limit"], used["jobs_remaining"]) == (3, 3, 0)
    resets_at = datetime.fromisoformat(used["resets_at"])
    assert resets_at == datetime.fromisoformat(error["details"]["resets_at"])
    assert resets_at.day == 1 and resets_at > datetime.now(UTC)
    assert used["rate_limit"] == 10 and used["rate_limit_remaining"] == int(
        headers["X-RateLimit-Remaining"]
    )


async def test_batch_reads_filters_and_tenant_isolation(stack: Platform) -> None:
    key, _, _ = await stack.new_tenant("batch")
    other, _, _ = await stack.new_tenant("batch-other")
    a = await stack.submit("echo", {"message": "a"}, key=key, metadata={"team": "red"})
    b = await stack.submit("echo", {"message": "b"}, key=key, metadata={"team": "blue"})
    foreign = await stack.submit("echo", {"message": "c"}, key=other, metadata={"team": "red"})
    status, found, _ = await stack.request(
        "POST", "/v1/jobs/batch", key=key, json={"ids": [b["id"], foreign["id"], a["id"]]}
    )
    assert status == 200 and [j["id"] for j in found["data"]] == [b["id"], a["id"]]
    status, body, _ = await stack.request(
        "POST", "/v1/jobs/batch", key=key, json={"ids": [f"job_{i}" for i in range(101)]}
    )
    assert status == 400 and "ids" in _error(body, "VALIDATION_ERROR")["details"]
    status, red, _ = await stack.request("GET", "/v1/jobs?metadata[team]=red", key=key)
    assert status == 200 and [j["id"] for j in red["data"]] == [a["id"]]
    after = quote(a["created_at"])
    status, later, _ = await stack.request("GET", f"/v1/jobs?created_after={after}", key=key)
    assert status == 200 and [j["id"] for j in later["data"]] == [b["id"]]
    status, body, _ = await stack.request("GET", "/v1/jobs?created_after=yesterday", key=key)
    assert status == 400 and "created_after" in body["error"]["details"]
    # Every route that takes an id answers 404 for another tenant's.
    hook_status, hook, _ = await stack.request(
        "POST", "/v1/webhooks", key=other, json={"url": "http://127.0.0.1:9/x"}
    )
    assert hook_status == 201
    conn = await stack.db()
    try:
        delivery_id = await conn.fetchval(
            "SELECT id FROM webhook_deliveries WHERE tenant_id = (SELECT tenant_id FROM jobs"
            " WHERE id = $1) LIMIT 1",
            foreign["id"],
        )
    finally:
        await conn.close()
    job_id, hook_id = foreign["id"], hook["id"]
    for method, path in (
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/deliveries"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("POST", f"/v1/jobs/{job_id}/retry"),
        ("GET", f"/v1/webhooks/{hook_id}"),
        ("DELETE", f"/v1/webhooks/{hook_id}"),
        ("POST", f"/v1/webhooks/{hook_id}/rotate-secret"),
        ("POST", f"/v1/webhooks/{hook_id}/test"),
        ("GET", f"/v1/webhooks/{hook_id}/deliveries"),
        ("GET", f"/v1/deliveries/{delivery_id or 'whd_none'}"),
        ("POST", f"/v1/deliveries/{delivery_id or 'whd_none'}/retry"),
    ):
        status, body, _ = await stack.request(method, path, key=key)
        assert status == 404, (method, path, body)


async def test_a_customer_finds_its_failed_requests(stack: Platform) -> None:
    key, _, _ = await stack.new_tenant("logs")
    status, body, _ = await stack.request("POST", "/v1/jobs", key=key, json={"crew": 7})
    assert status == 400
    request_id = body["error"]["request_id"]
    entries: list[dict[str, Any]] = []
    for _ in range(50):  # written in batches, a moment later
        status, log, _ = await stack.request(
            "GET", "/v1/account/logs?filter=error&limit=100", key=key
        )
        assert status == 200
        entries = log["data"]
        if entries:
            break
        await asyncio.sleep(0.1)
    [entry] = entries
    assert entry["request_id"] == request_id and entry["status"] == 400
    assert (entry["method"], entry["path"], entry["code"]) == (
        "POST",
        "/v1/jobs",
        "VALIDATION_ERROR",
    )
    status, body, _ = await stack.request("GET", "/v1/account/logs?filter=all", key=key)
    assert status == 400 and "filter" in body["error"]["details"]


async def test_read_only_keys_see_no_receivers(stack: Platform, receiver: Receiver) -> None:
    key, _, _ = await stack.new_tenant("receivers")
    reader = (
        await stack.request("POST", "/v1/account/api-keys", key=key, json={"scopes": ["jobs:read"]})
    )[1]["key"]
    receiver.configure("private", body=b"internal detail")
    status, _, _ = await stack.request(
        "POST",
        "/v1/webhooks",
        key=key,
        json={"url": receiver.url("private"), "events": ["job.completed"]},
    )
    assert status == 201
    job = await stack.submit("echo", {"message": "r"}, key=key)
    await receiver.wait_for("private", 1)
    for _ in range(50):
        _, full, _ = await stack.request("GET", f"/v1/jobs/{job['id']}/deliveries", key=key)
        if full["data"] and full["data"][0]["attempts"]:
            break
        await asyncio.sleep(0.1)
    assert full["data"][0]["url"] == receiver.url("private")
    assert full["data"][0]["attempts"][0]["response_body"] == "internal detail"
    _, seen, _ = await stack.request("GET", f"/v1/jobs/{job['id']}/deliveries", key=reader)
    assert seen["data"][0]["url"] is None
    assert seen["data"][0]["attempts"][0]["response_body"] is None


async def test_the_signing_secret_rotates_with_a_grace(stack: Platform, receiver: Receiver) -> None:
    key, _, old = await stack.new_tenant("rotate")
    conn = await stack.db()
    try:
        stored = await conn.fetchval(
            "SELECT signing_secret FROM tenants WHERE id = (SELECT tenant_id FROM api_keys"
            " WHERE prefix = $1)",
            key[:16],
        )
    finally:
        await conn.close()
    assert old not in stored and not stored.startswith("whsec_")  # sealed at rest
    status, rotated, _ = await stack.request(
        "POST", "/v1/account/signing-secret/rotate", key=key, json={"grace_seconds": 600}
    )
    assert status == 200 and rotated["previous_secret_expires_at"]
    new = rotated["secret"]
    _, account, _ = await stack.request("GET", "/v1/account", key=key)
    assert account["webhook_signing_secret"] == new
    receiver.configure("rotated")
    await stack.submit("echo", {"message": "s"}, key=key, webhook_url=receiver.url("rotated"))
    [hook] = await receiver.wait_for("rotated", 1)
    assert len(hook.headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert Webhook(secret).verify(hook.body, hook.headers)["type"] == "job.completed"


async def test_headers_on_every_answer_and_the_docs(stack: Platform) -> None:
    for path, key in (("/v1/crews", None), ("/v1/nowhere", None), ("/v1/crews", "crq_bad")):
        status, _, headers = await stack.request("GET", path, key=key)
        for name, value in SECURITY_HEADERS.items():
            assert headers[name] == value, (path, name)
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["Server"] == "crewq"
        assert "Strict-Transport-Security" not in headers  # plain HTTP
        assert "Access-Control-Allow-Origin" not in headers  # CORS is off by default
    status, document, _ = await stack.request("GET", "/openapi.json", key="none")
    assert status == 200 and document["openapi"].startswith("3.1")
    assert {"/v1/jobs", "/v1/jobs/batch", "/v1/account/usage", "/v1/account/logs"} <= set(
        document["paths"]
    )
    submit = document["paths"]["/v1/jobs"]["post"]
    assert "QUOTA_EXCEEDED" in submit["responses"]["422"]["description"]
    assert "VALIDATION_ERROR" in submit["responses"]["400"]["description"]
    status, page, headers = await stack.request("GET", "/docs", key="none")
    assert status == 200 and "/docs/swagger-ui-bundle.js" in page and "https://" not in page
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, script, _ = await stack.request("GET", "/docs/swagger-ui-bundle.js", key="none")
    assert status == 200 and len(script) > 100_000


async def test_allowlists_proxies_and_cors(own_stack: Platform) -> None:
    await own_stack.start_api(
        CREWQ_TRUSTED_PROXIES="127.0.0.1/32",
        CREWQ_CORS_ORIGINS="https://app.example",
        CREWQ_AUTH_FAILURE_LIMIT="5",
    )
    conn = await own_stack.db()
    try:
        await conn.execute(
            "UPDATE tenants SET allowed_ips = '{10.0.0.0/8}' WHERE id = $1", own_stack.tenant_id
        )
    finally:
        await conn.close()
    status, body, _ = await own_stack.request("GET", "/v1/crews")
    assert status == 403 and _error(body, "IP_NOT_ALLOWED")
    via_proxy = {"X-Forwarded-For": "10.1.2.3", "X-Forwarded-Proto": "https"}
    status, _, headers = await own_stack.request("GET", "/v1/crews", headers=via_proxy)
    assert status == 200 and headers["Strict-Transport-Security"].startswith("max-age=")
    status, _, headers = await own_stack.request(
        "GET", "/v1/crews", headers={**via_proxy, "Origin": "https://app.example"}
    )
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "X-Request-Id" in headers["Access-Control-Expose-Headers"]
    status, _, headers = await own_stack.request(
        "OPTIONS",
        "/v1/jobs",
        key="none",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert status == 204 and "Authorization" in headers["Access-Control-Allow-Headers"]
    status, _, headers = await own_stack.request(
        "GET", "/v1/crews", headers={**via_proxy, "Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in headers
    # Unknown keys: after 5 from one address, refused before any look-up.
    guesses = [
        (await own_stack.request("GET", "/v1/crews", key=f"crq_live_guess{i}"))[0] for i in range(7)
    ]
    assert guesses == [401] * 5 + [429] * 2
