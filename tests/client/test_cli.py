"""`crewq jobs …` and `crewq webhooks …` run as real processes against a live API: output
for people and for scripts, and exit codes that say how a job ended."""

import asyncio
import json
import os
import subprocess
import sys
import uuid

from crewq.client_cli import Exit
from tests.fakes import Receiver
from tests.harness import ROOT, Platform


async def _crewq(
    stack: Platform, *args: str, key: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CREWQ_URL": stack.base_url, "CREWQ_API_KEY": key or stack.key}
    if key == "":
        env.pop("CREWQ_API_KEY")
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "crewq", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_submit_wait_json_then_get_list_and_watch(stack: Platform) -> None:
    tag = uuid.uuid4().hex[:8]
    done = await _crewq(
        stack, "jobs", "submit", "echo", "--input", f"message=hi {tag}",
        "--metadata", f"tag={tag}", "--wait", "--json",
    )  # fmt: skip
    assert done.returncode == Exit.SUCCEEDED, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "completed" and job["inputs"] == {"message": f"hi {tag}"}
    shown = await _crewq(stack, "jobs", "get", job["id"])
    assert shown.returncode == 0
    assert f"id        {job['id']}" in shown.stdout and "completed" in shown.stdout
    listed = await _crewq(stack, "jobs", "list", "--crew", "echo", "--limit", "3", "--json")
    assert job["id"] in [j["id"] for j in json.loads(listed.stdout)]
    table = await _crewq(stack, "jobs", "list", "--status", "completed", "--limit", "3")
    assert table.stdout.splitlines()[0].split() == [
        "ID", "STATUS", "CREW", "CREATED", "PROGRESS", "TOKENS",
    ]  # fmt: skip
    watched = await _crewq(stack, "jobs", "watch", job["id"])
    assert watched.returncode == Exit.SUCCEEDED, watched.stderr
    lines = watched.stdout.splitlines()
    assert "job.started" in lines[0] and "task 1/1 started: reply" in watched.stdout
    assert any("llm " in line and " tokens in " in line for line in lines)
    assert lines[-1] == f"{job['id']} completed"


async def test_exit_codes_say_how_it_ended(stack: Platform) -> None:
    failed = await _crewq(
        stack, "jobs", "submit", "boom", "--inputs-json", "-", "--max-retries", "0", "--wait",
        stdin=json.dumps({"reason": "testing"}),
    )  # fmt: skip
    assert failed.returncode == Exit.FAILED, failed.stderr
    assert "CREW_CONFIG_ERROR" in failed.stdout or "CREW_ERROR" in failed.stdout
    later = await _crewq(
        stack, "jobs", "submit", "echo", "--input", "message=later", "--delay", "3600", "--json"
    )
    job_id = json.loads(later.stdout)["id"]
    cancelled = await _crewq(stack, "jobs", "cancel", job_id, "--json")
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    watched = await _crewq(stack, "jobs", "watch", job_id, "--json")
    assert watched.returncode == Exit.CANCELLED
    assert json.loads(watched.stdout.splitlines()[-1])["type"] == "job.cancelled"
    retried = await _crewq(stack, "jobs", "retry", job_id, "--from", "start")
    assert retried.returncode == 0 and "status" in retried.stdout
    unknown = await _crewq(stack, "jobs", "submit", "no-such-crew", "--json")
    assert unknown.returncode == Exit.API_ERROR
    error = json.loads(unknown.stderr)["error"]
    assert error["status"] == 422 and error["code"] == "UNKNOWN_CREW" and error["request_id"]
    missing = await _crewq(stack, "jobs", "get", "job_nope")
    assert missing.returncode == Exit.API_ERROR and "404 JOB_NOT_FOUND" in missing.stderr
    not_waiting = await _crewq(stack, "jobs", "input", job_id, "--answer", "fine")
    assert not_waiting.returncode == Exit.API_ERROR and "JOB_NOT_AWAITING_INPUT" in (
        not_waiting.stderr
    )
    bad = await _crewq(stack, "jobs", "submit", "echo", "--input", "no-equals-sign")
    assert bad.returncode == Exit.USAGE and "KEY=VALUE" in bad.stderr
    keyless = await _crewq(stack, "jobs", "list", key="")
    assert keyless.returncode == Exit.USAGE and "CREWQ_API_KEY" in keyless.stderr


async def test_webhook_verbs(stack: Platform, receiver: Receiver) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    receiver.configure(name)
    made = await _crewq(stack, "webhooks", "create", receiver.url(name), "--json")
    assert made.returncode == 0, made.stderr
    endpoint = json.loads(made.stdout)
    assert endpoint["secret"].startswith("whsec_")
    listed = await _crewq(stack, "webhooks", "list")
    assert endpoint["id"] in listed.stdout and listed.stdout.startswith("ID")
    tested = await _crewq(stack, "webhooks", "test", endpoint["id"], "--json")
    assert json.loads(tested.stdout)["succeeded"] is True
    disabled = await _crewq(stack, "webhooks", "disable", endpoint["id"], "--json")
    assert json.loads(disabled.stdout)["enabled"] is False
    rotated = await _crewq(stack, "webhooks", "rotate", endpoint["id"])
    assert "new secret (shown once): whsec_" in rotated.stdout
    deliveries = await _crewq(stack, "webhooks", "deliveries", endpoint["id"], "--json")
    assert [d["event_type"] for d in json.loads(deliveries.stdout)] == ["webhook.test"]
    deleted = await _crewq(stack, "webhooks", "delete", endpoint["id"])
    assert deleted.returncode == 0
    gone = await _crewq(stack, "webhooks", "get", endpoint["id"])
    assert gone.returncode == Exit.API_ERROR and "WEBHOOK_NOT_FOUND" in gone.stderr
