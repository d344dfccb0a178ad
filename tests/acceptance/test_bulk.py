"""Bulk actions with real processes (issue 22): a bulk cancel by metadata cancels exactly
the matching jobs, a running one included, and no other; its progress is readable."""

import time
from typing import Any

import pytest

from tests.harness import Platform, eventually

pytestmark = pytest.mark.slow


async def test_a_bulk_cancel_by_metadata_cancels_exactly_the_matching_jobs(
    own_stack: Platform,
) -> None:
    stack = own_stack
    await stack.start_api()
    await stack.start_worker(CREWQ_WORKER_CONCURRENCY="1")
    tag = f"bulk{time.time_ns()}"
    red = {"team": "red", "run": tag}
    finished = await stack.submit("echo", {"message": "done"}, metadata=red)
    await stack.wait_for_status(finished["id"], {"completed"})
    running = await stack.submit("echo", {"message": "[[sleep:30]]"}, metadata=red)
    await stack.wait_for_status(running["id"], {"running"})
    # The worker runs one job at a time: these wait behind the sleeper.
    pending = await stack.submit("echo", {"message": "wait"}, metadata=red)
    blue = await stack.submit("echo", {"message": "other"}, metadata={"team": "blue", "run": tag})
    selection = {"metadata": {"team": "red", "run": tag}}
    status, counted, _ = await stack.request(
        "POST", "/v1/jobs/bulk-cancel", json={"filter": selection, "dry_run": True}
    )
    assert status == 200 and counted["matched"] == 3 and counted["id"] is None, counted
    assert (await stack.job(pending["id"]))["status"] == "pending"  # a dry run changes nothing
    status, made, headers = await stack.request(
        "POST", "/v1/jobs/bulk-cancel", json={"filter": selection}
    )
    assert status == 202 and made["matched"] == 3, made
    assert headers["Location"] == f"/v1/bulk-operations/{made['id']}"

    async def done() -> bool:
        status, progress, _ = await stack.request("GET", f"/v1/bulk-operations/{made['id']}")
        assert status == 200, progress
        return bool(progress["status"] == "done")

    await eventually(done, timeout=30, what="the bulk cancel")
    status, progress, _ = await stack.request("GET", f"/v1/bulk-operations/{made['id']}")
    assert progress["processed"] == 3 and progress["changed"] == 2, progress
    stopped = await stack.wait_for_status(running["id"], {"cancelled"}, timeout=30)
    assert stopped["status"] == "cancelled"
    assert (await stack.job(pending["id"]))["status"] == "cancelled"
    assert (await stack.job(finished["id"]))["status"] == "completed"
    other: dict[str, Any] = await stack.wait_for_status(blue["id"], {"completed"}, timeout=60)
    assert other["status"] == "completed"
    status, refused, _ = await stack.request(
        "POST", "/v1/jobs/bulk-cancel", json={"filter": {"status": "sleeping"}}
    )
    assert status == 400 and "filter.status" in refused["error"]["details"], refused
    status, missing, _ = await stack.request("GET", "/v1/bulk-operations/bulk_nope")
    assert status == 404 and missing["error"]["code"] == "BULK_OPERATION_NOT_FOUND"
