"""Per-model limits shared by every worker (issue 22), with real processes: an operator
limits the model with `crewq models set`, two workers run more jobs than a minute allows,
and the (fake) provider never sees more than the limit in any 60 seconds, while every job
completes, having waited (`llm.throttled`) rather than failed."""

import asyncio
import sys
import time

import orjson
import pytest

from tests.fakes import FakeLLM
from tests.harness import ROOT, Platform

pytestmark = pytest.mark.slow

MODEL = "openai/gpt-4o-mini"  # what the platform's crews run on (OPENAI_* set, no CREWQ_LLM_MODEL)
RPM = 20
JOBS = 30  # an echo job is one model call: half a minute's limit more than a minute allows


def _most_in_any_minute(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + 60) for i, start in enumerate(times))


async def _crewq(stack: Platform, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crewq",
        *args,
        env=stack.env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()
    return out.decode()


async def test_two_workers_never_exceed_the_models_limit(own_stack: Platform, llm: FakeLLM) -> None:
    stack = own_stack
    assert f"{MODEL}: {RPM} requests/min" in await _crewq(
        stack, "models", "set", MODEL, "--rpm", str(RPM)
    )
    assert f"{MODEL}: {RPM} requests/min, unlimited tokens/min (crewq models set)" in (
        await _crewq(stack, "models", "list")
    )
    await stack.start_api()
    for _ in range(2):
        await stack.start_worker()
    first = len(llm.requests)
    tag = f"limited{time.time_ns()}"
    jobs = [await stack.submit("echo", {"message": f"{tag} {n}"}) for n in range(JOBS)]
    done = [
        await stack.wait_for_status(job["id"], {"completed", "failed"}, timeout=150) for job in jobs
    ]
    assert [job["status"] for job in done] == ["completed"] * JOBS
    calls = [r.at for r in llm.requests[first:] if tag in r.text]
    assert len(calls) >= JOBS
    assert _most_in_any_minute(calls) <= RPM
    # The calls past the first minute's limit waited for it, and said so.
    conn = await stack.db()
    try:
        throttled = await conn.fetch(
            "SELECT payload FROM events WHERE type = 'llm.throttled' ORDER BY id"
        )
    finally:
        await conn.close()
    # Not one event per call past the limit: on a loaded machine a later job's call may come
    # once the window has rolled on, and need not wait. Some did wait, for most of a minute.
    assert throttled
    data = [orjson.loads(r["payload"])["data"] for r in throttled]
    assert {d["model"] for d in data} == {MODEL}
    assert max(d["waited_ms"] for d in data) > 10_000  # some waited most of a minute
    assert max(calls) - min(calls) >= 60  # the limit held them to a second minute
