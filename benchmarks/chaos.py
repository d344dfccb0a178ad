"""Chaos, measured: jobs on a slow fake LLM across two workers and two dispatchers, with
webhooks to a local receiver, while a worker is SIGKILLed, Redis restarts, every Postgres
backend is terminated, and the other worker and a dispatcher are SIGKILLed.

    uv run python -m benchmarks.chaos [--jobs 200]

Starts its own embedded Postgres and Redis (unless CREWQ_DATABASE_URL is set) and prints:
duplicates delivered, time until the last job finished, jobs re-run, and the checks the
`slow` test asserts (tests/acceptance/test_chaos.py).
"""

import argparse
import asyncio
import tempfile
from pathlib import Path

from tests.chaos import run_chaos
from tests.harness import Services


async def main(jobs: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="crewq-chaos-"))
    services = Services(workdir)
    try:
        report = await run_chaos(services, workdir, jobs=jobs)
    finally:
        services.stop()
    print("\n".join(report.lines()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    asyncio.run(main(parser.parse_args().jobs))
