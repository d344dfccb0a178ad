"""Chaos, measured: hundreds of jobs on a slow fake LLM across two workers and two
dispatchers, with webhooks to a local receiver, while processes are killed and Redis and
Postgres fail under them. Used by a `slow` test, which asserts on the report, and by
`benchmarks/chaos.py`, which prints it.

The faults, a few seconds apart while the jobs run: SIGKILL a worker (and start another,
as compose or Kubernetes would), restart Redis (without persistence: the queue is lost),
terminate every Postgres backend of the database, SIGKILL the other worker and a
dispatcher (and start new ones).
"""

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from crewq.embedded import EmbeddedRedis
from tests.fakes import FakeLLM, Receiver
from tests.harness import Platform, Process, Services


@dataclass
class ChaosReport:
    jobs: int
    seconds_to_last_finish: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    rerun: int = 0  # jobs that needed more than one attempt
    completed_attempts: Counter[int] = field(default_factory=Counter)  # per job: how many
    terminal_events: Counter[int] = field(default_factory=Counter)  # per job: how many
    outcome_ids_per_job: Counter[int] = field(default_factory=Counter)  # webhook-ids seen
    received_outcomes: int = 0  # jobs whose outcome reached the receiver
    duplicates: int = 0  # deliveries received beyond the first, per webhook-id
    unfinished: int = 0  # jobs left pending or running
    faults: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"jobs: {self.jobs}, statuses: {dict(self.statuses)}",
            f"faults: {'; '.join(self.faults)}",
            f"time until the last job finished: {self.seconds_to_last_finish:.1f} s",
            f"jobs re-run (more than one attempt): {self.rerun}",
            f"completed attempts per job: {dict(self.completed_attempts)}",
            f"terminal events per job: {dict(self.terminal_events)}",
            f"outcomes received: {self.received_outcomes} of {self.jobs},"
            f" webhook-ids per job outcome: {dict(self.outcome_ids_per_job)}",
            f"duplicates delivered: {self.duplicates}",
            f"left pending or running: {self.unfinished}",
        ]


async def run_chaos(services: Services, workdir: Path, jobs: int = 200) -> ChaosReport:
    llm = FakeLLM()
    receiver = Receiver()
    await llm.start()
    await receiver.start()
    redis = EmbeddedRedis(workdir / f"chaos-redis-{time.monotonic_ns()}", persist=False)
    platform = Platform(
        services,
        workdir,
        llm.base_url,
        CREWQ_REDIS_URL=redis.url,
        CREWQ_WORKER_CONCURRENCY="4",
        CREWQ_WEBHOOK_BACKOFF="[0, 0.5, 1, 1, 1, 1, 1, 1, 1, 1]",
    )
    platform.redis_url = redis.url
    report = ChaosReport(jobs)
    try:
        await platform.prepare()
        receiver.configure("chaos", secrets=[platform.signing_secret])
        await platform.start_api()
        workers = [await platform.start_worker(), await platform.start_worker()]
        dispatchers = [await platform.start_dispatcher(), await platform.start_dispatcher()]

        started = time.monotonic()
        ids = [
            (
                await platform.submit(
                    "echo",
                    {"message": f"[[sleep:0.4]] chaos {i}"},
                    webhook_url=receiver.url("chaos"),
                    max_retries=3,
                )
            )["id"]
            for i in range(jobs)
        ]

        async def replace(victim: Process, starter: str) -> Process:
            victim.kill()
            if starter == "worker":
                return await platform.start_worker()
            return await platform.start_dispatcher()

        await asyncio.sleep(2)
        workers[0] = await replace(workers[0], "worker")
        report.faults.append("SIGKILL worker 1 (replaced)")
        await asyncio.sleep(2)
        port = redis.port
        redis.stop()
        await asyncio.sleep(1)
        redis = EmbeddedRedis(redis.dir.parent, persist=False, port=port)
        report.faults.append("Redis restarted, its queue lost")
        await asyncio.sleep(2)
        killed = await platform.terminate_backends()
        report.faults.append(f"{killed} Postgres backends terminated")
        await asyncio.sleep(2)
        workers[1], dispatchers[0] = await asyncio.gather(
            replace(workers[1], "worker"), replace(dispatchers[0], "dispatcher")
        )
        report.faults.append("SIGKILL worker 2 and dispatcher 1 (replaced)")

        conn = await platform.db()
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                left = await conn.fetchval(
                    "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')"
                )
                undelivered = await conn.fetchval(
                    "SELECT count(*) FROM webhook_deliveries WHERE status <> 'succeeded'"
                )
                if left == 0 and undelivered == 0:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(1)  # room for a late duplicate to arrive, were there one
            rows = await conn.fetch(
                """
                SELECT j.id, j.status, j.attempt,
                       extract(epoch FROM j.finished_at)::float8 AS finished,
                       (SELECT count(*) FROM job_attempts a
                         WHERE a.job_id = j.id AND a.outcome = 'completed') AS completed,
                       (SELECT count(*) FROM events e WHERE e.job_id = j.id
                           AND e.type IN ('job.completed', 'job.failed', 'job.cancelled'))
                           AS terminal
                  FROM jobs j WHERE j.id = ANY($1)
                """,
                ids,
            )
            first_submit = await conn.fetchval(
                "SELECT extract(epoch FROM min(created_at))::float8 FROM jobs"
            )
        finally:
            await conn.close()
        elapsed_to_now = time.monotonic() - started
        finished = [r["finished"] for r in rows if r["finished"] is not None]
        report.seconds_to_last_finish = max(finished) - first_submit if finished else elapsed_to_now
        for row in rows:
            report.statuses[row["status"]] += 1
            report.rerun += row["attempt"] > 1
            report.completed_attempts[row["completed"]] += 1
            report.terminal_events[row["terminal"]] += 1
            report.unfinished += row["status"] in ("pending", "running")
        webhook_ids: dict[str, set[str]] = defaultdict(set)
        for got in receiver.at("chaos"):
            webhook_ids[got.event["data"]["id"]].add(got.headers["webhook-id"])
        report.received_outcomes = sum(1 for i in ids if webhook_ids.get(i))
        for job_id in ids:
            report.outcome_ids_per_job[len(webhook_ids.get(job_id, set()))] += 1
        per_id = Counter(r.headers["webhook-id"] for r in receiver.at("chaos"))
        report.duplicates = sum(n - 1 for n in per_id.values())
        return report
    finally:
        await platform.close()
        redis.stop()
        await receiver.stop()
        await llm.stop()
