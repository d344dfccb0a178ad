"""`crewq bench --only scheduler`: how late a schedule's jobs are made (issue 22).

An interval schedule is fired by two workers (each looks every `CREWQ_SCHEDULER_INTERVAL`)
for a while; each job's drift is its `created_at` minus its tick's due time (the tick is in
the job's idempotency key, `schedule:ID:TICK`). Also how many jobs each tick made, which
must be one.
"""

import asyncio
import statistics
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING

from tests.harness import Platform

if TYPE_CHECKING:
    from benchmarks.suite import Bench

SCENARIO = "scheduler"
INTERVAL_S = 2
RUN_S = 30


async def drift(bench: "Bench", platform: Platform) -> None:
    status, made, _ = await platform.request(
        "POST",
        "/v1/schedules",
        json={"crew": "echo", "inputs": {"message": "tick"}, "interval": INTERVAL_S},
    )
    assert status == 201, made
    await asyncio.sleep(RUN_S)
    status, _, _ = await platform.request("POST", f"/v1/schedules/{made['id']}/pause")
    assert status == 200
    conn = await platform.db()
    try:
        rows = await conn.fetch(
            "SELECT idempotency_key, created_at FROM jobs WHERE metadata ->> 'schedule_id' = $1",
            made["id"],
        )
    finally:
        await conn.close()
    ticks = [datetime.fromisoformat(r["idempotency_key"].split(":", 2)[2]) for r in rows]
    late = [
        (r["created_at"] - tick).total_seconds() * 1000 for r, tick in zip(rows, ticks, strict=True)
    ]
    bench.record(SCENARIO, f"ticks fired in {RUN_S} s (every {INTERVAL_S} s)", "ticks", len(rows))
    bench.record(SCENARIO, "jobs per tick, most", "jobs", max(Counter(ticks).values()))
    bench.record(SCENARIO, "drift per tick, median", "ms", statistics.median(late))
    bench.record(SCENARIO, "drift per tick, max", "ms", max(late))


async def scheduler(bench: "Bench") -> None:
    platform = await bench.platform()
    try:
        await platform.start_api()
        await platform.start_worker()
        await platform.start_worker()
        await drift(bench, platform)
    finally:
        await platform.close()
