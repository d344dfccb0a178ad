"""Test keys are a sandbox over real HTTP: a `crq_test_` key of a tenant sees and touches
only its test data. Every way the audit found to reach live data from a test key (issue
19: reading, listing, cancelling and retrying live jobs, replaying a live job by its
idempotency key, minting a live admin key, reading the live signing secret, reaching live
webhook endpoints and their deliveries) answers as if the live thing did not exist."""

import uuid
from typing import Any

from schemas.account import KeyMode
from tests.fakes import Receiver
from tests.harness import Platform


async def _live_and_test_keys(stack: Platform) -> tuple[str, str, str, str]:
    """A tenant's live admin key and test admin key, and its live and test secrets."""
    name = f"modes-{uuid.uuid4().hex[:6]}"
    live, tenant_id, live_secret = await stack.new_tenant("modes", name=name)
    test, same_tenant, test_secret = await stack.new_tenant("modes", name=name, mode=KeyMode.TEST)
    assert (
        same_tenant == tenant_id and live.startswith("crq_live_") and test.startswith("crq_test_")
    )
    return live, test, live_secret, test_secret


def _code(body: Any) -> str:
    return str(body["error"]["code"])


async def test_a_test_key_sees_no_live_job_anywhere(stack: Platform, receiver: Receiver) -> None:
    live, test, live_secret, _ = await _live_and_test_keys(stack)
    receiver.configure("modes-live", secrets=[live_secret])
    idempotency = {"Idempotency-Key": f"same-{uuid.uuid4().hex[:8]}"}
    status, job, _ = await stack.request(
        "POST",
        "/v1/jobs",
        key=live,
        json={
            "crew": "echo",
            "inputs": {"message": "live"},
            "webhook_url": receiver.url("modes-live"),
        },
        headers=idempotency,
    )
    assert status == 202 and job["livemode"], job
    done = await stack.wait_for_status(job["id"], {"completed"}, key=live)
    assert done["result"] is not None

    # Every route that takes a job id answers 404 to the test key, as for a job that
    # does not exist; reads, cancels and retries alike.
    job_id = job["id"]
    for method, path in [
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("GET", f"/v1/jobs/{job_id}/deliveries"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("POST", f"/v1/jobs/{job_id}/retry"),
    ]:
        status, body, _ = await stack.request(method, path, key=test)
        assert status == 404 and _code(body) == "JOB_NOT_FOUND", (method, path, body)
    status, body, _ = await stack.request(
        "GET", f"/v1/jobs/{job_id}/events", key=test, headers={"Accept": "text/event-stream"}
    )
    assert status == 404, body
    status, body, _ = await stack.request("GET", "/v1/jobs?limit=100", key=test)
    assert status == 200 and body["data"] == [], body
    status, body, _ = await stack.request(
        "POST", "/v1/jobs/batch", key=test, json={"ids": [job_id]}
    )
    assert status == 200 and body["data"] == [], body

    # The same idempotency key names another job in the sandbox: the live one never answers.
    status, sandboxed, _ = await stack.request(
        "POST",
        "/v1/jobs",
        key=test,
        json={"crew": "echo", "inputs": {"message": "test"}},
        headers=idempotency,
    )
    assert status == 202 and sandboxed["id"] != job_id and not sandboxed["livemode"], sandboxed
    # ...and the live key sees no test job either.
    status, body, _ = await stack.request("GET", f"/v1/jobs/{sandboxed['id']}", key=live)
    assert status == 404, body
    status, body, _ = await stack.request("GET", "/v1/jobs?limit=100", key=live)
    assert [j["id"] for j in body["data"]] == [job_id], body
    # The live job is untouched: still completed, one attempt.
    after = await stack.job(job_id, key=live)
    assert after["status"] == "completed" and len(after["attempts"]) == 1


async def test_a_test_key_reaches_no_live_secret_and_mints_no_live_key(stack: Platform) -> None:
    live, test, live_secret, test_secret = await _live_and_test_keys(stack)
    assert test_secret != live_secret

    status, account, _ = await stack.request("GET", "/v1/account", key=test)
    assert status == 200 and account["webhook_signing_secret"] == test_secret, account
    status, rotated, _ = await stack.request(
        "POST", "/v1/account/signing-secret/rotate", key=test, json={"grace_seconds": 0}
    )
    assert status == 200 and rotated["secret"] not in (live_secret, test_secret)
    status, account, _ = await stack.request("GET", "/v1/account", key=live)
    assert account["webhook_signing_secret"] == live_secret  # the test rotation left it alone

    # A live key asked for outright is refused; left unsaid, the mode is the caller's.
    status, body, _ = await stack.request(
        "POST", "/v1/account/api-keys", key=test, json={"scopes": ["admin"], "mode": "live"}
    )
    assert status == 403 and _code(body) == "LIVE_MODE_REQUIRED", body
    status, minted, _ = await stack.request(
        "POST", "/v1/account/api-keys", key=test, json={"scopes": ["admin"]}
    )
    assert status == 201 and minted["mode"] == "test" and minted["key"].startswith("crq_test_")

    # The live keys are neither listed nor revocable with a test key.
    status, listed, _ = await stack.request("GET", "/v1/account/api-keys?limit=100", key=test)
    assert status == 200 and {k["mode"] for k in listed["data"]} == {"test"}, listed
    status, current, _ = await stack.request("GET", "/v1/account/api-keys/current", key=live)
    status, body, _ = await stack.request(
        "DELETE", f"/v1/account/api-keys/{current['id']}", key=test
    )
    assert status == 404 and _code(body) == "API_KEY_NOT_FOUND", body
    status, _, _ = await stack.request("GET", "/v1/account", key=live)
    assert status == 200  # the live key still works


async def test_webhook_endpoints_belong_to_a_mode(stack: Platform, receiver: Receiver) -> None:
    live, test, _, _ = await _live_and_test_keys(stack)
    status, hook, _ = await stack.request(
        "POST",
        "/v1/webhooks",
        key=live,
        json={"url": receiver.url("modes-hook"), "events": ["*"]},
    )
    assert status == 201, hook
    hook_id = hook["id"]
    status, body, _ = await stack.request("GET", "/v1/webhooks", key=test)
    assert status == 200 and body["data"] == [], body
    for method, path in [
        ("GET", f"/v1/webhooks/{hook_id}"),
        ("PATCH", f"/v1/webhooks/{hook_id}"),
        ("DELETE", f"/v1/webhooks/{hook_id}"),
        ("POST", f"/v1/webhooks/{hook_id}/rotate-secret"),
        ("POST", f"/v1/webhooks/{hook_id}/test"),
        ("GET", f"/v1/webhooks/{hook_id}/deliveries"),
    ]:
        kwargs: dict[str, Any] = {"json": {"description": "x"}} if method == "PATCH" else {}
        status, body, _ = await stack.request(method, path, key=test, **kwargs)
        assert status == 404 and _code(body) == "WEBHOOK_NOT_FOUND", (method, path, body)
    # A test key's own endpoint is a test endpoint, invisible to the live key.
    status, mine, _ = await stack.request(
        "POST", "/v1/webhooks", key=test, json={"url": receiver.url("modes-t"), "events": ["*"]}
    )
    assert status == 201, mine
    status, body, _ = await stack.request("GET", "/v1/webhooks", key=live)
    assert [h["id"] for h in body["data"]] == [hook_id], body
    status, body, _ = await stack.request("GET", f"/v1/webhooks/{mine['id']}", key=live)
    assert status == 404, body


async def test_a_test_key_of_an_operator_tenant_does_not_open_the_debug_report(
    stack: Platform,
) -> None:
    test, _, _ = await stack.new_tenant("op", name=stack.tenant_name, mode=KeyMode.TEST)
    status, body, _ = await stack.request("GET", "/health/debug", key=test)
    assert status == 404, body
    status, report, _ = await stack.request("GET", "/health/debug")  # the live admin key
    assert status in (200, 503) and "components" in report, report
