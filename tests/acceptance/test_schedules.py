"""Schedules with real processes (issue 22): an interval schedule fired by two workers,
created and read through two API processes, makes exactly one job per tick; bad cron
expressions and time zones are refused naming the field."""

import asyncio
import itertools
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from crewq.embedded import free_port
from tests.harness import Platform

pytestmark = pytest.mark.slow

INTERVAL_S = 5


async def test_an_interval_schedule_makes_one_job_per_tick_with_two_workers_and_two_apis(
    own_stack: Platform,
) -> None:
    stack = own_stack
    await stack.start_api()
    other_port = free_port()
    await stack.start_api(CREWQ_API_PORT=str(other_port))
    await stack.start_worker()
    await stack.start_worker()
    status, made, headers = await stack.request(
        "POST",
        f"http://127.0.0.1:{other_port}/v1/schedules",
        json={
            "crew": "echo",
            "inputs": {"message": "tick"},
            "metadata": {"team": "red"},
            "interval": INTERVAL_S,
        },
    )
    assert status == 201, made
    assert headers["Location"] == f"/v1/schedules/{made['id']}"
    runs = [datetime.fromisoformat(t) for t in made["next_runs"]]
    assert [b - a for a, b in itertools.pairwise(runs)] == [timedelta(seconds=INTERVAL_S)] * 4
    await asyncio.sleep(4 * INTERVAL_S + 1.5)
    status, paused, _ = await stack.request("POST", f"/v1/schedules/{made['id']}/pause")
    assert status == 200 and paused["paused"] and paused["next_runs"] == []
    conn = await stack.db()
    try:
        rows = await conn.fetch(
            "SELECT id, idempotency_key, created_at FROM jobs WHERE metadata ->> 'schedule_id' = $1"
            " ORDER BY id",
            made["id"],
        )
    finally:
        await conn.close()
    # Four or five ticks fell in the time (the first one interval after creating it).
    assert 4 <= len(rows) <= 5, rows
    ticks = [datetime.fromisoformat(r["idempotency_key"].split(":", 2)[2]) for r in rows]
    assert ticks[0] == runs[0]
    assert [b - a for a, b in itertools.pairwise(ticks)] == [timedelta(seconds=INTERVAL_S)] * (
        len(ticks) - 1
    )
    for row, tick in zip(rows, ticks, strict=True):
        assert tick <= row["created_at"] < tick + timedelta(seconds=INTERVAL_S)
    # Clients find them by the schedule's id in their metadata.
    status, page, _ = await stack.request(
        "GET", "/v1/jobs", params={"metadata[schedule_id]": made["id"], "limit": "100"}
    )
    assert status == 200 and sorted(j["id"] for j in page["data"]) == [r["id"] for r in rows]
    assert all(j["metadata"] == {"team": "red", "schedule_id": made["id"]} for j in page["data"])
    status, read, _ = await stack.request("GET", f"/v1/schedules/{made['id']}")
    assert status == 200 and read["last_job_id"] == rows[-1]["id"]
    # Paused: no more jobs.
    await asyncio.sleep(INTERVAL_S + 1)
    conn = await stack.db()
    try:
        later = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE metadata ->> 'schedule_id' = $1", made["id"]
        )
    finally:
        await conn.close()
    assert later == len(rows)


async def test_a_schedule_refuses_a_bad_cron_or_time_zone_naming_the_field(
    stack: Platform,
) -> None:
    for body, field in (
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "0 9 * * *", "interval": 5}, "interval"),
        ({}, "cron"),
    ):
        status, refused, _ = await stack.request(
            "POST", "/v1/schedules", json={"crew": "echo", "inputs": {"message": "x"}, **body}
        )
        assert status == 400, refused
        assert refused["error"]["code"] == "VALIDATION_ERROR"
        assert field in refused["error"]["details"], refused
    status, refused, _ = await stack.request(
        "POST", "/v1/schedules", json={"crew": "no-such-crew", "interval": 5}
    )
    assert status == 422 and refused["error"]["code"] == "UNKNOWN_CREW"
    status, refused, _ = await stack.request(
        "POST", "/v1/schedules", json={"crew": "echo", "interval": 5}
    )
    assert status == 422 and refused["error"]["code"] == "MISSING_INPUTS"
    status, made, _ = await stack.request(
        "POST",
        "/v1/schedules",
        json={
            "crew": "echo",
            "inputs": {"message": "x"},
            "cron": "0 9 * * *",
            "timezone": "Europe/Paris",
            "missed": "run_once",
        },
    )
    assert status == 201, made
    assert all(datetime.fromisoformat(t).hour in (7, 8) for t in made["next_runs"])  # UTC
    status, listed, _ = await stack.request("GET", "/v1/schedules")
    assert status == 200 and made["id"] in [s["id"] for s in listed["data"]]

    # An operator's hand on them: `crewq schedules pause|list`.
    def crewq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "crewq", "schedules", *args, "--tenant", stack.tenant_name],
            env=stack.env,
            capture_output=True,
            text=True,
            check=True,
        )

    await asyncio.to_thread(crewq, "pause", made["id"])
    done = await asyncio.to_thread(crewq, "list")
    listed_line = next(line for line in done.stdout.splitlines() if made["id"] in line)
    assert "0 9 * * * Europe/Paris" in listed_line and "paused" in listed_line
    status, read, _ = await stack.request("GET", f"/v1/schedules/{made['id']}")
    assert status == 200 and read["paused"]
    status, _, _ = await stack.request("DELETE", f"/v1/schedules/{made['id']}")
    assert status == 204
    status, gone, _ = await stack.request("GET", f"/v1/schedules/{made['id']}")
    assert status == 404 and gone["error"]["code"] == "SCHEDULE_NOT_FOUND"
