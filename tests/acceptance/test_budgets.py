"""Budgets (issue 22), with real processes and the fake LLM on loopback reporting token
usage: the call that would go past a job's budget is never sent, the job fails
BUDGET_EXCEEDED keeping its finished tasks, and a retry with a larger budget resumes it."""

import time
from typing import Any

import pytest

from tests.fakes import FakeLLM
from tests.harness import Platform

pytestmark = pytest.mark.slow

STEP = "Current Task: Quartet step {} with {}"
STEPS = ("one", "two", "three", "four")


def _calls(llm: FakeLLM, word: str) -> list[int]:
    return [len(llm.requests_with(STEP.format(n, word))) for n in STEPS]


async def _over_budget_then_resumed(
    stack: Platform, llm: FakeLLM, word: str, budget: dict[str, Any], larger: dict[str, Any]
) -> dict[str, Any]:
    job = await stack.submit("quartet", {"word": word}, budget=budget)
    failed = await stack.wait_for_status(job["id"], {"failed", "completed"}, timeout=60)
    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == "BUDGET_EXCEEDED", failed["error"]
    # Exactly two calls reached the LLM server; the third was never sent.
    assert _calls(llm, word) == [1, 1, 0, 0]
    assert [a["outcome"] for a in failed["attempts"]] == ["failed"]  # not retried
    assert failed["usage"]["llm_calls"] == 2
    assert set(failed["usage"]["tasks"]) == {"one", "two"}

    status, retried, _ = await stack.request(
        "POST", f"/v1/jobs/{job['id']}/retry", json={"budget": larger}
    )
    assert status == 202, retried
    set_limits = {name: v for name, v in retried["budget"].items() if v is not None}
    assert set_limits == {**budget, **larger}
    done = await stack.wait_for_status(job["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done
    # The finished tasks were not run again.
    assert _calls(llm, word) == [1, 1, 1, 1]
    assert done["attempts"][-1]["resumed_from"] == "two"
    assert done["usage"]["llm_calls"] == 4 and set(done["usage"]["tasks"]) == set(STEPS)
    return done


async def test_a_job_stops_before_the_call_past_its_budget_and_resumes_with_a_larger_one(
    own_stack: Platform, llm: FakeLLM
) -> None:
    stack = own_stack
    await stack.start_api()
    await stack.start_worker()

    calls = await _over_budget_then_resumed(
        stack, llm, f"calls{time.time_ns()}", {"max_llm_calls": 2}, {"max_llm_calls": 10}
    )
    assert calls["usage"]["total_tokens"] == 4 * 18  # the fake reports 11 + 7 a call

    # Tokens: each call reports 500 prompt tokens ([[usage:500]]); the next call's prompt is
    # estimated at a hundred or two, so after two calls (1,014 spent) the third would pass
    # 1,050, and after one (507) the second would not.
    word = f"tokens{time.time_ns()} [[usage:500]]"
    tokens = await _over_budget_then_resumed(
        stack, llm, word, {"max_tokens": 1050}, {"max_tokens": 100_000}
    )
    assert tokens["usage"]["total_tokens"] == 4 * 507

    # Cost: gpt-4o-mini at LiteLLM's price, 507 tokens a call is about $0.000079: two cost
    # $0.000158, and the third's prompt alone would take the job past $0.00017.
    word = f"cost{time.time_ns()} [[usage:500]]"
    cost = await _over_budget_then_resumed(
        stack, llm, word, {"max_cost_usd": 0.00017}, {"max_cost_usd": 1.0}
    )
    assert 0.0003 < cost["usage"]["cost_usd"] < 0.00035, cost["usage"]


async def test_the_platform_s_budget_applies_when_the_job_and_crew_set_none(
    own_stack: Platform, llm: FakeLLM
) -> None:
    stack = own_stack
    word = f"platform{time.time_ns()}"
    # The platform's default applies to a job with none (its crew sets none).
    await stack.start_api(CREWQ_JOB_MAX_LLM_CALLS="3")
    await stack.start_worker(CREWQ_JOB_MAX_LLM_CALLS="3")
    job = await stack.submit("quartet", {"word": word})
    assert job["budget"] == {"max_tokens": None, "max_cost_usd": None, "max_llm_calls": 3}
    failed = await stack.wait_for_status(job["id"], {"failed", "completed"}, timeout=60)
    assert failed["error"]["code"] == "BUDGET_EXCEEDED"
    assert _calls(llm, word) == [1, 1, 1, 0]
    # A negative budget is refused, naming the field.
    refused = {"crew": "quartet", "inputs": {"word": "x"}, "budget": {"max_tokens": -1}}
    status, body, _ = await stack.request("POST", "/v1/jobs", json=refused)
    assert status == 400 and "budget" in body["error"]["message"], body
