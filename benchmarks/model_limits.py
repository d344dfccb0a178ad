"""`crewq bench --only model-limits`: what the shared per-model limiter costs each LLM call
(issue 22): the acquire round trip when no call has to wait (worker/crew/model_limits.py,
one Lua script in Redis), beside a bare PING on the same connection.

Measured with the crew process's own synchronous client, so the numbers are what a crew's
model call pays before it is sent: for a model with no limit (the shared pause is still
checked), a requests-a-minute limit, and requests and tokens (reserve, then settle: two
round trips), with up to `CALLS` calls in the window (the window's token total is kept beside
it, so this cost does not grow with them).
"""

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis

from shared.runtime.model_limits import ModelLimit
from worker.crew.model_limits import Limiter

if TYPE_CHECKING:
    from benchmarks.suite import Bench

SCENARIO = "model-limits"
CALLS = 1000
HIGH = 1_000_000_000  # limits no call reaches: nothing waits


def _per_call_us(calls: int, one: Callable[[], object]) -> float:
    for _ in range(50):  # the script loaded, the connection open
        one()
    started = time.perf_counter()
    for _ in range(calls):
        one()
    return (time.perf_counter() - started) / calls * 1e6


def _measure(url: str) -> dict[str, float]:
    limiter = Limiter(url)
    limiter.begin(
        {
            "bench/rpm": ModelLimit(rpm=HIGH),
            "bench/rpm-tpm": ModelLimit(rpm=HIGH, tpm=HIGH),
        },
        lambda step: None,
    )
    client = redis.Redis.from_url(url)
    prompt = "x" * 4000

    def with_tokens() -> None:
        limiter.settle(limiter.acquire("bench/rpm-tpm", prompt), 900)

    results = {
        "PING round trip (reference)": _per_call_us(CALLS, client.ping),
        "acquire, model without limits": _per_call_us(
            CALLS, lambda: limiter.acquire("bench/none", prompt)
        ),
        "acquire, requests/min limit": _per_call_us(
            CALLS, lambda: limiter.acquire("bench/rpm", prompt)
        ),
        "acquire + settle, requests and tokens/min": (_per_call_us(CALLS, with_tokens)),
    }
    client.close()
    return results


async def model_limits(bench: "Bench") -> None:
    url = bench.redis_url()
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    for what, value in (await asyncio.to_thread(_measure, url)).items():
        bench.record(SCENARIO, what, "µs", value)
