"""`crewq dev`, as a newcomer runs it: embedded Postgres and Redis, the offline model, the
lines scripts read, and a clean stop on Ctrl-C."""

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil

from crewq.embedded import free_port

PROVIDER_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE", "ANTHROPIC_API_KEY")


async def _read_lines(stream: asyncio.StreamReader, wanted: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    while not all(w in found for w in wanted):
        line = (await asyncio.wait_for(stream.readline(), timeout=120)).decode()
        assert line, f"crewq dev stopped printing before {wanted}; got {found}"
        for prefix in wanted:
            if line.startswith(prefix):
                found[prefix] = line.removeprefix(prefix).strip()
    return found


async def test_crewq_dev_runs_a_job_offline_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in PROVIDER_VARS and not k.startswith("CREWQ_")
    }
    env |= {"CREWQ_API_PORT": str(port), "CREWQ_DATA_DIR": str(tmp_path / "data")}
    # Run from a project of the user's own whose packages share crewq's names: none of
    # them may be imported in place of crewq's.
    project = tmp_path / "project"
    for package in ("api", "worker", "shared", "schemas"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text(
            f"raise ImportError('the user's own {package} package was imported')\n"
        )
    dev = await asyncio.create_subprocess_exec(
        Path(sys.executable).parent / "crewq", "dev",  # as `uv run crewq dev` runs it
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert dev.stdout is not None
    try:
        lines = await _read_lines(dev.stdout, ("API URL:", "API key:", "Webhook signing secret:"))
        assert lines["API URL:"] == f"http://127.0.0.1:{port}"
        assert lines["Webhook signing secret:"].startswith("whsec_")
        headers = {"Authorization": f"Bearer {lines['API key:']}"}
        async with aiohttp.ClientSession(base_url=lines["API URL:"], headers=headers) as http:
            async with http.post(
                "/v1/jobs", json={"crew": "research", "inputs": {"topic": "dev"}}
            ) as r:
                assert r.status == 202
                job = await r.json()
            deadline = time.monotonic() + 60
            while job["status"] not in ("completed", "failed") and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                async with http.get(f"/v1/jobs/{job['id']}") as r:
                    job = await r.json()
        assert job["status"] == "completed", job
        assert job["result"]["offline"] is True
        assert job["result"]["models"] == ["crewq/offline"]
        assert "offline model" in job["result"]["raw"]
        children = psutil.Process(dev.pid).children(recursive=True)
        assert len(children) >= 5  # postgres, redis, api, worker, dispatcher (and more)
    finally:
        dev.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(dev.wait(), timeout=90)
    assert code == 0
    await asyncio.sleep(0.5)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running after Ctrl-C: {[c.name() for c in alive]}"
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()
    assert (tmp_path / "data" / "dev-api-key").read_text().strip() == lines["API key:"]
    _assert_private(tmp_path / "data")


def _assert_private(data: Path) -> None:
    """The data folder holds keys, the Redis password and both databases: no one but its
    owner reads any of it (the folder is 0711 under root, where the embedded Postgres runs
    as a user of its own that must pass through it; 0700 otherwise)."""
    mode = stat.S_IMODE(data.stat().st_mode)
    assert mode == (0o711 if os.geteuid() == 0 else 0o700), oct(mode)
    for name in ("secret-key", "dev-api-key", "redis-password"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((data / "redis").stat().st_mode) == 0o700
    redis_files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (data / "redis").iterdir()}
    assert "appendonly.aof" in redis_files
    assert redis_files == dict.fromkeys(redis_files, 0o600), redis_files
