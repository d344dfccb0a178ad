"""Job throughput, latency and worker memory on the offline model.

    uv run python -m benchmarks.jobs [--jobs 300] [--concurrency 2]

Starts a real platform (embedded Postgres and Redis unless CREWQ_DATABASE_URL /
CREWQ_REDIS_URL are set, the API, one worker, no dispatcher), submits jobs over HTTP and
prints: jobs/s, submit-to-finish latency p50/p99, queue-to-start latency p50/p99, and the
worker's memory (its own and its crew processes') before and after, to show it stays flat.
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from tests.harness import Platform, Process, Services


def rss_mb(worker: Process) -> float:
    procs = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(recursive=True)]
    return sum(p.memory_info().rss for p in procs) / 2**20


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def main(jobs: int, concurrency: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="crewq-bench-"))
    services = Services(workdir)
    platform = Platform(
        services,
        workdir,
        "",
        OPENAI_API_KEY="",
        OPENAI_BASE_URL="",
        CREWQ_WORKER_CONCURRENCY=str(concurrency),
    )
    try:
        await platform.prepare()
        await platform.start_api()
        worker = await platform.start_worker()
        warm = await platform.submit("research", {"topic": "warm-up"})
        await platform.wait_for_status(warm["id"], {"completed"})
        before = rss_mb(worker)

        started = time.monotonic()
        ids = [(await platform.submit("research", {"topic": f"t{i}"}))["id"] for i in range(jobs)]
        submitted = time.monotonic() - started
        await platform.wait_for_status(ids[-1], {"completed", "failed"}, timeout=600)
        conn = await platform.db()
        try:
            while await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE id = ANY($1) AND status IN ('pending', 'running')",
                ids,
            ):
                await asyncio.sleep(0.1)
            elapsed = time.monotonic() - started
            rows = await conn.fetch(
                "SELECT j.status, extract(epoch FROM j.finished_at - j.created_at) AS total,"
                " extract(epoch FROM a.started_at - j.created_at) AS wait"
                " FROM jobs j JOIN job_attempts a ON a.job_id = j.id AND a.number = 1"
                " WHERE j.id = ANY($1)",
                ids,
            )
        finally:
            await conn.close()
        after = rss_mb(worker)
        idle = []
        for i in range(30):  # one at a time: latency on an idle platform
            one = time.monotonic()
            job = await platform.submit("research", {"topic": f"idle{i}"})
            await platform.wait_for_status(job["id"], {"completed"}, poll=0.005)
            idle.append((time.monotonic() - one) * 1000)
        totals = [float(r["total"]) * 1000 for r in rows]
        waits = [float(r["wait"]) * 1000 for r in rows]
        failed = sum(r["status"] != "completed" for r in rows)
        print(
            f"jobs: {jobs} (research crew: 2 agents, 2 tasks, offline model),"
            f" concurrency {concurrency}"
        )
        print(f"failed: {failed}")
        rate = jobs / submitted
        print(f"submitted in {submitted:.2f} s ({rate:.0f} submits/s from one HTTP client)")
        print(f"throughput: {jobs / elapsed:.1f} jobs/s ({elapsed:.2f} s for all)")
        print(f"submit -> finished: p50 {pct(totals, 50):.0f} ms, p99 {pct(totals, 99):.0f} ms")
        print(f"submit -> started:  p50 {pct(waits, 50):.0f} ms, p99 {pct(waits, 99):.0f} ms")
        print(f"one job at a time, submit -> seen completed over HTTP: p50 {pct(idle, 50):.0f} ms")
        print(
            f"worker + crew processes RSS: {before:.0f} MiB after warm-up,"
            f" {after:.0f} MiB after {jobs} jobs"
        )
    finally:
        await platform.close()
        services.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.concurrency))
