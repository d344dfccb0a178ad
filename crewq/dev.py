"""`crewq dev`: the whole platform on one machine, with nothing installed but Python.

Starts an embedded PostgreSQL and Redis (data under CREWQ_DATA_DIR, `.crewq/` by default)
unless CREWQ_DATABASE_URL / CREWQ_REDIS_URL are set, applies migrations, makes sure a `dev`
tenant and key exist, then runs the API, one worker and the dispatcher as child processes
(the same commands production runs) until Ctrl-C, and stops everything it started.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg

from crewq.embedded import EmbeddedPostgres, EmbeddedRedis
from crewq.private_files import private_dir, read_private, write_private
from schemas.account import Plan, Scope
from shared.domain.owners import Owner
from shared.runtime.db import migrate
from shared.runtime.secret_box import SecretBox, generate_key
from shared.runtime.settings import Settings
from shared.store import tenants
from shared.store.keys import Refusal, authenticate, create_for_tenant

DEV_DEFAULTS = {
    # Readable text logs, and the settings a laptop wants (shared/runtime/settings.py Environment).
    "CREWQ_ENVIRONMENT": "development",
    # The dev key (the `dev` tenant's admin) opens GET /health/debug.
    "CREWQ_OPERATOR_TENANTS": "dev",
    # Let a newcomer point webhooks at a local receiver; production refuses both.
    "CREWQ_WEBHOOK_ALLOW_HTTP": "true",
    "CREWQ_WEBHOOK_ALLOW_PRIVATE": "true",
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
}
ROLES = ("api", "worker", "dispatcher")


def role_command() -> list[str]:
    """How to start a crewq role in a process of its own. `-P`: `python -m` would put the
    working directory first on sys.path, and a user's own `api`, `worker`, `shared` or
    `schemas` package there would shadow crewq's (the forkserver inherits the flag)."""
    return [sys.executable, "-P", "-m", "crewq"]


def dev_secret_key(data_dir: Path, name: str = "secret-key") -> str:
    """A Fernet key (by default the one sealing signing secrets; `checkpoint-key`, the one
    sealing crew checkpoints), made once and kept in the data dir."""
    return read_private(data_dir / name, generate_key)


async def dev_credentials(database_url: str, data_dir: Path, box: SecretBox) -> tuple[str, str]:
    """The dev tenant's admin API key (kept in the data dir so it survives restarts) and
    its webhook signing secret."""
    key_file = data_dir / "dev-api-key"
    conn = await asyncpg.connect(database_url)
    try:
        key = read_private(key_file, str) if key_file.exists() else ""
        principal = await authenticate(conn, key) if key else Refusal.UNKNOWN
        if isinstance(principal, Refusal):
            created = await create_for_tenant(
                conn, "dev", [Scope.ADMIN], plan=Plan.UNLIMITED, box=box, name="crewq dev"
            )
            write_private(key_file, created.key + "\n")
            key = created.key
            tenant_id = created.info.tenant_id
        else:
            tenant_id = principal.tenant_id
        secret = await tenants.signing_secret(conn, Owner(tenant_id), box)
        assert secret is not None
        return key, secret
    finally:
        await conn.close()


def _wait_for_api(url: str, children: list[subprocess.Popen[bytes]], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(c.poll() is not None for c in children):
            raise RuntimeError("a crewq process exited during startup; see the log above")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API did not answer at {url} within {timeout:.0f} s")


def _stop(children: list[subprocess.Popen[bytes]], grace: float) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _role_env(role: str, settings: Settings) -> dict[str, str]:
    """One machine, one CREWQ_METRICS_PORT: the worker serves /metrics on it, the
    dispatcher on the next port, the API on the one after."""
    if settings.metrics_port and role in ("dispatcher", "api"):
        step = 1 if role == "dispatcher" else 2
        return {"CREWQ_METRICS_PORT": str(settings.metrics_port + step)}
    return {}


def run_dev(settings: Settings) -> None:
    env = {**DEV_DEFAULTS, **os.environ}
    # It holds keys, the Redis password and both databases' files: its owner's alone.
    data_dir = private_dir(settings.data_dir)
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    children: list[subprocess.Popen[bytes]] = []
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        if not settings.database_url:
            postgres = EmbeddedPostgres(data_dir)
            env["CREWQ_DATABASE_URL"] = postgres.url
            print(f"Postgres: embedded, data in {data_dir.resolve() / 'postgres'}", flush=True)
        if not settings.redis_url:
            redis = EmbeddedRedis(data_dir)
            env["CREWQ_REDIS_URL"] = redis.url
            # Not the URL itself: it carries the password (kept in the data folder).
            print(f"Redis: embedded on {redis.address}, password in the data folder", flush=True)
        if not settings.secret_key:
            env["CREWQ_SECRET_KEY"] = dev_secret_key(data_dir)
        if not settings.checkpoint_key:
            env["CREWQ_CHECKPOINT_KEY"] = dev_secret_key(data_dir, "checkpoint-key")
        box = SecretBox.from_setting(env["CREWQ_SECRET_KEY"])
        database_url = env["CREWQ_DATABASE_URL"]
        asyncio.run(migrate(database_url))
        key, secret = asyncio.run(dev_credentials(database_url, data_dir, box))
        children = [
            subprocess.Popen([*role_command(), role], env={**env, **_role_env(role, settings)})
            for role in ROLES
        ]
        # A wildcard bind is reachable on loopback; print an address a client can use.
        host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
        api_url = f"http://{host}:{settings.api_port}"
        _wait_for_api(api_url, children)
        print(f"API URL: {api_url}", flush=True)
        print(f"API key: {key}", flush=True)
        print(f"Webhook signing secret: {secret}", flush=True)
        print(
            f"Diagnostics: curl -H 'Authorization: Bearer <API key>' {api_url}/health/debug",
            flush=True,
        )
        if settings.offline():
            print(
                "LLM: no provider configured; crews run on the built-in offline model", flush=True
            )
        print("crewq dev is running; Ctrl-C stops it.", flush=True)
        while not stop_requested:
            if any(c.poll() is not None for c in children):
                print("a crewq process exited; stopping the others", file=sys.stderr, flush=True)
                break
            time.sleep(0.2)
    finally:
        _stop(children, grace=settings.drain_timeout + 15)
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()
