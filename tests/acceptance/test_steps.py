"""Every CrewAI step of a job as a live event: tasks started and finished, tools and models
called, the job's progress and running token usage, and who receives them."""

import asyncio
from datetime import datetime
from typing import Any

import orjson

from shared.domain.crews import CrewRegistry
from shared.runtime.settings import OFFLINE_MODEL, REPO_CREWS
from tests.acceptance.test_webhooks import register, unique
from tests.fakes import FakeLLM, Receiver
from tests.harness import Platform
from worker.crew.pool import CrewPool, Stopped, TimedOut
from worker.crew.protocol import RunRequest, Step

STEP_TYPES = {"task.started", "task.completed", "tool.completed", "llm.completed"}


async def events_of(platform: Platform, job_id: str) -> list[dict[str, Any]]:
    """The job's events, as stored, in the order they were made."""
    conn = await platform.db()
    try:
        rows = await conn.fetch(
            "SELECT payload FROM events WHERE job_id = $1 ORDER BY created_at, id", job_id
        )
    finally:
        await conn.close()
    return [orjson.loads(r["payload"]) for r in rows]


async def test_a_crews_steps_are_events_with_progress_and_tokens(
    stack: Platform, receiver: Receiver
) -> None:
    key, _, tenant_secret = await stack.new_tenant("steps")
    everything, steps, own = unique("all"), unique("steps"), unique("own")
    all_hook = await register(stack, key, receiver.url(everything), ["*"])
    step_hook = await register(
        stack, key, receiver.url(steps), ["task.started", "tool.completed", "llm.completed"]
    )
    receiver.configure(everything, secrets=[all_hook["secret"]])
    receiver.configure(steps, secrets=[step_hook["secret"]])
    receiver.configure(own, secrets=[tenant_secret])

    job = await stack.submit("research", {"topic": "tides"}, key=key, webhook_url=receiver.url(own))
    done = await stack.wait_for_status(job["id"], {"completed", "failed"}, key=key)
    assert done["status"] == "completed", done

    found = await events_of(stack, job["id"])
    assert [e["type"] for e in found] == [
        "job.started",
        "task.started",
        "llm.completed",
        "task.completed",
        "task.started",
        "llm.completed",
        "task.completed",
        "job.completed",
    ]
    started = [e["data"] for e in found if e["type"] == "task.started"]
    assert [(s["task"], s["index"], s["total_tasks"]) for s in started] == [
        ("research_task", 1, 2),
        ("report_task", 2, 2),
    ]
    llm_calls = [e["data"] for e in found if e["type"] == "llm.completed"]
    assert [c["task"] for c in llm_calls] == ["research_task", "report_task"]
    # The fake provider reports 11 prompt and 7 completion tokens a call.
    assert all(
        (c["model"], c["prompt_tokens"], c["completion_tokens"]) == ("gpt-4o-mini", 11, 7)
        for c in llm_calls
    ), llm_calls
    assert all(c["duration_ms"] >= 0 and c["error"] is None for c in llm_calls)
    assert all(e["data"]["job_id"] == job["id"] for e in found if e["type"] in STEP_TYPES)

    assert done["progress"] == {"completed_tasks": 2, "total_tasks": 2, "current_task": None}
    assert done["token_usage"]["prompt_tokens"] == 22
    assert done["token_usage"]["completion_tokens"] == 14

    # Step events go to the endpoint that named them; `*` and the job's own URL get none.
    got_steps = await receiver.wait_for(steps, 4)
    assert sorted(r.event["type"] for r in got_steps) == [
        "llm.completed",
        "llm.completed",
        "task.started",
        "task.started",
    ]
    assert all(r.verified for r in got_steps)
    got_all = await receiver.wait_for(everything, 4)
    assert sorted(r.event["type"] for r in got_all) == [
        "job.completed",
        "job.started",
        "task.completed",
        "task.completed",
    ]
    [only] = await receiver.wait_for(own, 1)
    assert only.event["type"] == "job.completed"
    await asyncio.sleep(0.5)  # nothing more arrives
    assert len(receiver.at(own)) == 1 and len(receiver.at(steps)) == 4


async def test_progress_shows_the_running_task(stack: Platform) -> None:
    job = await stack.submit("echo", {"message": "[[sleep:3]] progress"})
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        state = await stack.job(job["id"])
        if state["progress"] is not None:
            break
        assert asyncio.get_running_loop().time() < deadline, state
        await asyncio.sleep(0.05)
    assert state["status"] == "running"
    assert state["progress"] == {"completed_tasks": 0, "total_tasks": 1, "current_task": "reply"}
    done = await stack.wait_for_status(job["id"], {"completed"})
    assert done["progress"]["completed_tasks"] == 1


async def test_a_tool_call_is_an_event_with_its_input_and_output(
    stack: Platform, llm: FakeLLM
) -> None:
    job = await stack.submit("counter", {"text": "one two three four"})
    done = await stack.wait_for_status(job["id"], {"completed", "failed"})
    assert done["status"] == "completed", done
    [call] = [e["data"] for e in await events_of(stack, job["id"]) if e["type"] == "tool.completed"]
    assert call["tool"] == "count_words" and call["agent"] == "Counter"
    assert "one two three four" in call["input"]["text"]
    assert call["output"].endswith(" words") and call["error"] is None
    assert call["task"] and call["duration_ms"] >= 0


def _interval(job: dict[str, Any]) -> tuple[datetime, datetime]:
    [attempt] = job["attempts"]
    return datetime.fromisoformat(attempt["started_at"]), datetime.fromisoformat(
        attempt["finished_at"]
    )


async def test_concurrent_jobs_in_one_worker_never_mix_their_steps(stack: Platform) -> None:
    """crewAI #2991: CrewAI's event bus is process-wide. Two jobs running at once in one
    worker (each in its own crew process) must each see only their own steps."""
    research = await stack.submit("research", {"topic": "[[sleep:1]] mixing-a"})
    echo = await stack.submit("echo", {"message": "[[sleep:1]] mixing-b"})
    first = await stack.wait_for_status(research["id"], {"completed", "failed"})
    second = await stack.wait_for_status(echo["id"], {"completed", "failed"})
    assert first["status"] == second["status"] == "completed"
    (a_start, a_end), (b_start, b_end) = _interval(first), _interval(second)
    assert a_start < b_end and b_start < a_end, "the two jobs did not run at the same time"

    for job, tasks, calls in ((first, {"research_task", "report_task"}, 2), (second, {"reply"}, 1)):
        steps = [e for e in await events_of(stack, job["id"]) if e["type"] in STEP_TYPES]
        assert {e["data"]["job_id"] for e in steps} == {job["id"]}
        named = {e["data"]["task"] for e in steps if e["type"] != "task.completed"}
        named |= {e["data"]["task"]["name"] for e in steps if e["type"] == "task.completed"}
        assert named == tasks
        assert len([e for e in steps if e["type"] == "llm.completed"]) == calls
        assert len([e for e in steps if e["type"] == "task.started"]) == len(tasks)


async def test_steps_slow_to_record_never_hold_off_a_timeout_or_a_stop() -> None:
    """Each step is a database write in the worker; with the database slow or away, a crew
    must still be stopped at its timeout (or on a cancel), not after every step is written."""
    spec = CrewRegistry.load([REPO_CREWS]).get("research")
    assert spec is not None
    pool = CrewPool(1, max_jobs=10, max_rss_mb=2048)
    await pool.start()
    recorded: list[Step] = []

    async def stuck(step: Step) -> None:
        recorded.append(step)
        await asyncio.sleep(3600)  # a write that never comes back

    def request(job_id: str) -> RunRequest:
        return RunRequest(job_id, "ten_x", spec, {"topic": "t"}, OFFLINE_MODEL, 1, 1.0)

    try:
        async with pool.slots:
            outcome = await pool.run(
                request("job_timeout"), timeout=1, stop=asyncio.Event(), on_step=stuck
            )
        assert isinstance(outcome, TimedOut) and len(recorded) == 1
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        async with pool.slots:
            outcome = await pool.run(request("job_stop"), timeout=60, stop=stop, on_step=stuck)
        assert isinstance(outcome, Stopped) and len(recorded) == 2
    finally:
        await pool.close()
