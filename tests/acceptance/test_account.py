"""The account's self-service over real HTTP: its jobs' metrics per crew, and its IP
allowlist read and replaced by an admin key, which refuses to lock the caller out unless
told so and holds from the very next request."""

import asyncio
import sys
import uuid
from typing import Any

from schemas.account import KeyMode
from tests.harness import Platform


def _code(body: Any) -> str:
    code: str = body["error"]["code"]
    assert body["error"]["request_id"], body
    return code


async def test_metrics_count_the_period_s_jobs_per_crew_for_their_owner_only(
    stack: Platform,
) -> None:
    key, _, _ = await stack.new_tenant("metrics")
    other, _, _ = await stack.new_tenant("metrics-other")
    jobs = [await stack.submit("echo", {"message": f"m{i}"}, key=key) for i in range(2)]
    for job in jobs:
        await stack.wait_for_status(job["id"], {"completed"}, key=key)

    status, found, _ = await stack.request("GET", "/v1/account/metrics?period=24h", key=key)
    assert status == 200, found
    assert found["object"] == "account_metrics" and found["period"] == "24h"
    assert found["livemode"] is True
    [echo] = found["crews"]
    assert echo["crew"] == "echo" and echo["jobs"] == 2
    assert echo["by_status"]["completed"] == 2 and echo["by_status"]["failed"] == 0
    assert set(echo["by_status"]) >= {"pending", "running", "cancelled", "expired"}
    assert echo["run_seconds"]["p50"] is not None and echo["run_seconds"]["p50"] > 0
    assert echo["queue_seconds"]["p95"] is not None and echo["queue_seconds"]["p95"] >= 0
    assert found["totals"]["jobs"] == 2

    # The default period is 7d; another tenant sees none of these jobs.
    status, theirs, _ = await stack.request("GET", "/v1/account/metrics", key=other)
    assert status == 200 and theirs["period"] == "7d"
    assert theirs["crews"] == [] and theirs["totals"]["jobs"] == 0
    status, body, _ = await stack.request("GET", "/v1/account/metrics?period=1y", key=key)
    assert status == 400 and _code(body) == "VALIDATION_ERROR"
    assert "period" in body["error"]["details"], body


async def test_an_admin_replaces_the_allowlist_without_locking_itself_out(
    stack: Platform,
) -> None:
    name = f"secure-{uuid.uuid4().hex[:6]}"
    admin, _, _ = await stack.new_tenant("secure", ["admin"], name=name)
    test_admin, _, _ = await stack.new_tenant("secure", ["admin"], name=name, mode=KeyMode.TEST)

    async def put(body: dict[str, Any], key: str = admin, **headers: str) -> tuple[int, Any, Any]:
        return await stack.request(
            "PUT", "/v1/account/security", key=key, json=body, headers=headers
        )

    status, read, headers = await stack.request("GET", "/v1/account/security", key=admin)
    assert status == 200, read
    assert read["ip_allowlist"] == {"enabled": False, "ips": []}
    assert read["client_address"] == "127.0.0.1" and read["max_ips"] == 100
    assert headers["ETag"] == f'"{read["version"]}"'

    # Leaving out the caller's own address is refused, naming it.
    status, body, _ = await put({"ip_allowlist": {"ips": ["10.0.0.0/8"]}})
    assert status == 409 and _code(body) == "WOULD_LOCK_OUT_CALLER", body
    assert body["error"]["details"] == {"client_address": "127.0.0.1"}
    for bad in (["10.0.0.1/8"], ["localhost"], [f"10.0.{i}.0/24" for i in range(101)]):
        status, body, _ = await put({"ip_allowlist": {"ips": bad}})
        assert status == 400 and _code(body) == "VALIDATION_ERROR", (bad, body)
    status, body, _ = await put({"ip_allowlist": {"ips": ["127.0.0.0/8"]}}, key=test_admin)
    assert status == 403 and _code(body) == "LIVE_MODE_REQUIRED", body

    # With the version read: replaced, duplicates once, a mapped address as IPv4.
    status, changed, headers = await put(
        {"ip_allowlist": {"ips": ["127.0.0.1", "::ffff:10.0.0.0/104", "10.0.0.0/8"]}},
        **{"If-Match": f'"{read["version"]}"'},
    )
    assert status == 200, changed
    assert changed["ip_allowlist"] == {"enabled": True, "ips": ["127.0.0.1/32", "10.0.0.0/8"]}
    assert changed["version"] != read["version"]
    assert headers["ETag"] == f'"{changed["version"]}"'
    # A writer holding the version it read before that change loses.
    status, body, _ = await put(
        {"ip_allowlist": {"ips": []}}, **{"If-Match": f'"{read["version"]}"'}
    )
    assert status == 412 and _code(body) == "PRECONDITION_FAILED", body
    status, now, _ = await stack.request("GET", "/v1/account/security", key=admin)
    assert now["ip_allowlist"] == changed["ip_allowlist"]

    # Told so, it locks the caller out, from the next request on.
    status, body, _ = await put(
        {"ip_allowlist": {"ips": ["10.0.0.0/8"]}, "confirm_lockout": "127.0.0.1"}
    )
    assert status == 200 and body["ip_allowlist"]["ips"] == ["10.0.0.0/8"], body
    status, body, _ = await stack.request("GET", "/v1/account/security", key=admin)
    assert status == 403 and _code(body) == "IP_NOT_ALLOWED", body
    # The operator lets it in again.
    opened = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "crewq", "tenants", "set", "--tenant", name, "--allow-ips", ""),
        env=stack.env,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    _, stderr = await opened.communicate()
    assert opened.returncode == 0, stderr.decode()
    status, body, _ = await stack.request("GET", "/v1/account/security", key=admin)
    assert status == 200 and body["ip_allowlist"]["enabled"] is False, body
