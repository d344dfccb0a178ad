"""Fairness between tenants: how long one tenant's new job waits behind another tenant's
capped backlog.

    uv run python -m benchmarks.fairness [--backlog 500] [--probes 5]

Starts a real platform (embedded Postgres and Redis unless CREWQ_DATABASE_URL /
CREWQ_REDIS_URL are set, the API, one worker of concurrency 2) with a fake LLM on
127.0.0.1. Tenant "busy" is capped at 1 running job and submits `--backlog` jobs whose LLM
call takes 2 s; once they are queued, tenant "probe" submits `--probes` jobs one after
another, and the script prints how long each waited from submission to start, and how
many times the worker was offered a job of the capped tenant it could not start.
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from tests.fakes import FakeLLM
from tests.harness import Platform, Services


async def main(backlog: int, probes: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="crewq-bench-"))
    services = Services(workdir)
    llm = FakeLLM()
    await llm.start()
    platform = Platform(services, workdir, llm.base_url, CREWQ_WORKER_CONCURRENCY="2")
    try:
        await platform.prepare()
        await platform.start_api()
        worker = await platform.start_worker()
        conn: asyncpg.Connection = await platform.db()
        try:
            await conn.execute(
                "UPDATE tenants SET max_running_jobs = 1 WHERE id = $1", platform.tenant_id
            )
        finally:
            await conn.close()
        probe_key, _, _ = await platform.new_tenant("probe")

        started = time.monotonic()
        for i in range(backlog):
            await platform.submit("echo", {"message": f"[[sleep:2]] backlog {i}"})
        print(f"busy tenant: {backlog} jobs submitted in {time.monotonic() - started:.1f} s")
        await asyncio.sleep(3)  # let the backlog settle into whatever waiting it does

        waits = []
        for i in range(probes):
            job = await platform.submit("echo", {"message": f"probe {i}"}, key=probe_key)
            done = await platform.wait_for_status(
                job["id"], {"completed", "failed"}, timeout=300, key=probe_key
            )
            assert done["status"] == "completed", done
            conn = await platform.db()
            try:
                wait = await conn.fetchval(
                    "SELECT extract(epoch FROM a.started_at - j.created_at)::float8"
                    " FROM jobs j JOIN job_attempts a ON a.job_id = j.id AND a.number = 1"
                    " WHERE j.id = $1",
                    job["id"],
                )
            finally:
                await conn.close()
            waits.append(wait)
        refused = worker.log().count("not started: parked")
        print(f"probe tenant: {probes} jobs, submit -> start:")
        print(f"  each: {', '.join(f'{w:.2f} s' for w in waits)}")
        print(f"  median {statistics.median(waits):.2f} s, worst {max(waits):.2f} s")
        print(f"offers of a capped job the worker had to refuse (each then parked): {refused}")
    finally:
        await platform.close()
        await llm.stop()
        services.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backlog", type=int, default=500)
    parser.add_argument("--probes", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.backlog, args.probes))
