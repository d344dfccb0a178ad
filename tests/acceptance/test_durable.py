"""Crews that survive and wait (issue 21), with real processes, real Postgres, real CrewAI
and the fake OpenAI-compatible LLM on loopback: a crew killed or timed out in its third task
resumes after its second without paying for the first two again; a task asking for a person
frees its worker, waits, and resumes with their answer."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tests.fakes import FakeLLM, Receiver
from tests.harness import Platform, Process, eventually

pytestmark = pytest.mark.slow

LEG = "Current Task: Relay leg {}"


def _legs(llm: FakeLLM, baton: str) -> list[int]:
    """How many model requests each of the relay's three tasks made for this baton."""
    return [
        len([r for r in llm.requests_with(LEG.format(n)) if baton in r.text])
        for n in ("one", "two", "three")
    ]


def _owner(workers: list[Process], worker_id: str) -> Process:
    return next(w for w in workers if f"-{w.pid}-" in worker_id)


async def _checkpoints(stack: Platform, job_id: str) -> list[dict[str, Any]]:
    conn = await stack.db()
    try:
        rows = await conn.fetch(
            "SELECT attempt, tasks_done, task, awaiting, sealed, bytes FROM job_checkpoints"
            " WHERE job_id = $1 ORDER BY id",
            job_id,
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def test_a_crew_killed_in_its_third_task_resumes_after_its_second(
    own_stack: Platform, llm: FakeLLM
) -> None:
    stack = own_stack
    await stack.start_api()
    workers = [await stack.start_worker(), await stack.start_worker()]
    baton = f"batonkill{time.time_ns()}"
    # The third leg's first model call hangs: the worker running it is killed meanwhile.
    job = await stack.submit(
        "relay", {"baton": baton, "third": f"[[sleep-first:60:{baton}]]"}, max_retries=2
    )
    await eventually(
        lambda: asyncio.sleep(0, _legs(llm, baton)[2] == 1), timeout=60, what="third leg"
    )
    stored = await _checkpoints(stack, job["id"])
    assert [(c["attempt"], c["tasks_done"], c["task"]) for c in stored] == [
        (1, 1, "first"),
        (1, 2, "second"),
    ]
    # Sealed: neither the provider key nor a task's words are in the stored bytes, sealed
    # or opened (the state holds outputs and messages, never an LLM object).
    key = stack.env["OPENAI_API_KEY"].encode()
    for checkpoint in stored:
        sealed = bytes(checkpoint["sealed"])
        assert key not in sealed and baton.encode() not in sealed
        opened = stack.checkpoint_box.open_bytes(sealed)
        assert key not in opened and baton.encode() in opened
        assert len(opened) == checkpoint["bytes"]
    running = await stack.job(job["id"])
    victim = _owner(workers, running["worker_id"])
    victim.kill()
    done = await stack.wait_for_status(job["id"], {"completed", "failed"}, timeout=90)
    assert done["status"] == "completed", done
    # Legs one and two were paid for once; the third twice (the killed call, then its own).
    assert _legs(llm, baton) == [1, 1, 2]
    assert [a["outcome"] for a in done["attempts"]] == ["lost", "completed"]
    assert [a["resumed_from"] for a in done["attempts"]] == [None, "second"]
    assert [t["name"] for t in done["result"]["tasks"]] == ["first", "second", "third"]
    assert baton in done["result"]["tasks"][0]["raw"]
    events = await stack.job_events(job["id"])
    assert events.count("job.resumed") == 1
    assert events.index("job.resumed") > events.index("job.retrying")
    # Completed: nothing resumes it, so its checkpoints are gone.
    assert await _checkpoints(stack, job["id"]) == []


async def test_a_timed_out_crew_retried_resumes_after_its_last_finished_task(
    own_stack: Platform, llm: FakeLLM
) -> None:
    stack = own_stack
    await stack.start_api()
    await stack.start_worker()
    baton = f"batontimeout{time.time_ns()}"
    job = await stack.submit(
        "relay", {"baton": baton, "third": f"[[sleep-first:60:{baton}]]"}, timeout=8
    )
    failed = await stack.wait_for_status(job["id"], {"failed", "completed"}, timeout=60)
    assert failed["error"]["code"] == "TIMEOUT"
    assert _legs(llm, baton) == [1, 1, 1]

    status, retried, _ = await stack.request("POST", f"/v1/jobs/{job['id']}/retry")
    assert status == 202, retried
    done = await stack.wait_for_status(job["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done
    assert _legs(llm, baton) == [1, 1, 2]
    assert done["attempts"][-1]["resumed_from"] == "second"

    # From the start, on request: every leg again.
    baton2 = f"batonstart{time.time_ns()}"
    job2 = await stack.submit("relay", {"baton": baton2, "third": "go"})
    await stack.wait_for_status(job2["id"], {"completed"}, timeout=60)
    status, cancelled, _ = await stack.request("POST", f"/v1/jobs/{job2['id']}/retry")
    assert status == 409, cancelled  # completed jobs are not retried
    job3 = await stack.submit(
        "relay", {"baton": baton2 + "x", "third": f"[[sleep-first:60:{baton2}x]]"}, timeout=8
    )
    await stack.wait_for_status(job3["id"], {"failed"}, timeout=60)
    status, _, _ = await stack.request(
        "POST", f"/v1/jobs/{job3['id']}/retry", json={"from": "start"}
    )
    assert status == 202
    again = await stack.wait_for_status(job3["id"], {"completed", "failed"}, timeout=60)
    assert again["status"] == "completed" and again["attempts"][-1]["resumed_from"] is None
    assert _legs(llm, baton2 + "x") == [2, 2, 2]


async def _answer(stack: Platform, job_id: str, **body: Any) -> tuple[int, Any]:
    status, answer, _ = await stack.request("POST", f"/v1/jobs/{job_id}/input", json=body)
    return status, answer


async def test_a_task_asking_a_person_frees_its_worker_and_resumes_with_the_answer(
    own_stack: Platform, llm: FakeLLM, receiver: Receiver, measure: Callable[[str, float], None]
) -> None:
    stack = own_stack
    await stack.start_api()
    await stack.start_dispatcher()
    await stack.start_worker(CREWQ_WORKER_CONCURRENCY="1")
    topic = f"topic-{time.time_ns()}"
    hook = f"review-{topic}"
    receiver.configure(hook, secrets=[stack.signing_secret])
    job = await stack.submit("review", {"topic": topic}, webhook_url=receiver.url(hook))
    waiting = await stack.wait_for_status(job["id"], {"awaiting_input", "failed"}, timeout=60)
    assert waiting["status"] == "awaiting_input", waiting
    asked = waiting["input_request"]
    assert (asked["task"], asked["task_index"]) == ("polish", 2)
    assert asked["prompt"] == "Is the polished line ready to publish?"
    assert topic in asked["output"] and asked["default_action"] == "fail"
    assert waiting["worker_id"] is None
    assert [a["outcome"] for a in waiting["attempts"]] == ["awaiting_input"]
    [webhook] = await receiver.wait_for(hook, 1)
    assert webhook.verified and webhook.event["type"] == "job.input_required"
    assert webhook.event["data"]["input_request"]["task"] == "polish"

    # The one-slot worker is free: another job runs while this one waits.
    other = await stack.submit("echo", {"message": f"meanwhile {topic}"})
    assert (await stack.wait_for_status(other["id"], {"completed"}, timeout=60))["attempt"] == 1
    assert (await stack.job(job["id"]))["status"] == "awaiting_input"

    # Refused: feedback past 10,000 characters; then a rejection with feedback.
    status, refused = await _answer(stack, job["id"], feedback="x" * 10_001, approve=False)
    assert status == 400 and refused["error"]["request_id"], refused
    feedback = f"mention zebras-{topic}"
    polish_calls = len(llm.requests_with(f"Polish the draft about {topic}"))
    answered_at = time.monotonic()
    status, answered = await _answer(stack, job["id"], feedback=feedback, approve=False)
    assert status == 202 and answered["status"] in ("pending", "running"), answered
    status, second = await _answer(stack, job["id"], feedback="again", approve=True)
    assert status == 409 and second["error"]["code"] == "JOB_NOT_AWAITING_INPUT"
    await eventually(
        lambda: asyncio.sleep(0, llm.requests_with(feedback)), timeout=60, what="feedback"
    )
    measure("answer to the resumed crew's first LLM request", time.monotonic() - answered_at)
    # The draft was not written again; the polish went on from the reviewed conversation.
    assert len(llm.requests_with(f"Draft a line about {topic}")) == polish_calls
    again = await stack.wait_for_status(job["id"], {"awaiting_input", "failed"}, timeout=60)
    assert again["status"] == "awaiting_input", again
    assert again["attempts"][-1]["resumed_from"] == "draft"

    status, _ = await _answer(stack, job["id"], approve=True)
    assert status == 202
    done = await stack.wait_for_status(job["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done
    assert done["result"]["tasks"][1]["raw"] == again["input_request"]["output"]
    assert done["input_request"] is None
    events = await stack.job_events(job["id"])
    assert events.count("job.input_required") == 2 and events.count("job.input_received") == 2
    # The approved answer is reported as the task's completion, as any finished task is.
    status, page, _ = await stack.request("GET", f"/v1/jobs/{job['id']}/events?limit=100")
    completed = [e["data"]["task"] for e in page["data"] if e["type"] == "task.completed"]
    assert [t["name"] for t in completed] == ["draft", "polish"]
    assert completed[1]["raw"] == again["input_request"]["output"]


async def test_an_unanswered_request_takes_its_default_and_a_waiting_job_can_be_cancelled(
    own_stack: Platform,
) -> None:
    stack = own_stack
    await stack.start_api()
    await stack.start_worker()
    topic = f"timeout-{time.time_ns()}"
    approve = await stack.submit(
        "review", {"topic": topic}, input_timeout=1, input_default="approve"
    )
    fail = await stack.submit("review", {"topic": topic + "f"}, input_timeout=1)
    cancel = await stack.submit("review", {"topic": topic + "c"})

    done = await stack.wait_for_status(approve["id"], {"completed", "failed"}, timeout=90)
    assert done["status"] == "completed", done
    failed = await stack.wait_for_status(fail["id"], {"failed", "completed"}, timeout=90)
    # The crew's default (crew.yaml: fail) when the job names none.
    assert failed["error"]["code"] == "INPUT_TIMEOUT", failed

    await stack.wait_for_status(cancel["id"], {"awaiting_input"}, timeout=60)
    status, cancelled, _ = await stack.request("POST", f"/v1/jobs/{cancel['id']}/cancel")
    assert status == 200 and cancelled["status"] == "cancelled", cancelled
    assert cancelled["input_request"] is None
    status, _ = await _answer(stack, cancel["id"], approve=True)
    assert status == 409
    payload = orjson.dumps(cancelled)
    assert b"awaiting_input" in payload  # its attempt ended awaiting input


async def test_a_flow_runs_as_a_job_and_a_flow_asking_a_person_pauses_and_resumes(
    own_stack: Platform, llm: FakeLLM
) -> None:
    stack = own_stack
    await stack.start_api()
    await stack.start_worker()
    status, crews, _ = await stack.request("GET", "/v1/crews")
    kinds = {c["name"]: c["kind"] for c in crews["data"]}
    assert kinds["tally"] == kinds["brief"] == "flow" and kinds["echo"] == "yaml"

    word = f"word{time.time_ns()}"
    job = await stack.submit("tally", {"word": word})
    done = await stack.wait_for_status(job["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done
    assert [t["name"] for t in done["result"]["tasks"]] == ["say", "count"]
    said = done["result"]["tasks"][0]["raw"]  # the model's answer, as the first method kept it
    assert f"fake-llm says: Say the word {word}" in said
    assert done["result"]["structured"] == {"letters": len(said), "words": len(said.split())}
    status, events, _ = await stack.request("GET", f"/v1/jobs/{job['id']}/events")
    assert status == 200, events
    steps = [(e["type"], e["data"].get("task", {})) for e in events["data"]]
    assert [t for t, _ in steps] == [
        "job.started",
        "task.started",
        "llm.completed",
        "task.completed",
        "task.started",
        "task.completed",
        "job.completed",
    ]
    assert [e["data"]["task"] for e in events["data"] if e["type"] == "task.started"] == [
        "say",
        "count",
    ]

    topic = f"flowtopic{time.time_ns()}"
    brief = await stack.submit("brief", {"topic": topic})
    waiting = await stack.wait_for_status(brief["id"], {"awaiting_input", "failed"}, timeout=60)
    assert waiting["status"] == "awaiting_input", waiting
    asked = waiting["input_request"]
    assert asked["task"] == "review" and asked["prompt"].startswith("Is this outline right")
    assert f"Outline a one-paragraph brief about {topic}" in asked["output"]
    # Its @persist state went to Postgres with the pause, sealed.
    [pause] = [c for c in await _checkpoints(stack, brief["id"]) if c["awaiting"]]
    assert topic.encode() not in bytes(pause["sealed"])

    feedback = f"keep it short {topic}"
    status, _ = await _answer(stack, brief["id"], feedback=feedback, approve=True)
    assert status == 202
    done = await stack.wait_for_status(brief["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done
    assert llm.requests_with(f"The reviewer said: {feedback}")
    assert f"Write the brief about {topic}" in done["result"]["raw"]
    assert done["attempts"][-1]["resumed_from"] == "outline"
    # The outline was written once: the resume took it from the flow's state.
    assert len(llm.requests_with(f"Current Task: Outline a one-paragraph brief about {topic}")) == 1
