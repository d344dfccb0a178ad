"""CrewAI AMP's per-crew API end to end (docs/amp.md): a client written as CrewAI's own
(crewai-tools' InvokeCrewAIAutomationTool, Semantic Kernel's CrewAI plugin) speaks raw HTTP
to `/amp/{crew}`, and receivers check AMP's webhook payloads and crewq's signatures."""

import asyncio
import time
import uuid
from typing import Any

import aiohttp

from tests.fakes import Receiver
from tests.harness import Platform


class AmpClient:
    """What an AMP client does: a base URL per crew, a bearer token, JSON both ways."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None) -> None:
        self.session, self.base = session, base
        self.headers = {"Content-Type": "application/json"}
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(
            method, f"{self.base}{path}", json=body, headers=self.headers
        ) as resp:
            return resp.status, await resp.json()

    async def status_until(self, kickoff_id: str, wanted: set[str], timeout: float = 90) -> Any:
        """Poll as crewai-tools does (its `state`, lower-cased), until one of `wanted`."""
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            status, body = await self.call("GET", f"/status/{kickoff_id}")
            assert status == 200, body
            if body["state"].lower() in wanted or body["status"] in wanted:
                return body
            await asyncio.sleep(0.2)
        raise AssertionError(f"{kickoff_id} never reached {wanted}: {body}")


async def _hooks_until(
    receiver: Receiver, hook: str, wanted: int, status: str, timeout: float = 60
) -> list[dict[str, Any]]:
    """The task webhook payloads at `hook` once `wanted` of them have `status` (receivers
    may get concurrent deliveries in any order)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [r for r in receiver.at(hook) if r.status == 200]
        if sum(1 for r in got if r.event["status"] == status) >= wanted:
            assert all(r.verified for r in got)
            return [r.event for r in got]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{hook}: {[r.body for r in receiver.at(hook)]}")


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_an_amp_client_runs_a_crew_that_asks_a_person(
    stack: Platform, receiver: Receiver
) -> None:
    topic = _name("topic")
    hooks = {kind: _name(f"amp-{kind}") for kind in ("task", "step", "crew", "crew2")}
    for hook in hooks.values():
        receiver.configure(hook, secrets=[stack.signing_secret])
    meta = {"requestId": topic, "source": "web-app"}
    async with aiohttp.ClientSession() as session:
        amp = AmpClient(session, f"{stack.base_url}/amp/review", stack.key)
        assert await amp.call("GET", "/inputs") == (200, {"inputs": ["topic"]})

        status, started = await amp.call(
            "POST",
            "/kickoff",
            {
                "inputs": {"topic": topic},
                "meta": meta,
                "taskWebhookUrl": receiver.url(hooks["task"]),
                "stepWebhookUrl": receiver.url(hooks["step"]),
                "crewWebhookUrl": receiver.url(hooks["crew"]),
            },
        )
        assert status == 200 and list(started) == ["kickoff_id"], started
        kickoff_id = started["kickoff_id"]

        paused = await amp.status_until(kickoff_id, {"pending_human_input", "failed"})
        assert (paused["state"], paused["status"]) == ("PENDING", "pending_human_input"), paused
        asked = paused["pending_human_input"]
        assert asked["task_id"] == "polish" and topic in asked["output"], asked
        assert asked["prompt"] == "Is the polished line ready to publish?"
        assert paused["result"] is None and paused["kickoff_id"] == kickoff_id

        # The served alternate path answers the same.
        status, same = await amp.call("GET", f"/{kickoff_id}/status")
        assert status == 200 and same["status"] == "pending_human_input", same

        # The task webhook: the draft finished, then the polish asks a person.
        told = await _hooks_until(receiver, hooks["task"], 1, "pending_human_input")
        [draft] = [t for t in told if t["task_id"] == "draft"]
        [polish] = [t for t in told if t["status"] == "pending_human_input"]
        assert draft == {
            "description": f"Draft a line about {topic}",
            "name": "draft",
            "expected_output": "One sentence.",
            "summary": f"Draft a line about {topic}...",
            "agent": "Writer",
            "output": draft["output"],
            "output_json": None,
            "kickoff_id": kickoff_id,
            "meta": meta,
            "task_id": "draft",
            "status": "completed",
            "execution_id": kickoff_id,
            "prompt": None,
        }
        assert draft["output"]
        assert (polish["task_id"], polish["output"]) == ("polish", asked["output"])
        assert polish["prompt"] == asked["prompt"] and polish["meta"] == meta
        assert polish["kickoff_id"] == polish["execution_id"] == kickoff_id
        steps = await receiver.wait_for(hooks["step"], 1)
        assert steps[0].verified, steps[0]
        step = steps[0].event
        assert set(step) >= {"prompt", "thought", "tool", "tool_input", "result"}, step
        assert (step["kickoff_id"], step["meta"], step["step_type"]) == (kickoff_id, meta, "llm")

        # Refused: another task than the one waiting; feedback past crewq's bound.
        resume = {"execution_id": kickoff_id, "human_feedback": "more zebras"}
        status, wrong = await amp.call(
            "POST", "/resume", {**resume, "task_id": "draft", "is_approve": True}
        )
        assert status == 400 and wrong["error"]["code"] == "TASK_NOT_AWAITING_INPUT", wrong
        assert wrong["error"]["request_id"]

        # Rejected with feedback, no webhook URLs given: the kickoff's are kept.
        status, retrying = await amp.call(
            "POST", "/resume", {**resume, "task_id": "polish", "is_approve": False}
        )
        assert (status, retrying["status"]) == (200, "retrying"), retrying
        again = await amp.status_until(kickoff_id, {"pending_human_input", "failed"})
        assert again["status"] == "pending_human_input", again
        await _hooks_until(receiver, hooks["task"], 2, "pending_human_input")

        # Approved, with a new crew webhook URL, which replaces the kickoff's.
        status, resumed = await amp.call(
            "POST",
            "/resume",
            {
                **resume,
                "task_id": "polish",
                "is_approve": True,
                "taskWebhookUrl": None,
                "crewWebhookUrl": receiver.url(hooks["crew2"]),
            },
        )
        assert (status, resumed["status"]) == (200, "resumed"), resumed
        done = await amp.status_until(kickoff_id, {"success", "failed"})
        assert (done["state"], done["status"]) == ("SUCCESS", "completed"), done
        assert done["result"] and done["result"] == done["output"], done
        assert [t["task_id"] for t in done["tasks"]] == ["draft", "polish"]
        assert done["last_executed_task"]["output"] == done["tasks"][-1]["output"]
        assert done["pending_human_input"] is None and done["error"] is None
        assert done["execution_time"] > 0

        status, late = await amp.call(
            "POST", "/resume", {**resume, "task_id": "polish", "is_approve": True}
        )
        assert status == 400 and late["error"]["code"] == "EXECUTION_NOT_AWAITING_INPUT", late

    [crew] = await receiver.wait_for(hooks["crew2"], 1)
    assert crew.verified
    assert crew.event["kickoff_id"] == kickoff_id and crew.event["meta"] == meta
    assert crew.event["result"] == done["result"] and crew.event["result_json"] is None
    usage = crew.event["token_usage"]
    assert {"total_tokens", "prompt_tokens", "completion_tokens"} <= set(usage), usage
    assert (crew.event["state"], crew.event["status"]) == ("SUCCESS", "completed")
    # The task webhook kept the kickoff's URL (`taskWebhookUrl: null` kept it too). The
    # draft was done once (the crew resumed after it); the polish was sent for review twice,
    # and its approved answer stood: reported completed once approved.
    told = [r.event for r in await receiver.wait_for(hooks["task"], 4)]
    assert sorted((t["task_id"], t["status"]) for t in told) == [
        ("draft", "completed"),
        ("polish", "completed"),
        ("polish", "pending_human_input"),
        ("polish", "pending_human_input"),
    ]
    [approved] = [t for t in told if (t["task_id"], t["status"]) == ("polish", "completed")]
    assert approved["output"] == crew.event["result"]
    assert all(t["agent"] == "Writer" for t in told), told
    assert receiver.at(hooks["crew"]) == []


async def test_amp_refusals_keep_crewq_s_error_shape(stack: Platform) -> None:
    reader, _, _ = await stack.new_tenant("amp-reader", ["jobs:read"])
    writer, _, _ = await stack.new_tenant("amp-writer", ["jobs:write"])
    async with aiohttp.ClientSession() as session:
        base = f"{stack.base_url}/amp"
        amp = AmpClient(session, f"{base}/review", stack.key)

        status, body = await AmpClient(session, f"{base}/nope", stack.key).call("GET", "/inputs")
        assert status == 404 and body["error"]["code"] == "CREW_NOT_FOUND", body
        status, body = await AmpClient(session, f"{base}/nope", stack.key).call(
            "POST", "/kickoff", {"inputs": {}}
        )
        assert status == 404 and body["error"]["code"] == "CREW_NOT_FOUND", body

        status, body = await amp.call("POST", "/kickoff", {"inputs": {}})
        assert status == 422 and body["error"]["code"] == "MISSING_INPUTS", body
        assert body["error"]["details"]["missing_inputs"] == ["topic"], body
        status, body = await amp.call("POST", "/kickoff", {"meta": {}})
        assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR", body
        status, body = await amp.call(
            "POST", "/kickoff", {"inputs": {"topic": "x"}, "crewWebhookUrl": "ftp://nowhere"}
        )
        assert status == 422 and body["error"]["code"] == "INVALID_WEBHOOK_URL", body

        status, body = await AmpClient(session, f"{base}/review", None).call("GET", "/inputs")
        assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED", body
        status, body = await AmpClient(session, f"{base}/review", reader).call(
            "POST", "/kickoff", {"inputs": {"topic": "x"}}
        )
        assert status == 403 and body["error"]["code"] == "INSUFFICIENT_SCOPE", body
        status, body = await AmpClient(session, f"{base}/review", writer).call(
            "GET", "/status/job_x"
        )
        assert status == 403 and body["error"]["details"] == {"required_scope": "jobs:read"}

        for path in ("/status/job_nothing", "/job_nothing/status"):
            status, body = await amp.call("GET", path)
            assert status == 404 and body["error"]["code"] == "JOB_NOT_FOUND", body
        status, body = await amp.call(
            "POST",
            "/resume",
            {
                "execution_id": "job_nothing",
                "task_id": "polish",
                "human_feedback": "",
                "is_approve": True,
            },
        )
        assert status == 404 and body["error"]["code"] == "JOB_NOT_FOUND", body

        # Another crew's execution is not this crew's: 404 at this base URL.
        job = await stack.submit("echo", {"message": "hi"})
        status, body = await amp.call("GET", f"/status/{job['id']}")
        assert status == 404, body
        status, body = await AmpClient(session, f"{base}/echo", stack.key).call(
            "GET", f"/status/{job['id']}"
        )
        assert status == 200 and body["kickoff_id"] == job["id"], body
