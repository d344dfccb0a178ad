"""The API's memory while clients list the largest jobs it accepts (issue 19, finding 1).

    uv run python -m benchmarks.page_memory [--jobs 60] [--clients 8] [--rounds 5]

Starts a real platform (embedded Postgres and Redis unless CREWQ_DATABASE_URL /
CREWQ_REDIS_URL are set, the API and one worker on the offline model), submits `--jobs` of
the largest jobs the API accepts, lets the worker run them (the echo crew copies its input
into its result, the largest result a job can get), then has `--clients` concurrent clients
each read `GET /v1/jobs?limit=100` `--rounds` times, sampling the API process's RSS every
10 ms. Prints the RSS before, the peak during and after, and what one answer weighed.

"The largest jobs the API accepts": the audit's body first (one nested 990,000-character
metadata string); when that is refused, inputs filling CREWQ_JOB_MAX_INPUT_BYTES. Run
from a checkout of an older crewq, the same script shows what the audit saw.
"""

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

from tests.harness import Platform, Services

OFFLINE = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
ROOMY = {"CREWQ_TENANT_MAX_PENDING_JOBS": "100000", "CREWQ_TENANT_MAX_RUNNING_JOBS": "100"}
AUDIT_BODY: dict[str, Any] = {
    "crew": "echo",
    "inputs": {"message": "hi"},
    "metadata": {"blob": {"x": "y" * 990_000}},
}
DEFAULT_INPUT_BYTES = 64 * 1024


def largest_accepted(bound: int) -> dict[str, Any]:
    """A body whose inputs and metadata take exactly `bound` bytes as JSON."""
    fixed = len(orjson.dumps({"message": ""})) + len(orjson.dumps({}))
    return {"crew": "echo", "inputs": {"message": "b" * (bound - fixed)}}


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


async def sample_peak(pid: int, stop: asyncio.Event) -> float:
    peak = rss_mb(pid)
    while not stop.is_set():
        peak = max(peak, rss_mb(pid))
        await asyncio.sleep(0.01)
    return max(peak, rss_mb(pid))


async def submit_all(platform: Platform, count: int) -> tuple[str, list[str]]:
    assert platform.http is not None
    headers = platform.headers()
    async with platform.http.post("/v1/jobs", json=AUDIT_BODY, headers=headers) as resp:
        audit_status = resp.status
        first = await resp.json()
    if audit_status == 202:
        body, what = AUDIT_BODY, "the audit's body (990,000-character nested metadata)"
        ids = [first["id"]]
    else:
        body = largest_accepted(DEFAULT_INPUT_BYTES)
        what = f"inputs of {DEFAULT_INPUT_BYTES} bytes (the audit's body: {audit_status})"
        ids = []
    while len(ids) < count:
        async with platform.http.post("/v1/jobs", json=body, headers=headers) as resp:
            answer = await resp.json()
            assert resp.status == 202, answer
            ids.append(answer["id"])
    return what, ids


async def wait_finished(platform: Platform, ids: list[str], timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    left = list(ids)
    while left and time.monotonic() < deadline:
        status, batch, _ = await platform.request("POST", "/v1/jobs/batch", json={"ids": left})
        assert status == 200, batch
        done = {j["id"] for j in batch["data"] if j["status"] in {"completed", "failed"}}
        left = [i for i in left if i not in done]
        await asyncio.sleep(0.5)


async def main(jobs: int, clients: int, rounds: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="crewq-bench-"))
    services = Services(workdir)
    platform = Platform(services, workdir, "", **OFFLINE, **ROOMY)
    try:
        await platform.prepare()
        api = await platform.start_api()
        await platform.start_worker()
        what, ids = await submit_all(platform, jobs)
        await wait_finished(platform, ids)
        print(f"{jobs} jobs of {what}, run by the echo crew")

        async def client(session: aiohttp.ClientSession, sizes: list[tuple[int, int]]) -> None:
            for _ in range(rounds):
                async with session.get(
                    "/v1/jobs", params={"limit": "100"}, headers=platform.headers()
                ) as resp:
                    raw = await resp.read()
                    assert resp.status == 200, raw[:500]
                sizes.append((len(raw), len(orjson.loads(raw)["data"])))

        before = rss_mb(api.pid)
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_peak(api.pid, stop))
        sizes: list[tuple[int, int]] = []
        started = time.perf_counter()
        async with aiohttp.ClientSession(base_url=platform.base_url) as session:
            await asyncio.gather(*(client(session, sizes) for _ in range(clients)))
        elapsed = time.perf_counter() - started
        stop.set()
        peak = await sampler
        after = rss_mb(api.pid)
        largest = max(sizes)
        print(
            f"{clients} concurrent clients x {rounds} rounds of GET /v1/jobs?limit=100"
            f" in {elapsed:.1f} s\n"
            f"one answer: {largest[0] / 2**20:.2f} MiB, {largest[1]} jobs\n"
            f"API RSS: {before:.0f} MiB before, peak {peak:.0f} MiB, {after:.0f} MiB after"
        )
    finally:
        await platform.close()
        services.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.clients, args.rounds))
