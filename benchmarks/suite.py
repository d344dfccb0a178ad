"""`crewq bench`: crewq measured beside its references, on this machine, in one run.

    uv run crewq bench [--repeat 3] [--out bench-results.json] [--only SCENARIO ...]

Starts what it needs: embedded Postgres and Redis unless CREWQ_DATABASE_URL /
CREWQ_REDIS_URL are set, crewq's processes, an OpenAI-compatible fake LLM and webhook
receivers on 127.0.0.1, and the reference workers (benchmarks/references.py). Runs every
scenario `--repeat` times, prints a table of medians with min-max, and writes every raw
value to `--out`. Numbers, not assertions: the targets live in docs/performance.md beside
the table.
"""

import argparse
import asyncio
import json
import os
import platform as host
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import redis.asyncio as aioredis

from benchmarks import references
from benchmarks.durable import durable
from benchmarks.model_limits import model_limits
from benchmarks.scheduler import scheduler
from benchmarks.webhooks import register
from benchmarks.webhooks import throughput as webhook_throughput
from tests.fakes import FakeLLM, Receiver
from tests.harness import Platform, Process, Services

CREW_JOBS = 30  # per run of the crew throughput scenario
NOOP_JOBS = 200
OFFLINE = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
ROOMY = {"CREWQ_TENANT_MAX_PENDING_JOBS": "10000000", "CREWQ_TENANT_MAX_RUNNING_JOBS": "1000"}


@dataclass
class Series:
    scenario: str
    what: str
    unit: str
    values: list[float] = field(default_factory=list)

    def line(self) -> str:
        if not self.values:
            return f"| {self.scenario} | {self.what} | - | - |"
        med = statistics.median(self.values)
        spread = f"{min(self.values):.3g}-{max(self.values):.3g}"
        return f"| {self.scenario} | {self.what} | {med:.3g} {self.unit} | {spread} |"


class Bench:
    def __init__(self, services: Services, workdir: Path, llm: FakeLLM, receiver: Receiver) -> None:
        self.services, self.workdir, self.llm, self.receiver = services, workdir, llm, receiver
        self.series: dict[tuple[str, str], Series] = {}
        self.failures: list[str] = []
        self._redis_db = 0

    def record(self, scenario: str, what: str, unit: str, value: float) -> None:
        key = (scenario, what)
        self.series.setdefault(key, Series(scenario, what, unit)).values.append(value)
        print(f"  {scenario}: {what} = {value:.4g} {unit}", flush=True)

    async def platform(self, *, offline: bool = False, **env: str) -> Platform:
        made = Platform(
            self.services,
            self.workdir,
            self.llm.base_url,
            **(OFFLINE if offline else {}),
            **ROOMY,
            **env,
        )
        await made.prepare()
        return made

    def redis_url(self) -> str:
        self._redis_db = self._redis_db % 14 + 1
        return self.services.redis_db(self._redis_db)

    # --- crewq ---------------------------------------------------------------------------

    async def crewq_batch(
        self, platform: Platform, crew: str, inputs: list[dict[str, Any]], **fields: Any
    ) -> tuple[list[str], float]:
        """Submit every job (8 at a time); when all have finished, their ids and the
        jobs/s from the first submission to the last finish."""
        gate = asyncio.Semaphore(8)

        async def one(given: dict[str, Any]) -> str:
            async with gate:
                return str((await platform.submit(crew, given, **fields))["id"])

        started = time.time()
        ids = await asyncio.gather(*(one(i) for i in inputs))
        last = await finished(platform, ids)
        return ids, len(ids) / (last - started)


async def finished(platform: Platform, ids: list[str], timeout: float = 600) -> float:
    """Wait until every job has ended; the epoch of the last finish."""
    conn = await platform.db()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE finished_at IS NULL) AS open,"
                " extract(epoch FROM max(finished_at))::float8 AS last"
                " FROM jobs WHERE id = ANY($1)",
                ids,
            )
            assert row is not None
            if row["open"] == 0:
                return float(row["last"])
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    raise TimeoutError(f"{len(ids)} jobs not finished in {timeout} s")


async def run_times(platform: Platform, ids: list[str]) -> dict[str, tuple[float, float]]:
    """Each job's start and finish, as epochs."""
    conn = await platform.db()
    try:
        rows = await conn.fetch(
            "SELECT id, extract(epoch FROM started_at)::float8 AS s,"
            " extract(epoch FROM finished_at)::float8 AS f FROM jobs WHERE id = ANY($1)",
            ids,
        )
    finally:
        await conn.close()
    return {r["id"]: (r["s"], r["f"]) for r in rows}


# --- references ----------------------------------------------------------------------------


class Reference:
    """One reference worker in a process of its own, and how to queue it jobs."""

    def __init__(self, system: str, mode: str, redis_url: str, pg_url: str, llm_url: str) -> None:
        self.system, self.mode, self.redis_url, self.pg_url = system, mode, redis_url, pg_url
        env = {**os.environ, "OPENAI_BASE_URL": llm_url, "OPENAI_API_KEY": "sk-bench"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.references", system, mode, redis_url, pg_url],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.redis = aioredis.Redis.from_url(redis_url)
        self._queue: Any = None

    async def enqueue(self, count: int, tag: str) -> None:
        name = self.mode
        if self.system.startswith("arq"):
            from arq.connections import RedisSettings, create_pool

            if self._queue is None:
                self._queue = await create_pool(
                    RedisSettings.from_dsn(self.redis_url), default_queue_name=references.QUEUE
                )
            for i in range(count):
                args = [f"{tag} {i}"] if name == "crew" else []
                await self._queue.enqueue_job(name, *args)
        elif self.system == "saq":
            from saq import Queue

            if self._queue is None:
                self._queue = Queue.from_url(self.redis_url, name=references.QUEUE)
                await self._queue.connect()
            for i in range(count):
                kwargs = {"message": f"{tag} {i}"} if name == "crew" else {}
                # SAQ aborts a job after 10 s by default; a process's first kickoff can
                # take that long on a loaded machine.
                await self._queue.enqueue(name, timeout=300, **kwargs)
        else:
            if self._queue is None:
                self._queue = references.celery_app(self.redis_url, self.pg_url)
            app = self._queue

            def send() -> None:
                for i in range(count):
                    app.send_task(name, args=[f"{tag} {i}"] if name == "crew" else [])

            await asyncio.to_thread(send)

    async def batch(self, count: int, tag: str) -> float:
        """Queue `count` jobs; jobs/s from the first queued to the last done."""
        await self.redis.delete(references.DONE_KEY)
        started = time.time()
        await self.enqueue(count, tag)
        deadline = time.monotonic() + 600
        while await self.redis.llen(references.DONE_KEY) < count:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{self.system}: {count} jobs not done")
            await asyncio.sleep(0.02)
        last = max(float(v) for v in await self.redis.lrange(references.DONE_KEY, 0, -1))
        return count / (last - started)

    async def close(self) -> None:
        self.process.terminate()
        try:
            await asyncio.to_thread(self.process.wait, 15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        if self._queue is not None and hasattr(self._queue, "disconnect"):
            await self._queue.disconnect()
        elif self._queue is not None and hasattr(self._queue, "close") and self.system != "celery":
            await self._queue.close()
        await self.redis.aclose()


# --- scenarios -----------------------------------------------------------------------------


async def ingest(bench: Bench) -> None:
    """POST /v1/jobs against one API process, beside its no-op route, 32 clients for 5 s."""
    platform = await bench.platform(offline=True)
    try:
        await platform.start_api()
        for label, method, path, body in (
            ("POST /v1/jobs", "POST", "/v1/jobs", {"crew": "echo", "inputs": {"message": "m"}}),
            ("GET /livez (no-op route)", "GET", "/livez", None),
        ):
            rate = await hammer(platform, method, path, body, seconds=5, clients=32)
            bench.record("ingest", label, "req/s", rate)
    finally:
        await platform.close()


async def hammer(
    platform: Platform, method: str, path: str, body: Any, *, seconds: float, clients: int
) -> float:
    done = 0
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession(
        base_url=platform.base_url, headers=platform.headers()
    ) as http:

        async def client() -> None:
            nonlocal done
            while time.monotonic() < stop:
                async with http.request(method, path, json=body) as resp:
                    await resp.read()
                    assert resp.status < 300, (resp.status, await resp.text())
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(clients)))
        return done / (time.monotonic() - started)


async def crew_throughput(bench: Bench) -> None:
    """The one-agent crew on the fast fake LLM, 2 crews at a time."""
    platform = await bench.platform(CREWQ_WORKER_CONCURRENCY="2")
    try:
        api = await platform.start_api()
        worker = await platform.start_worker()
        await bench.crewq_batch(platform, "echo", [{"message": f"warm {i}"} for i in range(4)])
        before = cpu_seconds(api, worker)
        _, rate = await bench.crewq_batch(
            platform, "echo", [{"message": f"crew {i}"} for i in range(CREW_JOBS)]
        )
        after = cpu_seconds(api, worker)
        bench.record("crew throughput", "crewq (API + 1 worker, 2 crews)", "jobs/s", rate)
        for part in after:
            spent = (after[part] - before.get(part, 0.0)) / CREW_JOBS * 1000
            bench.record("CPU per job", f"crewq {part}", "ms", spent)
    finally:
        await platform.close()
    pg = await bench.services.create_database(f"bench_celery_{uuid.uuid4().hex[:6]}")
    for system, label in (
        ("arq-tuned", "bare arq, kickoff in a thread (max_jobs 2, poll 10 ms)"),
        ("saq", "SAQ, kickoff in a thread (concurrency 2)"),
        ("celery", "Celery, prefork pool of 2, Postgres result backend"),
    ):
        reference = Reference(system, "crew", bench.redis_url(), pg, bench.llm.base_url)
        try:
            await reference.batch(4, "warm")
            cpu_before = tree_cpu(reference.process.pid)
            rate = await reference.batch(CREW_JOBS, "crew")
            bench.record("crew throughput", label, "jobs/s", rate)
            spent = (tree_cpu(reference.process.pid) - cpu_before) / CREW_JOBS * 1000
            bench.record("CPU per job", f"{system} (its worker processes)", "ms", spent)
        finally:
            await reference.close()


async def queue_overhead(bench: Bench) -> None:
    """crewq's smallest job (the echo crew on the offline model) beside a no-op job."""
    platform = await bench.platform(offline=True, CREWQ_WORKER_CONCURRENCY="2")
    try:
        await platform.start_api()
        await platform.start_worker()
        await bench.crewq_batch(platform, "echo", [{"message": "warm"}] * 4)
        _, rate = await bench.crewq_batch(platform, "echo", [{"message": "m"}] * 100)
        bench.record("queue overhead", "crewq, offline echo crew (2 crews)", "jobs/s", rate)
    finally:
        await platform.close()
    for system, label in (
        ("arq", "bare arq no-op (default 0.5 s poll)"),
        ("arq-tuned", "bare arq no-op (poll 10 ms)"),
        ("saq", "SAQ no-op"),
    ):
        reference = Reference(system, "noop", bench.redis_url(), "", bench.llm.base_url)
        try:
            await reference.batch(10, "warm")
            bench.record("queue overhead", label, "jobs/s", await reference.batch(NOOP_JOBS, "n"))
        finally:
            await reference.close()


async def latency(bench: Bench) -> None:
    """Submission to started, to completed and to webhook received: offline crew, at a
    light fixed rate (2 jobs/s) and near saturation (8 jobs/s)."""
    platform = await bench.platform(offline=True, CREWQ_WORKER_CONCURRENCY="2")
    try:
        await platform.start_api()
        await platform.start_worker()
        await platform.start_dispatcher()
        await bench.crewq_batch(platform, "echo", [{"message": "warm"}] * 4)
        for label, rate, seconds in (
            ("light, 2 jobs/s", 2.0, 10),
            ("near saturation, 8 jobs/s", 8.0, 6),
        ):
            name = f"lat-{uuid.uuid4().hex[:6]}"
            bench.receiver.configure(name, secrets=[platform.signing_secret])
            submitted: dict[str, float] = {}
            for _ in range(int(rate * seconds)):
                at = time.time()
                job = await platform.submit(
                    "echo", {"message": "l"}, webhook_url=bench.receiver.url(name)
                )
                submitted[job["id"]] = at
                await asyncio.sleep(max(0.0, at + 1 / rate - time.time()))
            await finished(platform, list(submitted))
            hooks = await bench.receiver.wait_for(name, len(submitted), timeout=120)
            received = {h.event["data"]["id"]: h.at for h in hooks}
            times = await run_times(platform, list(submitted))
            for what, values in (
                ("to started", [times[i][0] - at for i, at in submitted.items()]),
                ("to completed", [times[i][1] - at for i, at in submitted.items()]),
                ("to webhook", [received[i] - at for i, at in submitted.items() if i in received]),
            ):
                cuts = statistics.quantiles(values, n=100)
                for q in (50, 95, 99):
                    bench.record("latency", f"{label}: {what} p{q}", "ms", cuts[q - 1] * 1000)
    finally:
        await platform.close()


async def scaling(bench: Bench) -> None:
    """1, 2 and 3 workers (2 crews each) on a slow fake LLM: each crew's one call takes 1 s."""
    platform = await bench.platform(CREWQ_WORKER_CONCURRENCY="2")
    try:
        await platform.start_api()
        workers: list[Process] = []
        for count in (1, 2, 3):
            while len(workers) < count:
                workers.append(await platform.start_worker())
            tag = uuid.uuid4().hex[:6]
            await bench.crewq_batch(
                platform,
                "echo",
                [{"message": f"[[sleep:0.2]] w{tag} {i}"} for i in range(2 * count)],
            )
            _, rate = await bench.crewq_batch(
                platform,
                "echo",
                [{"message": f"[[sleep:1]] s{tag} {i}"} for i in range(12 * count)],
            )
            bench.record("scaling", f"{count} worker(s), 1 s LLM", "jobs/s", rate)
    finally:
        await platform.close()


async def webhooks(bench: Bench) -> None:
    """Deliveries/s one dispatcher sustains, to 16 endpoints; then, for 40 jobs, how long
    a healthy endpoint waits for each job.completed while another endpoint of the same
    tenant hangs for 10 s on every request."""
    platform = await bench.platform(offline=True, CREWQ_WEBHOOK_TIMEOUT="15")
    try:
        await platform.start_api()
        await platform.start_worker()
        await platform.start_dispatcher()
        rate = await webhook_throughput(platform, bench.receiver, 1000, 16)
        bench.record("webhooks", "deliveries/s, one dispatcher, 16 endpoints", "deliveries/s", rate)
        hanging, healthy = f"hang-{uuid.uuid4().hex[:6]}", f"ok-{uuid.uuid4().hex[:6]}"
        bench.receiver.configure(hanging, sleep=10)
        bench.receiver.configure(healthy)
        for name in (hanging, healthy):
            await register(platform, bench.receiver.url(name), ["job.completed"])
        ids = []
        for i in range(40):
            ids.append((await platform.submit("echo", {"message": f"iso {i}"}))["id"])
            await asyncio.sleep(0.1)
        await finished(platform, ids)
        got = await bench.receiver.wait_for(healthy, len(ids), timeout=60)
        received = {h.event["data"]["id"]: h.at for h in got}
        times = await run_times(platform, ids)
        lags = [received[i] - times[i][1] for i in ids]
        cuts = statistics.quantiles(lags, n=100)
        for q in (50, 99):
            what = f"healthy endpoint beside a hanging one: finished -> received p{q}"
            bench.record("webhooks", what, "ms", cuts[q - 1] * 1000)
    finally:
        await platform.close()


def tree_cpu(pid: int) -> float:
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def cpu_seconds(api: Process, worker: Process) -> dict[str, float]:
    """CPU used so far by the API, the worker itself, and its crew processes (CrewAI's
    build and kickoff, and crewq's step reporting inside them); crew processes that ended
    are not counted, so the batch must not recycle them (CREWQ_CHILD_MAX_JOBS)."""
    parts = {
        "API process": [psutil.Process(api.pid)],
        "worker process": [psutil.Process(worker.pid)],
    }
    parts["crew processes"] = [
        p for p in psutil.Process(worker.pid).children(recursive=True) if not p.children()
    ]
    spent = {}
    for part, processes in parts.items():
        times = [p.cpu_times() for p in processes]
        spent[part] = sum(t.user + t.system for t in times)
    return spent


def tree_mb(process: Process) -> tuple[float, list[float]]:
    """The worker's whole tree (PSS: shared pages split between the processes sharing
    them, so the forkserver's imports are not counted once per crew process), and each
    crew process's share."""
    root = psutil.Process(process.pid)
    tree = [root, *root.children(recursive=True)]
    pss = {p.pid: p.memory_full_info().pss / 2**20 for p in tree}
    crews = [pss[p.pid] for p in tree if p.children() == [] and p.pid != root.pid]
    return sum(pss.values()), crews


async def first_request_after(bench: Bench, platform: Platform, marker: str) -> float:
    at = time.time()
    await platform.submit("echo", {"message": f"{marker}"})
    while not bench.llm.requests_with(marker):
        await asyncio.sleep(0.005)
    return bench.llm.requests_with(marker)[0].at - at


async def slot_cost(bench: Bench) -> None:
    """A worker's memory idle and per running crew; time from submission to the first LLM
    request on a worker that has just said it is ready, and on a warm one."""
    platform = await bench.platform(CREWQ_WORKER_CONCURRENCY="2")
    try:
        await platform.start_api()
        worker = await platform.start_worker()
        cold = await first_request_after(bench, platform, f"<cold-{uuid.uuid4().hex[:6]}>")
        bench.record(
            "crew slot",
            "first job on a fresh worker: submit -> first LLM request",
            "ms",
            cold * 1000,
        )
        await asyncio.sleep(1)
        warm = await first_request_after(bench, platform, f"<warm-{uuid.uuid4().hex[:6]}>")
        bench.record("crew slot", "a later job: submit -> first LLM request", "ms", warm * 1000)
        await asyncio.sleep(2)
        idle, crews = tree_mb(worker)
        bench.record(
            "crew slot", "worker tree idle, PSS (worker, forkserver, 2 crews)", "MiB", idle
        )
        bench.record("crew slot", "one warm crew process, PSS", "MiB", statistics.mean(crews))
        busy_tag = uuid.uuid4().hex[:6]
        for i in range(2):
            await platform.submit("echo", {"message": f"[[sleep:3]] <busy-{busy_tag}-{i}>"})
        while len(bench.llm.requests_with(f"busy-{busy_tag}")) < 2:
            await asyncio.sleep(0.05)
        busy, _ = tree_mb(worker)
        bench.record("crew slot", "added per running crew, PSS", "MiB", (busy - idle) / 2)
    finally:
        await platform.close()


HISTORY_JOBS = 1_000_000


async def fill_history(platform: Platform, count: int) -> None:
    """`count` jobs finished a day ago, each with its job.completed event and a succeeded
    delivery, as a busy tenant's month leaves them (ids sort before any new job's)."""
    conn = await platform.db()
    try:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute(
            """
            INSERT INTO jobs (id, tenant_id, crew, inputs, status, timeout_s, max_retries,
                              attempt, result, worker_id, created_at, started_at, finished_at)
            SELECT 'job_00' || lpad(i::text, 24, '0'), $1, 'echo', '{"message": "old"}',
                   'completed', 3600, 2, 1,
                   '{"raw": "done", "structured": null, "tasks": [], "models": ["crewq/offline"],
                     "offline": true}',
                   'w-old',
                   now() - interval '1 day', now() - interval '1 day',
                   now() - interval '1 day'
              FROM generate_series(1, $2) AS i
            """,
            platform.tenant_id,
            count,
        )
        await conn.execute(
            """
            INSERT INTO events (id, tenant_id, job_id, type, payload, created_at)
            SELECT 'evt_00' || lpad(i::text, 24, '0'), $1, 'job_00' || lpad(i::text, 24, '0'),
                   'job.completed', '{"type": "job.completed"}', now() - interval '1 day'
              FROM generate_series(1, $2) AS i
            """,
            platform.tenant_id,
            count,
        )
        await conn.execute(
            """
            INSERT INTO webhook_deliveries (id, event_id, tenant_id, url, status, attempt_count,
                                            delivered_at, created_at)
            SELECT 'whd_00' || lpad(i::text, 24, '0'), 'evt_00' || lpad(i::text, 24, '0'), $1,
                   'https://receiver.invalid/hook', 'succeeded', 1,
                   now() - interval '1 day', now() - interval '1 day'
              FROM generate_series(1, $2) AS i
            """,
            platform.tenant_id,
            count,
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def big_history(bench: Bench) -> None:
    """Start-up, ingest, listing and throughput on an empty database, then with a million
    finished jobs (and their events and deliveries) in the tables."""
    for label, history in (("empty database", 0), ("1M finished jobs", HISTORY_JOBS)):
        platform = await bench.platform(CREWQ_WORKER_CONCURRENCY="2")
        try:
            if history:
                started = time.monotonic()
                await fill_history(platform, history)
                print(f"  ({history} jobs written in {time.monotonic() - started:.0f} s)")
            started = time.monotonic()
            await platform.start_api()
            bench.record("big history", f"{label}: API start-up", "s", time.monotonic() - started)
            body = {"crew": "echo", "inputs": {"message": "m"}}
            rate = await hammer(platform, "POST", "/v1/jobs", body, seconds=3, clients=16)
            bench.record("big history", f"{label}: POST /v1/jobs", "req/s", rate)
            await forget_pending(platform)  # not run: the worker's part is measured below
            started = time.monotonic()
            await platform.start_worker()
            took = time.monotonic() - started
            bench.record("big history", f"{label}: worker start-up", "s", took)
            listing = []
            async with aiohttp.ClientSession(
                base_url=platform.base_url, headers=platform.headers()
            ) as http:
                for _ in range(30):
                    at = time.perf_counter()
                    async with http.get("/v1/jobs", params={"limit": "20"}) as resp:
                        assert resp.status == 200, await resp.text()
                        await resp.read()
                    listing.append(time.perf_counter() - at)
            bench.record(
                "big history", f"{label}: GET /v1/jobs p50", "ms", statistics.median(listing) * 1000
            )
            _, rate = await bench.crewq_batch(
                platform, "echo", [{"message": f"h {i}"} for i in range(CREW_JOBS)]
            )
            bench.record("big history", f"{label}: crew throughput", "jobs/s", rate)
        finally:
            await platform.close()


async def forget_pending(platform: Platform) -> None:
    """Delete the jobs ingest left queued, and the queue, before a worker starts."""
    conn = await platform.db()
    try:
        await conn.execute("DELETE FROM jobs WHERE status = 'pending'")
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(platform.redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


SCENARIOS: dict[str, Callable[[Bench], Awaitable[None]]] = {
    "ingest": ingest,
    "crew-throughput": crew_throughput,
    "queue-overhead": queue_overhead,
    "latency": latency,
    "scaling": scaling,
    "webhooks": webhooks,
    "slot-cost": slot_cost,
    "big-history": big_history,
    "durable": durable,
    "model-limits": model_limits,
    "scheduler": scheduler,
}


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": host.python_version(),
        "system": f"{host.system()} {host.release()}",
    }


async def run(repeat: int, only: list[str]) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="crewq-bench-"))
    services = Services(workdir)
    llm, receiver = FakeLLM(), Receiver()
    await llm.start()
    await receiver.start()
    bench = Bench(services, workdir, llm, receiver)
    try:
        for name, scenario in SCENARIOS.items():
            if only and name not in only:
                continue
            # A million rows take minutes to write: that scenario runs once.
            runs = 1 if name == "big-history" else repeat
            for attempt in range(1, runs + 1):
                print(f"{name} ({attempt}/{runs})", flush=True)
                try:
                    await scenario(bench)
                except Exception as exc:  # the other scenarios still run; the table says
                    bench.failures.append(f"{name} ({attempt}/{runs}): {type(exc).__name__}: {exc}")
                    print(f"  {bench.failures[-1]}", flush=True)
    finally:
        await llm.stop()
        await receiver.stop()
        services.stop()
    about = machine()
    print(f"\ncrewq bench on {about['cpus']} cores, {about['memory_gib']} GiB", end="")
    print(f", Python {about['python']}")
    print(f"median of {repeat} runs (min-max)\n")
    print("| scenario | measure | median | min-max |\n|---|---|---|---|")
    for series in bench.series.values():
        print(series.line())
    for failure in bench.failures:
        print(f"failed: {failure}")
    return {
        "machine": about,
        "repeat": repeat,
        "series": [asdict(x) for x in bench.series.values()],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="crewq bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"))
    parser.add_argument("--only", nargs="*", default=[], choices=sorted(SCENARIOS))
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.repeat, args.only))
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nraw results: {args.out}")


if __name__ == "__main__":
    main()
