"""`crewq bench --only durable`: what checkpoints cost and save (issue 21).

A three-task crew (tests/crews/relay) is killed in its third task and resumed by another
worker: the size of each checkpoint, the time to seal and store one (the worker's
`crewq_checkpoint_write_seconds`), and the model requests and tokens the resume did not
spend again. Then a task asking a person (tests/crews/review): the time from the answer to
the resumed crew's first model request.
"""

import asyncio
import re
import time
import uuid
from typing import TYPE_CHECKING

import aiohttp
import orjson

from crewq.embedded import free_port
from tests.harness import Platform, Process

if TYPE_CHECKING:
    from benchmarks.suite import Bench

SCENARIO = "durable"


async def _scrape(port: int, name: str) -> float:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    found = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def kill_and_resume(bench: "Bench", platform: Platform) -> None:
    ports = [free_port(), free_port()]
    workers: list[Process] = [
        await platform.start_worker(CREWQ_METRICS_PORT=str(port)) for port in ports
    ]
    baton = f"bench{uuid.uuid4().hex[:10]}"
    job = await platform.submit(
        "relay", {"baton": baton, "third": f"[[sleep-first:60:{baton}]]"}, max_retries=2
    )
    third = f"Current Task: Relay leg three with {baton}"
    while not bench.llm.requests_with(third):
        await asyncio.sleep(0.02)
    conn = await platform.db()
    try:
        stored = await conn.fetch(
            "SELECT tasks_done, bytes FROM job_checkpoints WHERE job_id = $1 ORDER BY id",
            job["id"],
        )
        running = await platform.job(job["id"])
        index = next(i for i, w in enumerate(workers) if f"-{w.pid}-" in running["worker_id"])
        written = await _scrape(ports[index], "crewq_checkpoint_write_seconds_sum")
        count = await _scrape(ports[index], "crewq_checkpoint_write_seconds_count")
        workers[index].kill()
        await platform.wait_for_status(job["id"], {"completed", "failed"}, timeout=120)
        spent = await conn.fetch(
            "SELECT payload->'data' AS data FROM events WHERE job_id = $1"
            " AND type = 'llm.completed'",
            job["id"],
        )
    finally:
        await conn.close()
    for row in stored:
        bench.record(
            SCENARIO, f"checkpoint after task {row['tasks_done']} of 3", "bytes", row["bytes"]
        )
    if count:
        bench.record(SCENARIO, "checkpoint seal + store, mean", "ms", written / count * 1000)
    # What the killed attempt spent on the two tasks the resume skipped.
    tokens = requests = 0
    for row in spent:
        data = orjson.loads(row["data"]) if isinstance(row["data"], str) else row["data"]
        if data["attempt"] == 1 and data["task"] in ("first", "second"):
            requests += 1
            tokens += data["prompt_tokens"] + data["completion_tokens"]
    bench.record(SCENARIO, "model requests the resume did not repeat", "requests", requests)
    bench.record(SCENARIO, "tokens the resume did not spend again", "tokens", tokens)


async def answer_to_first_request(bench: "Bench", platform: Platform) -> None:
    topic = f"bench{uuid.uuid4().hex[:10]}"
    job = await platform.submit("review", {"topic": topic})
    await platform.wait_for_status(job["id"], {"awaiting_input"}, timeout=120)
    feedback = f"feedback-{topic}"
    answered = time.time()
    status, body, _ = await platform.request(
        "POST", f"/v1/jobs/{job['id']}/input", json={"approve": False, "feedback": feedback}
    )
    assert status == 202, body
    while not bench.llm.requests_with(feedback):
        await asyncio.sleep(0.002)
    first = bench.llm.requests_with(feedback)[0].at
    bench.record(
        SCENARIO,
        "answer -> the resumed crew's first model request",
        "ms",
        (first - answered) * 1000,
    )


async def durable(bench: "Bench") -> None:
    platform = await bench.platform()
    try:
        await platform.start_api()
        await kill_and_resume(bench, platform)
        await answer_to_first_request(bench, platform)
    finally:
        await platform.close()
