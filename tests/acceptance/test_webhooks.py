"""Registered webhook endpoints end to end: the API, real jobs, the real dispatcher and
receivers on 127.0.0.1 that verify signatures with `standardwebhooks`."""

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.runtime.ids import new_signing_secret
from tests.fakes import Receiver
from tests.harness import Platform


def unique(prefix: str) -> str:
    """Receiver names are shared by the whole session; each test uses its own."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class QuickStopReceiver(Receiver):
    """A Receiver whose shutdown cancels requests still sleeping instead of waiting them out."""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/{name}", self._hook)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@pytest_asyncio.fixture
async def own_receiver() -> AsyncIterator[Receiver]:
    server = QuickStopReceiver()
    await server.start()
    yield server
    await server.stop()


async def register(
    platform: Platform, key: str, url: str, events: list[str] | None = None, **fields: Any
) -> dict[str, Any]:
    status, body, headers = await platform.request(
        "POST", "/v1/webhooks", key=key, json={"url": url, "events": events or ["*"], **fields}
    )
    assert status == 201, body
    assert headers["Location"] == f"/v1/webhooks/{body['id']}"
    return body  # type: ignore[no-any-return]


async def endpoint(platform: Platform, key: str, endpoint_id: str) -> dict[str, Any]:
    status, body, _ = await platform.request("GET", f"/v1/webhooks/{endpoint_id}", key=key)
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 20, what: str = "condition"
) -> Any:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def settled_deliveries(
    platform: Platform, key: str, endpoint_id: str, count: int, timeout: float = 20
) -> list[dict[str, Any]]:
    """The endpoint's deliveries (newest first) once there are `count`, none pending."""

    async def check() -> list[dict[str, Any]] | None:
        status, page, _ = await platform.request(
            "GET", f"/v1/webhooks/{endpoint_id}/deliveries?limit=100", key=key
        )
        assert status == 200, page
        done = [d for d in page["data"] if d["status"] != "pending"]
        settled: list[dict[str, Any]] = page["data"]
        return settled if len(done) == len(settled) == count else None

    return await eventually(check, timeout, f"{count} settled deliveries of {endpoint_id}")  # type: ignore[no-any-return]


async def test_endpoint_crud_scopes_and_tenancy(stack: Platform, receiver: Receiver) -> None:
    key, _, _ = await stack.new_tenant("hooks-crud")
    created = await register(
        stack, key, receiver.url(unique("crud")), ["job.completed"], description="orders"
    )
    assert created["id"].startswith("we_") and created["object"] == "webhook_endpoint"
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["enabled"] and created["events"] == ["job.completed"]
    assert created["description"] == "orders" and created["recent_deliveries"] == []

    got = await endpoint(stack, key, created["id"])
    assert "secret" not in got and got["url"] == created["url"]
    second = await register(stack, key, receiver.url(unique("crud")))
    assert second["events"] == ["*"]

    # Newest first, with a cursor; no secret anywhere in a listing.
    status, page, _ = await stack.request("GET", "/v1/webhooks?limit=1", key=key)
    assert status == 200 and page["has_more"] and [e["id"] for e in page["data"]] == [second["id"]]
    status, rest, _ = await stack.request(
        "GET", f"/v1/webhooks?limit=1&cursor={page['next_cursor']}", key=key
    )
    assert [e["id"] for e in rest["data"]] == [created["id"]] and not rest["has_more"]
    assert "whsec_" not in str(page) + str(rest)

    status, patched, _ = await stack.request(
        "PATCH",
        f"/v1/webhooks/{created['id']}",
        key=key,
        json={"events": ["job.failed", "job.failed", "task.completed"], "description": "ops"},
    )
    assert status == 200, patched
    assert patched["events"] == ["job.failed", "task.completed"] and patched["description"] == "ops"
    assert patched["url"] == created["url"] and "secret" not in patched

    for bad in (
        {"url": receiver.url("x"), "events": ["webhook.test"]},  # sent on request only
        {"url": receiver.url("x"), "events": ["job.exploded"]},
        {"url": receiver.url("x"), "events": []},
        {"url": receiver.url("x"), "colour": "red"},
        {"events": ["*"]},
    ):
        status, body, _ = await stack.request("POST", "/v1/webhooks", key=key, json=bad)
        assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR", (bad, body)
    status, body, _ = await stack.request(
        "PATCH", f"/v1/webhooks/{created['id']}", key=key, json={"secret": "whsec_mine"}
    )
    assert status == 400 and body["error"]["details"] == {"secret": ["is not a known field"]}

    # Another tenant sees none of it; a key without the scope gets 403.
    other, _, _ = await stack.new_tenant("hooks-other")
    _, theirs, _ = await stack.request("GET", "/v1/webhooks", key=other)
    assert theirs["data"] == []
    for method, path in (
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("GET", "/deliveries"),
        ("POST", "/rotate-secret"),
        ("POST", "/test"),
    ):
        status, body, _ = await stack.request(
            method, f"/v1/webhooks/{created['id']}{path}", key=other, json={}
        )
        assert status == 404 and body["error"]["code"] == "WEBHOOK_NOT_FOUND", (method, path)
    status, body, _ = await stack.request("POST", "/v1/deliveries/dlv_nope/retry", key=key)
    assert status == 404 and body["error"]["code"] == "DELIVERY_NOT_FOUND"
    reader, _, _ = await stack.new_tenant("hooks-reader", ["jobs:read", "jobs:write"])
    status, body, _ = await stack.request("GET", "/v1/webhooks", key=reader)
    assert status == 403 and body["error"]["details"]["required_scope"] == "webhooks:manage"

    status, _, _ = await stack.request("DELETE", f"/v1/webhooks/{created['id']}", key=key)
    assert status == 204
    status, body, _ = await stack.request("GET", f"/v1/webhooks/{created['id']}", key=key)
    assert status == 404 and body["error"]["code"] == "WEBHOOK_NOT_FOUND"


async def test_job_events_are_signed_with_the_endpoint_secret(
    stack: Platform, receiver: Receiver
) -> None:
    key, _, tenant_secret = await stack.new_tenant("hooks-signed")
    name, job_url = unique("signed"), unique("job-url")
    hook = await register(stack, key, receiver.url(name))
    receiver.configure(name, secrets=[hook["secret"]])
    receiver.configure(job_url, secrets=[tenant_secret])

    # A job's own webhook_url keeps working alongside the registered endpoint.
    job = await stack.submit(
        "echo", {"message": "signed"}, key=key, webhook_url=receiver.url(job_url)
    )
    got = await receiver.wait_for(name, 3)
    [own] = await receiver.wait_for(job_url, 1)
    assert sorted(r.event["type"] for r in got) == [
        "job.completed",
        "job.started",
        "task.completed",
    ]
    assert all(r.verified for r in got) and own.verified
    assert all(r.event["data"].get("id", r.event["data"].get("job_id")) == job["id"] for r in got)
    completed = next(r for r in got if r.event["type"] == "job.completed")
    # One event, two deliveries: the same webhook-id, each signed with its own secret.
    assert completed.headers["webhook-id"] == own.headers["webhook-id"] == completed.event["id"]
    assert completed.headers["User-Agent"].startswith("crewq/")
    with pytest.raises(WebhookVerificationError):
        Webhook(tenant_secret).verify(completed.body, completed.headers)

    endpoint_hook = Webhook(hook["secret"])
    assert endpoint_hook.verify(completed.body, completed.headers)["id"] == completed.event["id"]
    with pytest.raises(WebhookVerificationError):
        endpoint_hook.verify(completed.body.replace(b"completed", b"failed"), completed.headers)
    moved = {
        **completed.headers,
        "webhook-timestamp": str(int(completed.headers["webhook-timestamp"]) + 1),
    }
    with pytest.raises(WebhookVerificationError):
        endpoint_hook.verify(completed.body, moved)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_signing_secret()).verify(completed.body, completed.headers)


async def test_events_reach_only_the_endpoints_subscribed(
    stack: Platform, receiver: Receiver
) -> None:
    key, _, _ = await stack.new_tenant("hooks-filter")
    failed_only, everything = unique("failed-only"), unique("everything")
    narrow = await register(stack, key, receiver.url(failed_only), ["job.failed"])
    await register(stack, key, receiver.url(everything), ["*"])

    done = await stack.submit("echo", {"message": "filtered"}, key=key)
    await stack.wait_for_status(done["id"], {"completed"}, key=key)
    got = await receiver.wait_for(everything, 3)
    assert sorted(r.event["type"] for r in got) == [
        "job.completed",
        "job.started",
        "task.completed",
    ]
    # Not merely late: nothing was ever owed to the narrow endpoint for this job.
    conn = await stack.db()
    try:
        owed = await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1", narrow["id"]
        )
    finally:
        await conn.close()
    assert owed == 0 and receiver.at(failed_only) == []

    failing = await stack.submit("boom", {"reason": "filtered"}, key=key)
    [hook] = await receiver.wait_for(failed_only, 1)
    assert hook.event["type"] == "job.failed" and hook.event["data"]["id"] == failing["id"]
    got = await receiver.wait_for(everything, 5)
    assert sorted(r.event["type"] for r in got[3:]) == ["job.failed", "job.started"]


async def test_rotated_secret_signs_alongside_the_new_one_during_its_grace(
    stack: Platform, receiver: Receiver
) -> None:
    key, _, _ = await stack.new_tenant("hooks-rotate")
    name = unique("rotate")
    hook = await register(stack, key, receiver.url(name))
    old = hook["secret"]

    status, rotated, _ = await stack.request(
        "POST", f"/v1/webhooks/{hook['id']}/rotate-secret", key=key
    )
    assert status == 200, rotated
    new = rotated["secret"]
    assert new.startswith("whsec_") and new != old
    grace_ends = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert abs(grace_ends - (datetime.now(UTC) + timedelta(hours=24))) < timedelta(minutes=1)
    shown = await endpoint(stack, key, hook["id"])
    assert shown["previous_secret_expires_at"] and "secret" not in shown

    status, tested, _ = await stack.request("POST", f"/v1/webhooks/{hook['id']}/test", key=key)
    assert status == 200 and tested["succeeded"], tested
    [during] = receiver.at(name)
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):  # either secret verifies the very same delivery
        assert Webhook(secret).verify(during.body, during.headers)["type"] == "webhook.test"

    status, body, _ = await stack.request(
        "POST", f"/v1/webhooks/{hook['id']}/rotate-secret", key=key, json={"grace_seconds": -1}
    )
    assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR"
    status, rotated, _ = await stack.request(
        "POST", f"/v1/webhooks/{hook['id']}/rotate-secret", key=key, json={"grace_seconds": 0}
    )
    assert status == 200 and rotated["previous_secret_expires_at"] is None
    newest = rotated["secret"]
    status, tested, _ = await stack.request("POST", f"/v1/webhooks/{hook['id']}/test", key=key)
    assert status == 200 and tested["succeeded"], tested
    after = receiver.at(name)[-1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert Webhook(newest).verify(after.body, after.headers)["id"] == tested["event_id"]
    for secret in (old, new):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(after.body, after.headers)


async def test_receiver_down_then_up_gets_every_event_with_a_stable_id(
    stack: Platform, receiver: Receiver
) -> None:
    key, _, _ = await stack.new_tenant("hooks-down")
    name = unique("down")
    hook = await register(stack, key, receiver.url(name))
    receiver.configure(name, fail_first=3, fail_status=503, secrets=[hook["secret"]])

    job = await stack.submit("echo", {"message": "down then up"}, key=key)
    await stack.wait_for_status(job["id"], {"completed"}, key=key)
    deliveries = await settled_deliveries(stack, key, hook["id"], 3)
    assert {d["status"] for d in deliveries} == {"succeeded"}
    calls = receiver.at(name)
    assert [c.status for c in calls].count(503) == 3 and all(c.verified for c in calls)
    by_id = Counter(c.headers["webhook-id"] for c in calls)
    assert all(c.headers["webhook-id"] == c.event["id"] for c in calls)
    # Every attempt of a delivery carried the same webhook-id, so a receiver can dedupe.
    assert by_id == {d["event_id"]: d["attempt_count"] for d in deliveries}
    assert {d["event_type"] for d in deliveries} == {
        "job.started",
        "task.completed",
        "job.completed",
    }
    for d in deliveries:
        codes = [a["status_code"] for a in d["attempts"]]
        assert codes[-1] == 200 and set(codes[:-1]) <= {503}, codes
        assert [a["number"] for a in d["attempts"]] == list(range(1, len(codes) + 1))
        assert all(a["duration_ms"] >= 0 and a["attempted_at"] for a in d["attempts"])
        assert d["attempts"][-1]["response_body"] == f"receiver {name} answered 200"
        assert d["job_id"] == job["id"] and d["delivered_at"] and d["next_attempt_at"] is None
    failed_attempts = [a for d in deliveries for a in d["attempts"] if a["status_code"] == 503]
    assert all(a["error"] == "HTTP 503" for a in failed_attempts) and len(failed_attempts) == 3

    # Paging one at a time walks the same deliveries, newest first.
    seen, cursor = [], None
    while True:
        query = "?limit=1" + (f"&cursor={cursor}" if cursor else "")
        _, page, _ = await stack.request(
            "GET", f"/v1/webhooks/{hook['id']}/deliveries{query}", key=key
        )
        seen += [d["id"] for d in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert seen == [d["id"] for d in deliveries]
    shown = await endpoint(stack, key, hook["id"])
    assert [d["id"] for d in shown["recent_deliveries"]] == seen
    assert shown["failing_since"] is None, "a success clears failing_since"
    _, listed, _ = await stack.request("GET", "/v1/webhooks", key=key)
    assert [d["id"] for d in listed["data"][0]["recent_deliveries"]] == seen


async def test_410_disables_the_endpoint_and_patch_enables_it(
    stack: Platform, receiver: Receiver
) -> None:
    key, _, _ = await stack.new_tenant("hooks-gone")
    name = unique("gone")
    hook = await register(stack, key, receiver.url(name), ["job.completed"])
    receiver.configure(name, status=410, secrets=[hook["secret"]])

    first = await stack.submit("echo", {"message": "gone"}, key=key)
    [gone] = await settled_deliveries(stack, key, hook["id"], 1)
    assert gone["status"] == "failed" and [a["status_code"] for a in gone["attempts"]] == [410]
    shown = await endpoint(stack, key, hook["id"])
    assert not shown["enabled"] and shown["disabled_at"] and shown["failing_since"]
    assert shown["disabled_reason"] == "webhook.disabled: receiver answered 410 Gone"
    assert gone["event_id"] == receiver.at(name)[0].headers["webhook-id"]

    # Disabled: a later job owes it nothing.
    second = await stack.submit("echo", {"message": "while disabled"}, key=key)
    await stack.wait_for_status(second["id"], {"completed"}, key=key)
    await settled_deliveries(stack, key, hook["id"], 1)
    # A test still reaches a disabled endpoint: the way to see the receiver is back.
    status, tested, _ = await stack.request("POST", f"/v1/webhooks/{hook['id']}/test", key=key)
    assert status == 200 and tested["status_code"] == 410 and not tested["succeeded"]
    assert (await endpoint(stack, key, hook["id"]))["disabled_at"] == shown["disabled_at"]

    status, enabled, _ = await stack.request(
        "PATCH", f"/v1/webhooks/{hook['id']}", key=key, json={"enabled": True}
    )
    assert status == 200, enabled
    assert enabled["enabled"] and enabled["disabled_at"] is None
    assert enabled["disabled_reason"] is None and enabled["failing_since"] is None
    receiver.configure(name, status=200, secrets=[hook["secret"]])
    third = await stack.submit("echo", {"message": "back"}, key=key)
    [back] = await receiver.wait_for(name, 1)
    assert back.verified and back.event["data"]["id"] == third["id"]
    assert first["id"] != third["id"]

    # And disabling by hand works the same way, with its own reason.
    status, disabled, _ = await stack.request(
        "PATCH", f"/v1/webhooks/{hook['id']}", key=key, json={"enabled": False}
    )
    assert status == 200 and not disabled["enabled"]
    assert disabled["disabled_reason"] == "disabled through the API"


async def test_manual_retry_of_failed_and_succeeded_deliveries(
    stack: Platform, receiver: Receiver
) -> None:
    key, _, _ = await stack.new_tenant("hooks-retry")
    name = unique("retry")
    hook = await register(stack, key, receiver.url(name), ["job.completed"])
    # The first answer is 410: the delivery fails at once (and the endpoint is disabled).
    receiver.configure(name, fail_first=1, fail_status=410, secrets=[hook["secret"]])
    await stack.submit("echo", {"message": "retry me"}, key=key)
    [failed] = await settled_deliveries(stack, key, hook["id"], 1)
    assert failed["status"] == "failed"

    path = f"/v1/deliveries/{failed['id']}/retry"
    status, body, _ = await stack.request("POST", path, key=key)
    assert status == 409 and body["error"]["code"] == "WEBHOOK_DISABLED"
    await stack.request("PATCH", f"/v1/webhooks/{hook['id']}", key=key, json={"enabled": True})
    other, _, _ = await stack.new_tenant("hooks-retry-other")
    status, body, _ = await stack.request("POST", path, key=other)
    assert status == 404 and body["error"]["code"] == "DELIVERY_NOT_FOUND"

    status, queued, _ = await stack.request("POST", path, key=key)
    assert status == 202 and queued["id"] == failed["id"], queued
    assert queued["status"] == "pending" and queued["next_attempt_at"]
    [ok] = await receiver.wait_for(name, 1)
    assert ok.verified and ok.headers["webhook-id"] == failed["event_id"]

    async def delivery() -> dict[str, Any]:
        _, body, _ = await stack.request("GET", f"/v1/deliveries/{failed['id']}", key=key)
        return body  # type: ignore[no-any-return]

    async def attempted(n: int) -> dict[str, Any] | None:
        d = await delivery()
        return d if d["status"] != "pending" and len(d["attempts"]) == n else None

    done = await eventually(lambda: attempted(2), what="the retried attempt")
    assert done["status"] == "succeeded" and [a["status_code"] for a in done["attempts"]] == [
        410,
        200,
    ]

    # A succeeded delivery can be sent again too, with the same webhook-id.
    status, _, _ = await stack.request("POST", path, key=key)
    assert status == 202
    again = await receiver.wait_for(name, 2)
    assert again[-1].headers["webhook-id"] == failed["event_id"]
    done = await eventually(lambda: attempted(3), what="the second retry")
    assert [a["number"] for a in done["attempts"]] == [1, 2, 3]

    # A retry goes to the endpoint's current URL.
    moved = unique("retry-moved")
    receiver.configure(moved, secrets=[hook["secret"]])
    status, _, _ = await stack.request(
        "PATCH", f"/v1/webhooks/{hook['id']}", key=key, json={"url": receiver.url(moved)}
    )
    assert status == 200
    status, queued, _ = await stack.request("POST", path, key=key)
    assert status == 202 and queued["url"] == receiver.url(moved)
    [there] = await receiver.wait_for(moved, 1)
    assert there.verified and there.headers["webhook-id"] == failed["event_id"]
    assert len(receiver.at(name)) == 3


async def test_webhook_test_reports_what_the_receiver_answered(
    stack: Platform, receiver: Receiver
) -> None:
    key, _, _ = await stack.new_tenant("hooks-test")
    names = {"ok": unique("test-ok"), "error": unique("test-503"), "slow": unique("test-slow")}
    hooks = {
        k: await register(stack, key, receiver.url(n), ["job.failed"]) for k, n in names.items()
    }
    receiver.configure(names["ok"], status=200, secrets=[hooks["ok"]["secret"]])
    receiver.configure(names["error"], status=503)
    receiver.configure(names["slow"], sleep=4)  # past the platform's 3 s webhook timeout

    try:
        status, result, _ = await stack.request(
            "POST", f"/v1/webhooks/{hooks['ok']['id']}/test", key=key
        )
        assert status == 200, result
        assert result["succeeded"] and result["status_code"] == 200 and result["error"] is None
        assert result["response_body"] == f"receiver {names['ok']} answered 200"
        assert result["duration_ms"] >= 0 and result["endpoint_id"] == hooks["ok"]["id"]
        [hook] = receiver.at(names["ok"])  # only this endpoint got it
        assert hook.verified and hook.event["type"] == "webhook.test"
        assert hook.event["id"] == result["event_id"] == hook.headers["webhook-id"]
        assert hook.event["data"]["endpoint_id"] == hooks["ok"]["id"]
        assert receiver.at(names["error"]) == [] and receiver.at(names["slow"]) == []

        status, result, _ = await stack.request(
            "POST", f"/v1/webhooks/{hooks['error']['id']}/test", key=key
        )
        assert status == 200, result
        assert not result["succeeded"] and result["status_code"] == 503
        assert result["error"] == "HTTP 503"
        assert result["response_body"] == f"receiver {names['error']} answered 503"

        started = time.monotonic()
        status, result, _ = await stack.request(
            "POST", f"/v1/webhooks/{hooks['slow']['id']}/test", key=key
        )
        assert status == 200, result
        assert not result["succeeded"] and result["status_code"] is None
        assert "timed out" in result["error"] and result["duration_ms"] >= 2900
        assert time.monotonic() - started < 8
    finally:  # deleting the endpoints ends the background retries of the failed tests
        for made in hooks.values():
            await stack.request("DELETE", f"/v1/webhooks/{made['id']}", key=key)


async def test_urls_refused_at_registration(own_stack: Platform) -> None:
    """SSRF protection with production's URL policy. The API only checks: no dispatcher
    runs on this platform, so nothing is ever sent anywhere."""
    await own_stack.start_api(CREWQ_WEBHOOK_ALLOW_HTTP="false", CREWQ_WEBHOOK_ALLOW_PRIVATE="false")
    refused = {
        "http://hooks.example.com/x": "http",
        "https://127.0.0.1/x": "loopback",
        "https://10.0.0.1/x": "private",
        "https://169.254.169.254/latest/meta-data/": "link-local",
        "https://[::1]/x": "loopback",
        "https://localhost/x": "localhost is not a public address",  # not where it leads
        "https://metadata.google.internal/x": "internal",
        "https://user:pw@hooks.example.com/x": "credentials",
        "ftp://hooks.example.com/x": "https://",
    }
    for url, reason in refused.items():
        status, body, _ = await own_stack.request("POST", "/v1/webhooks", json={"url": url})
        assert status == 422, (url, body)
        assert body["error"]["code"] == "INVALID_WEBHOOK_URL", (url, body)
        assert reason in body["error"]["details"]["reason"], (url, body)

    # A public address passes (an IP literal: no DNS lookup, and no dispatcher to call it).
    hook = await register(own_stack, own_stack.key, "https://93.184.215.14/hooks")
    status, body, _ = await own_stack.request(
        "PATCH", f"/v1/webhooks/{hook['id']}", json={"url": "https://192.168.1.10/hooks"}
    )
    assert status == 422 and body["error"]["code"] == "INVALID_WEBHOOK_URL"
    assert (await endpoint(own_stack, own_stack.key, hook["id"]))["url"] == hook["url"]
    conn = await own_stack.db()
    try:
        assert await conn.fetchval("SELECT count(*) FROM webhook_endpoints") == 1
        assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
    finally:
        await conn.close()


@pytest.mark.slow
async def test_two_dispatchers_deliver_each_event_exactly_once(
    own_stack: Platform, receiver: Receiver
) -> None:
    await own_stack.start_api()
    await own_stack.start_worker(CREWQ_WORKER_CONCURRENCY="4")
    dispatchers = [await own_stack.start_dispatcher(), await own_stack.start_dispatcher()]
    name = unique("pair")
    hook = await register(own_stack, own_stack.key, receiver.url(name))
    receiver.configure(name, secrets=[hook["secret"]])

    jobs = [(await own_stack.submit("echo", {"message": f"pair {i}"}))["id"] for i in range(30)]
    conn = await own_stack.db()
    try:

        async def all_sent() -> bool:
            left = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE id = ANY($1) AND status <> 'completed'", jobs
            )
            pending = await conn.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE status <> 'succeeded'"
            )
            return bool(left == 0 and pending == 0)

        await eventually(all_sent, timeout=60, what="every job done and every delivery made")
        # What `*` subscribes to: every event but the crew's steps (task.started, llm.completed).
        events = {
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM events WHERE type NOT IN ('task.started', 'llm.completed')"
            )
        }
        attempts = await conn.fetchval("SELECT count(*) FROM delivery_attempts")
    finally:
        await conn.close()
    await asyncio.sleep(0.5)  # room for a duplicate to show up, were there one
    got = Counter(r.headers["webhook-id"] for r in receiver.at(name))
    assert len(events) == 90  # started, task completed, completed: for each of 30 jobs
    assert set(got) == events and set(got.values()) == {1}, got.most_common(3)
    assert attempts == 90 and all(r.verified for r in receiver.at(name))
    shares = [d.log().count(" attempt 1 to ") for d in dispatchers]
    assert sum(shares) == 90 and min(shares) > 0, shares  # both took part


@pytest.mark.slow
async def test_a_slow_endpoint_does_not_delay_a_healthy_one(
    own_stack: Platform, own_receiver: Receiver, measure: Callable[[str, float], None]
) -> None:
    receiver = own_receiver
    await own_stack.start_api()
    await own_stack.start_worker()
    dispatcher = await own_stack.start_dispatcher(CREWQ_WEBHOOK_TIMEOUT="15")
    slow, healthy = unique("slow"), unique("healthy")
    receiver.configure(slow, sleep=10)
    receiver.configure(healthy)
    await register(own_stack, own_stack.key, receiver.url(slow))
    await register(own_stack, own_stack.key, receiver.url(healthy))

    ids = [(await own_stack.submit("echo", {"message": f"iso {i}"}))["id"] for i in range(6)]
    jobs = [await own_stack.wait_for_status(i, {"completed"}) for i in ids]
    got = await receiver.wait_for(healthy, 18, timeout=8)
    # The slow receiver has been sent its share and has answered none of it yet.
    assert receiver.behaviours[slow].seen >= 1 and receiver.at(slow) == []
    at = {(r.event["type"], r.event["data"].get("id")): r.at for r in got}
    lags = [
        at["job.completed", j["id"]] - datetime.fromisoformat(j["finished_at"]).timestamp()
        for j in jobs
    ]
    lags += [
        at["job.started", j["id"]] - datetime.fromisoformat(j["started_at"]).timestamp()
        for j in jobs
    ]
    measure("healthy endpoint beside a hanging one: worst event -> received", max(lags))
    assert max(lags) < 2.0, lags
    dispatcher.kill()  # rather than wait out its 10 s requests on shutdown
