"""No tenant can push the API to a gigabyte (issue 19, finding 1), over real HTTP: nested
metadata and oversized inputs are refused, a crew echoing a large input stores a result
cut and marked, and a list of large jobs answers within its byte budget, paging on."""

from typing import Any

import orjson

from tests.harness import Platform

KIB = 1024


def _validation_error(body: Any) -> dict[str, list[str]]:
    error = body["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["request_id"], body
    details: dict[str, list[str]] = error["details"]
    return details


async def test_nested_metadata_and_oversized_inputs_are_refused(stack: Platform) -> None:
    # The audit's body, accepted before: a 990,000-character string one level down.
    status, body, _ = await stack.request(
        "POST",
        "/v1/jobs",
        json={
            "crew": "echo",
            "inputs": {"message": "hi"},
            "metadata": {"blob": {"x": "y" * 990_000}},
        },
    )
    assert status == 400, body
    assert _validation_error(body) == {
        "metadata": ["blob.x: string values must be at most 1000 characters"]
    }
    # Many short strings pass each string's bound; inputs and metadata together do not
    # pass the job's (64 KiB by default), and the answer names the field and the bound.
    status, body, _ = await stack.request(
        "POST",
        "/v1/jobs",
        json={
            "crew": "echo",
            "inputs": {"message": "m" * 40 * KIB},
            "metadata": {"tags": ["t" * 900] * 30},
        },
    )
    assert status == 400, body
    [message] = _validation_error(body)["inputs"]
    assert "at most 65536" in message and "CREWQ_JOB_MAX_INPUT_BYTES" in message
    status, body, _ = await stack.request(
        "POST", "/v1/jobs", json={"crew": "echo", "inputs": {"message": "m" * 70 * KIB}}
    )
    assert status == 400 and "inputs" in _validation_error(body), body
    # Just under the bound is a job like any other.
    job = await stack.submit("echo", {"message": "m" * 60 * KIB}, metadata={"team": {"n": "red"}})
    assert job["metadata"] == {"team": {"n": "red"}}


async def test_a_crew_echoing_a_large_input_stores_a_cut_result_marked_so(
    own_stack: Platform,
) -> None:
    await own_stack.start_api()
    await own_stack.start_worker(CREWQ_JOB_MAX_OUTPUT_BYTES=str(16 * KIB))
    message = "e" * 60 * KIB
    job = await own_stack.submit("echo", {"message": message})
    done = await own_stack.wait_for_status(job["id"], {"completed", "failed"}, timeout=120)
    assert done["status"] == "completed", done
    result = done["result"]
    # The crew answered with the whole message in its final output and its task's.
    assert result["truncated"] is True and result["original_bytes"] > 60 * KIB
    assert len(orjson.dumps(result["raw"])) <= 16 * KIB
    assert "e" * 1000 in result["raw"]
    [task] = result["tasks"]
    assert task["truncated"] is True and task["original_bytes"] > 60 * KIB
    assert len(orjson.dumps(task["raw"])) <= 16 * KIB
    status, page, _ = await own_stack.request(
        "GET", f"/v1/jobs/{job['id']}/events", params={"limit": "100"}
    )
    assert status == 200, page
    by_type = {e["type"]: e for e in page["data"]}
    assert by_type["task.completed"]["data"]["task"]["truncated"] is True
    # The outcome event carries both outputs, more than an event holds: cut, and marked.
    completed = by_type["job.completed"]
    assert completed["truncated"] is True and completed["original_bytes"] > 32 * KIB
    assert len(orjson.dumps(completed["data"])) <= 20 * KIB
    assert by_type["job.started"]["truncated"] is False


async def test_a_list_of_large_jobs_answers_within_its_byte_budget(own_stack: Platform) -> None:
    budget = 256 * KIB
    # No worker: the jobs stay pending, as large as a submission may make them.
    await own_stack.start_api(CREWQ_API_MAX_PAGE_BYTES=str(budget))
    made = [
        (await own_stack.submit("echo", {"message": f"{i:02d}" + "l" * 62 * KIB}))["id"]
        for i in range(10)
    ]
    assert own_stack.http is not None
    seen: list[str] = []
    pages: list[int] = []
    cursor: str | None = None
    while True:
        params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
        async with own_stack.http.get(
            "/v1/jobs", params=params, headers=own_stack.headers()
        ) as resp:
            assert resp.status == 200
            raw = await resp.read()
        assert len(raw) <= budget
        page = orjson.loads(raw)
        pages.append(len(page["data"]))
        seen += [j["id"] for j in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == made[::-1] and max(pages) < 10 and len(pages) >= 3
    # A batch read of them all stops at the same budget and names the ones left out.
    status, batch, _ = await own_stack.request("POST", "/v1/jobs/batch", json={"ids": made})
    assert status == 200
    assert 1 <= len(batch["data"]) < 10
    assert [j["id"] for j in batch["data"]] + batch["omitted"] == made
