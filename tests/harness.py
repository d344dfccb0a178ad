"""A real crewq platform for tests: its own database and Redis db, the API, workers and a
dispatcher as the same `python -m crewq <role>` processes production runs."""

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import psutil
from multidict import CIMultiDict

from crewq.dev import role_command
from crewq.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from schemas.account import KeyMode, Plan, Scope
from shared.domain.owners import Owner
from shared.runtime.db import migrate
from shared.runtime.secret_box import SecretBox, generate_key
from shared.store import tenants
from shared.store.keys import create_for_tenant, parse_scopes

ROOT = Path(__file__).resolve().parent.parent
TEST_CREWS = ROOT / "tests" / "crews"
_redis_dbs = itertools.count()

# Fast clocks so failure scenarios play out in seconds.
FAST_ENV = {
    "CREWQ_HEARTBEAT_INTERVAL": "0.5",
    "CREWQ_HEARTBEAT_TIMEOUT": "4",
    "CREWQ_REAPER_INTERVAL": "1",
    "CREWQ_RETRY_BASE_DELAY": "0.2",
    "CREWQ_LLM_RETRY_ATTEMPTS": "4",
    "CREWQ_LLM_RETRY_MAX_WAIT": "1",
    "CREWQ_RETRY_MAX_DELAY": "1",
    "CREWQ_TIMEOUT_GRACE": "5",
    "CREWQ_DRAIN_TIMEOUT": "5",
    "CREWQ_WEBHOOK_BACKOFF": "[0, 0.3, 0.3, 0.3, 0.3, 0.3]",
    "CREWQ_WEBHOOK_THROTTLE_MIN_DELAY": "1",
    "CREWQ_WEBHOOK_TIMEOUT": "3",
    "CREWQ_DISPATCHER_POLL_INTERVAL": "1",
    "CREWQ_WEBHOOK_ALLOW_HTTP": "true",
    "CREWQ_WEBHOOK_ALLOW_PRIVATE": "true",
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
    "CREWQ_LOG_LEVEL": "INFO",
    # Tests poll the API far faster than a client would: their tenants are not rate
    # limited unless a test puts one on a plan that is.
    "CREWQ_DEFAULT_PLAN": "unlimited",
}


# For a platform that schemathesis fuzzes: limits that protect a deployment, and that are not
# what a fuzzer examines, raised out of its way. Its thousands of requests with made-up keys
# (the ignored_auth check) would exhaust the per-address bound on them and get 429 instead
# of 401; it registers more endpoints than a tenant may keep; and its generated receivers,
# all unreachable, would open the circuit breaker of their origin, holding a requested test
# event past the route's wait (504). Every job it submits owes its events to each endpoint
# it registered: the dispatcher works through that backlog with more concurrency, and
# `POST /v1/webhooks/{id}/test` waits for its attempt as long as in production (the attempt
# timeout, 10 s, and a slack), not the 3 s of FAST_ENV.
FUZZ_ENV = {
    "CREWQ_AUTH_FAILURE_LIMIT": "1000000",
    "CREWQ_TENANT_MAX_WEBHOOK_ENDPOINTS": "100000",
    "CREWQ_WEBHOOK_BREAKER_THRESHOLD": "1000000",
    "CREWQ_DISPATCHER_CONCURRENCY": "128",
    "CREWQ_WEBHOOK_TIMEOUT": "10",
    # The fuzzer's schedules and bulk actions are made and read back, but not carried out:
    # its schedules (every second, by the dozen) would make jobs without end, and its bulk
    # cancels and retries move every job it submitted; the webhooks those jobs owe would
    # keep the dispatcher from a test send's attempt in time (504). Both are tested by
    # tests/acceptance/test_schedules.py and test_bulk.py.
    "CREWQ_SCHEDULER_INTERVAL": "86400",
    "CREWQ_BULK_INTERVAL": "86400",
}


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 30, what: str = "condition"
) -> Any:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.1)
        last = result
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Services:
    """Postgres and Redis servers: the configured ones (CREWQ_DATABASE_URL, CREWQ_REDIS_URL)
    or embedded ones started for the test session."""

    def __init__(self, workdir: Path) -> None:
        self._postgres: EmbeddedPostgres | None = None
        self._redis: EmbeddedRedis | None = None
        self.database_url = os.environ.get("CREWQ_DATABASE_URL") or ""
        self.redis_url = os.environ.get("CREWQ_REDIS_URL") or ""
        if not self.database_url:
            self._postgres = EmbeddedPostgres(workdir)
            self.database_url = self._postgres.url
        if not self.redis_url:
            self._redis = EmbeddedRedis(workdir, persist=False)
            self.redis_url = self._redis.url

    @property
    def started_redis(self) -> bool:
        """Whether the Redis is the embedded one started here (which wants a password)."""
        return self._redis is not None

    def database(self, name: str) -> str:
        parts = urlsplit(self.database_url)
        return urlunsplit(parts._replace(path=f"/{name}"))

    async def create_database(self, name: str, template: str | None = None) -> str:
        """A new database (a copy of `template`, if given); its URL."""
        admin = await asyncpg.connect(self.database_url)
        try:
            copy = f' TEMPLATE "{template}"' if template else ""
            await admin.execute(f'CREATE DATABASE "{name}"{copy}')
        finally:
            await admin.close()
        return self.database(name)

    def redis_db(self, index: int) -> str:
        parts = urlsplit(self.redis_url)
        return urlunsplit(parts._replace(path=f"/{index}"))

    def stop(self) -> None:
        if self._redis:
            self._redis.stop()
        if self._postgres:
            self._postgres.stop()


class Process:
    def __init__(self, role: str, env: dict[str, str], log_dir: Path) -> None:
        self.role = role
        self.log_path = log_dir / f"{role}-{uuid.uuid4().hex[:6]}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            [*role_command(), role],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_for_log(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.role} exited:\n{self.log()[-4000:]}")
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.role}: no {text!r} in its log:\n{self.log()[-4000:]}")

    def crew_pids(self) -> list[int]:
        """Crew processes: the children of this worker's forkserver."""
        found: list[int] = []
        for child in psutil.Process(self.pid).children():
            if "forkserver" in " ".join(child.cmdline()):
                found.extend(grandchild.pid for grandchild in child.children())
        return found

    def kill(self) -> None:
        """SIGKILL the worker and everything it started, as a crashed machine would."""
        with_children = psutil.Process(self.pid).children(recursive=True)
        self.popen.kill()
        for child in with_children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        self.popen.wait()

    async def stop(self, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.popen.wait, timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._log.close()
        return self.popen.returncode


class Platform:
    def __init__(self, services: Services, workdir: Path, llm_url: str, **env: str) -> None:
        self.services = services
        self.workdir = workdir
        self.name = f"crewq_t_{uuid.uuid4().hex[:10]}"
        self.database_url = services.database(self.name)
        # Redis dbs 1 to 14; the integration tier uses 15.
        self.redis_url = services.redis_db(1 + next(_redis_dbs) % 14)
        self.port = free_port()
        self.secret_key = generate_key()
        self.box = SecretBox([self.secret_key])
        self.checkpoint_key = generate_key()
        self.checkpoint_box = SecretBox([self.checkpoint_key])
        self.env = {
            **os.environ,
            **FAST_ENV,
            "CREWQ_DATABASE_URL": self.database_url,
            "CREWQ_REDIS_URL": self.redis_url,
            "CREWQ_API_PORT": str(self.port),
            "CREWQ_SECRET_KEY": self.secret_key,
            "CREWQ_CHECKPOINT_KEY": self.checkpoint_key,
            "CREWQ_CREWS_PATH": os.pathsep.join([str(TEST_CREWS), str(ROOT / "crews")]),
            "OPENAI_API_KEY": "sk-test-not-a-real-key",
            "OPENAI_BASE_URL": llm_url,
            **env,
        }
        # The platform's own tenant operates it: its admin key opens /health/debug.
        self.tenant_name = f"acme-{uuid.uuid4().hex[:6]}"
        self.env["CREWQ_OPERATOR_TENANTS"] = self.tenant_name
        self.processes: list[Process] = []
        self.key = ""
        self.signing_secret = ""
        self.tenant_id = ""
        self.http: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def prepare(self) -> None:
        await self.services.create_database(self.name)
        await migrate(self.database_url)
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.redis_url)
        await client.flushdb()
        await client.aclose()
        self.key, self.tenant_id, self.signing_secret = await self.new_tenant(
            "acme", name=self.tenant_name
        )
        self.http = aiohttp.ClientSession(base_url=self.base_url)

    async def new_tenant(
        self,
        prefix: str,
        scopes: list[str] | None = None,
        *,
        mode: KeyMode = KeyMode.LIVE,
        plan: Plan = Plan.UNLIMITED,
        name: str | None = None,
    ) -> tuple[str, str, str]:
        """A new tenant's key (every scope unless `scopes`), id and signing secret; its
        name is `prefix` and a random suffix unless `name` is given."""
        name = name or f"{prefix}-{uuid.uuid4().hex[:6]}"
        conn = await asyncpg.connect(self.database_url)
        try:
            created = await create_for_tenant(
                conn,
                name,
                parse_scopes(scopes) if scopes is not None else list(Scope),
                plan=plan,
                box=self.box,
                mode=mode,
            )
            owner = Owner(created.info.tenant_id, mode is KeyMode.LIVE)
            secret = await tenants.signing_secret(conn, owner, self.box)
        finally:
            await conn.close()
        assert secret is not None
        return created.key, created.info.tenant_id, secret

    def start(self, role: str, **env: str) -> Process:
        process = Process(role, {**self.env, **env}, self.workdir)
        self.processes.append(process)
        return process

    async def start_api(self, **env: str) -> Process:
        api = self.start("api", **env)
        await api.wait_for_log("API listening")
        return api

    async def start_worker(self, **env: str) -> Process:
        worker = self.start("worker", **env)
        await worker.wait_for_log("consuming")
        return worker

    async def start_dispatcher(self, **env: str) -> Process:
        dispatcher = self.start("dispatcher", **env)
        await dispatcher.wait_for_log("dispatcher ready")
        return dispatcher

    async def db(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.database_url)

    async def login_role(self) -> tuple[str, str]:
        """A Postgres role of its own for a process under test (so a test can cut exactly
        that process off), and the URL that logs in as it."""
        role = f"role_{uuid.uuid4().hex[:8]}"
        conn = await self.db()
        try:
            await conn.execute(f"CREATE ROLE {role} LOGIN")
            await conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
            await conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
        finally:
            await conn.close()
        return role, self.database_url.replace("postgres@", f"{role}@")

    async def terminate_backends(self) -> int:
        """Terminate every other Postgres backend of this platform's database (what a
        failover or a restarted pooler does to the roles' connections); how many."""
        conn = await self.db()
        try:
            killed: int = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        return killed

    async def job_events(self, job_id: str) -> list[str]:
        """The `job.*` events owed for a job, oldest first."""
        conn = await self.db()
        try:
            rows = await conn.fetch(
                "SELECT type FROM events WHERE job_id = $1 AND type LIKE 'job.%'"
                " ORDER BY created_at",
                job_id,
            )
        finally:
            await conn.close()
        return [r["type"] for r in rows]

    # --- the HTTP API, as a client uses it ---

    @staticmethod
    async def read_sse(
        resp: aiohttp.ClientResponse, count: int | None = None
    ) -> list[dict[str, str]]:
        """Server-sent events, one dict of fields each: `count` of them, or all to the end."""
        events: list[dict[str, str]] = []
        fields: dict[str, str] = {}
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if fields:
                    events.append(fields)
                    if len(events) == count:
                        return events
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        return events

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    async def request(
        self, method: str, path: str, *, key: str | None = None, **kwargs: Any
    ) -> tuple[int, Any, CIMultiDict[str]]:
        assert self.http is not None
        headers = {**self.headers(key), **kwargs.pop("headers", {})}
        async with self.http.request(method, path, headers=headers, **kwargs) as resp:
            body = (
                await resp.json() if resp.content_type == "application/json" else await resp.text()
            )
            return resp.status, body, CIMultiDict(resp.headers)

    async def submit(
        self, crew: str, inputs: dict[str, Any], key: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        status, body, _ = await self.request(
            "POST", "/v1/jobs", key=key, json={"crew": crew, "inputs": inputs, **fields}
        )
        assert status == 202, body
        return body  # type: ignore[no-any-return]

    async def job(self, job_id: str, key: str | None = None) -> dict[str, Any]:
        # As a client should: a 503 (a pooled connection Postgres just dropped) says retry.
        for _ in range(20):
            status, body, headers = await self.request("GET", f"/v1/jobs/{job_id}", key=key)
            if status != 503:
                break
            assert headers["Retry-After"] and body["error"]["code"] == "SERVICE_UNAVAILABLE"
            await asyncio.sleep(0.1)
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    async def wait_for_status(
        self,
        job_id: str,
        statuses: set[str],
        timeout: float = 60,
        key: str | None = None,
        poll: float = 0.1,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = await self.job(job_id, key=key)
            if job["status"] in statuses:
                return job
            await asyncio.sleep(poll)
        raise AssertionError(f"job {job_id} still {job.get('status')} after {timeout} s: {job}")

    async def close(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.processes))
        if self.http:
            await self.http.close()
