"""Observability from outside, over real HTTP and real processes: `/health`, `/healthz`, the
hidden `/health/debug` report and `crewq doctor`, the processes registry behind them,
Prometheus metrics of the API, workers and dispatchers, and JSON logs free of secrets."""

import asyncio
import hashlib
import secrets
import socket
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from crewq.dev import role_command
from crewq.embedded import EmbeddedRedis, free_port
from shared.runtime.secret_box import generate_key
from shared.runtime.version import VERSION
from tests.fakes import FakeLLM, Receiver, postgres_proxy
from tests.harness import Platform, Process, eventually

DEBUG = "/health/debug"
COMPONENTS = {
    "database",
    "redis",
    "queue",
    "workers",
    "dispatcher",
    "crews",
    "llm_connections",
    "config",
}
DEFAULT_MODEL = "openai/gpt-4o-mini"
FAKE_OPENAI_KEY = "sk-test-not-a-real-key"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def unique(prefix: str) -> str:
    """Receiver names are shared by the whole session; each test uses its own."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def get(
    platform: Platform, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, Any, CIMultiDict[str]]:
    """A request carrying exactly `headers`: no API key unless one is among them."""
    assert platform.http is not None
    async with platform.http.request(method, path, headers=headers or {}) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body, CIMultiDict(resp.headers)


async def report_when(
    platform: Platform,
    headers: dict[str, str],
    ready: Callable[[dict[str, Any]], bool],
    what: str,
) -> dict[str, Any]:
    """The `/health/debug` report once `ready` holds for it: processes register in
    Postgres a moment after they log that they are ready."""

    async def check() -> dict[str, Any] | None:
        status, body, _ = await get(platform, DEBUG, headers)
        assert status in (200, 503), body
        return body if ready(body) else None

    return await eventually(check, 30, what)  # type: ignore[no-any-return]


def alive_pids(report: dict[str, Any], component: str, listing: str) -> set[int]:
    details = report["components"][component].get("details") or {}
    return {p["pid"] for p in details.get(listing, [])}


def pids_of(platform: Platform, role: str) -> set[int]:
    return {p.pid for p in platform.processes if p.role == role and p.popen.poll() is None}


def failing(report: dict[str, Any]) -> set[str]:
    return {n for n, c in report["components"].items() if c["status"] == "fail"}


def assert_full_report(report: dict[str, Any], platform: Platform) -> None:
    """A healthy platform's report: every component ok (or skipped), each as documented."""
    assert report["status"] == "ok", report
    assert isinstance(report["duration_ms"], int) and report["duration_ms"] >= 0
    assert set(report["components"]) == COMPONENTS
    for name, component in report["components"].items():
        assert component["status"] in ("ok", "skipped"), (name, component)
        assert component.get("error") is None, (name, component)
        assert isinstance(component["latency_ms"], int) and component["latency_ms"] >= 0
        assert isinstance(component["checks"], list)
    env = report["environment"]
    assert env["version"] == VERSION and env["environment"] == "production"
    assert env["host"] == socket.gethostname()
    assert env["offline"] is False and env["default_model"] == DEFAULT_MODEL

    components = report["components"]
    database = components["database"]
    assert database["status"] == "ok" and "migrations_current" in database["checks"]
    pool = database["details"]
    assert {"pool_size", "pool_in_use", "pool_free", "pool_max"} <= set(pool)
    assert all(isinstance(pool[k], int) for k in ("pool_size", "pool_in_use", "pool_free"))
    assert pool["pool_in_use"] + pool["pool_free"] == pool["pool_size"] <= pool["pool_max"]
    assert components["redis"]["status"] == "ok"
    assert components["queue"]["status"] == "ok"
    assert isinstance(components["queue"]["details"]["depth"], int)

    workers = components["workers"]
    assert workers["status"] == "ok" and "workers_alive" in workers["checks"]
    assert alive_pids(report, "workers", "workers") == pids_of(platform, "worker")
    for worker in workers["details"]["workers"]:
        assert {"id", "host", "pid", "version", "concurrency", "running", "last_seen_at"} <= set(
            worker
        ), worker
        assert worker["host"] == socket.gethostname() and worker["version"] == VERSION
        assert worker["concurrency"] >= 1 and worker["running"] >= 0
        datetime.fromisoformat(worker["last_seen_at"])
    assert components["dispatcher"]["status"] == "ok"
    assert alive_pids(report, "dispatcher", "dispatchers") == pids_of(platform, "dispatcher")
    assert components["crews"]["status"] == "ok"
    assert {"echo", "boom"} <= set(components["crews"]["details"]["crews"])

    llm = components["llm_connections"]
    assert llm["status"] == "ok", llm
    [openai] = [c for c in llm["details"]["connections"] if c["provider"] == "openai"]
    assert openai["base_url"] == platform.env["OPENAI_BASE_URL"], openai
    assert openai["missing_credentials"] == []
    # A custom base URL (the fake on 127.0.0.1) is checked for credentials only.
    assert "openai" in llm["details"]["credentials_only"]
    assert "openai" not in llm["details"]["reachability"]

    config = components["config"]
    assert config["status"] == "ok"
    reported = config["details"]["processes"]
    assert len(reported) == 1 + len(pids_of(platform, "worker") | pids_of(platform, "dispatcher"))
    # Workers do not use CREWQ_SECRET_KEY (deployments do not give it to them) and do not
    # report it; the API and dispatchers report the same one.
    for process in reported:
        role = process["process"].split()[0]
        expected = None if role == "worker" else fingerprint(platform.secret_key)
        assert process["fingerprints"].get("CREWQ_SECRET_KEY") == expected, process
    assert {p["process"].split()[0] for p in reported} == {"api", "worker", "dispatcher"}
    # A report that shows fingerprints shows no secret.
    text = orjson.dumps(report).decode()
    assert platform.secret_key not in text and FAKE_OPENAI_KEY not in text


# ---------------------------------------------------------------------------------------------
# /health and /healthz


async def test_health_and_healthz_answer_without_a_key(stack: Platform) -> None:
    before = datetime.now(UTC)
    status, body, headers = await get(stack, "/health")
    assert status == 200, body
    assert set(body) == {"status", "version", "timestamp"}
    assert body["status"] == "healthy" and body["version"] == VERSION
    stamp = datetime.fromisoformat(body["timestamp"])
    assert stamp.tzinfo is not None, "the timestamp must say its time zone"
    assert abs((stamp - before).total_seconds()) < 300, body
    assert headers["Content-Type"].startswith("application/json")

    status, body, _ = await get(stack, "/healthz")
    assert status == 200, body
    assert body == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


async def test_health_is_503_unhealthy_when_the_database_does_not_answer(
    own_stack: Platform,
) -> None:
    proxy, through = postgres_proxy(own_stack.database_url)
    await proxy.start()
    token = secrets.token_urlsafe(24)
    try:
        await own_stack.start_api(CREWQ_DATABASE_URL=through(proxy.port), CREWQ_DEBUG_TOKEN=token)
        status, body, _ = await get(own_stack, "/health")
        assert status == 200 and body["status"] == "healthy", body

        proxy.cut()
        status, body, headers = await get(own_stack, "/health")
        assert status == 503, body
        assert body["error"]["code"] == "UNHEALTHY", body
        assert body["error"]["request_id"] and headers["Retry-After"]
        status, body, _ = await get(own_stack, "/healthz")
        assert status == 503 and body["error"]["code"] == "UNHEALTHY", body
        status, report, _ = await get(own_stack, DEBUG, {"X-Debug-Token": token})
        assert status == 503 and report["status"] == "fail", report
        assert report["components"]["database"]["status"] == "fail"
        assert report["components"]["database"]["error"]
        assert report["components"]["redis"]["status"] == "ok"

        proxy.restore()

        async def healthy() -> bool:
            status, _, _ = await get(own_stack, "/health")
            return status == 200

        await eventually(healthy, 30, "/health to answer 200 once the database is back")
    finally:
        proxy.restore()
        await own_stack.close()  # before the proxy the API connects through goes away
        await proxy.stop()


# ---------------------------------------------------------------------------------------------
# /health/debug: hidden, and what it reports


async def test_debug_report_is_the_unknown_route_404_to_anyone_else(stack: Platform) -> None:
    reader_key, _, _ = await stack.new_tenant("obs-reader", scopes=["jobs:read"])
    invalid = "crq_live_" + secrets.token_urlsafe(32)
    assert len(invalid) == len("crq_live_") + 43
    status, unknown, unknown_headers = await get(stack, "/no/such/route")
    assert status == 404 and unknown["error"]["code"] == "NOT_FOUND", unknown
    cases = {
        "no credentials": {},
        "a debug token, none being configured": {"X-Debug-Token": secrets.token_urlsafe(24)},
        "an empty debug token": {"X-Debug-Token": ""},
        "a key without admin": bearer(reader_key),
        "a key without admin, as X-API-Key": {"X-API-Key": reader_key},
        "an invalid key that looks real": bearer(invalid),
        "an invalid key, as X-API-Key": {"X-API-Key": invalid},
        "something that is no key": bearer("hunter2"),
    }
    for what, headers in cases.items():
        status, body, got = await get(stack, DEBUG, headers)
        assert status == 404, (what, body)
        assert body["error"]["code"] == "NOT_FOUND", (what, body)
        assert set(body["error"]) == set(unknown["error"]), (what, body)
        assert body["error"]["message"] == unknown["error"]["message"], (what, body)
        assert "WWW-Authenticate" not in got, what
        assert {h.lower() for h in got} == {h.lower() for h in unknown_headers}, what

    # Another tenant's admin administers its own tenant, not the deployment: 404 too.
    tenant_admin, _, _ = await stack.new_tenant("obs-admin", scopes=["admin"])
    status, body, _ = await get(stack, DEBUG, bearer(tenant_admin))
    assert (status, body["error"]["code"]) == (404, "NOT_FOUND"), body

    # An admin key of an operator tenant (CREWQ_OPERATOR_TENANTS: the platform's own) opens it.
    status, report, answered = await get(stack, DEBUG, bearer(stack.key))
    assert status == 200, report
    assert answered["Cache-Control"] == "no-store"
    assert_full_report(report, stack)
    status, report, _ = await get(stack, DEBUG, {"X-API-Key": stack.key})
    assert status == 200 and report["status"] == "ok", report


async def test_debug_report_other_methods_look_like_an_unknown_route(stack: Platform) -> None:
    """A scanner that tries another method must not learn the route exists either."""
    for method in ("POST", "PUT", "DELETE"):
        status, unknown, _ = await get(stack, "/no/such/route", method=method)
        assert status == 404, (method, unknown)
        status, body, got = await get(stack, DEBUG, method=method)
        assert (status, body["error"]["code"]) == (404, unknown["error"]["code"]), (
            method,
            status,
            body,
        )
        assert "Allow" not in got, (method, dict(got))


async def test_metrics_count_refused_debug_requests_as_an_unknown_route(
    own_stack: Platform,
) -> None:
    """A refused probe of the hidden route must not show up in the metrics under the
    route's own name, or whoever reads them (the metrics port is not the public one, but
    its readers are not all operators) finds it there."""
    metrics_port = free_port()
    await own_stack.start_api(CREWQ_METRICS_PORT=str(metrics_port))
    for headers in ({}, {"X-Debug-Token": secrets.token_urlsafe(24)}):
        status, _, _ = await get(own_stack, DEBUG, headers)
        assert status == 404
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp,
    ):
        assert resp.status == 200
        text = await resp.text()
    refused = [
        labels
        for (name, labels) in parse(text)
        if name == "crewq_http_requests_total" and ("status", "404") in labels
    ]
    assert refused, "404s are not counted at all"
    assert not [dict(ls) for ls in refused if ("route", DEBUG) in ls], [dict(ls) for ls in refused]


async def test_degraded_without_a_worker_and_at_once_after_one_signs_off(
    own_stack: Platform,
) -> None:
    token = secrets.token_urlsafe(24)
    await own_stack.start_api(CREWQ_DEBUG_TOKEN=token)
    dispatcher = await own_stack.start_dispatcher()
    admitted = {"X-Debug-Token": token}

    # The token is compared whole: a wrong one (same length, one character off) is a 404.
    status, unknown, _ = await get(own_stack, "/no/such/route")
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    for headers in ({"X-Debug-Token": wrong}, {"X-Debug-Token": token[:-1]}, {}):
        status, body, _ = await get(own_stack, DEBUG, headers)
        assert (status, body["error"]["code"]) == (404, unknown["error"]["code"]), body

    report = await report_when(
        own_stack,
        admitted,
        lambda r: r["components"]["dispatcher"]["status"] == "ok",
        "the dispatcher to register",
    )
    status, report, _ = await get(own_stack, DEBUG, admitted)
    assert status == 200, report
    assert report["status"] == "degraded", report
    assert failing(report) == {"workers"}, report
    workers = report["components"]["workers"]
    assert "no worker alive" in workers["error"] and workers["details"]["workers"] == []

    worker = await own_stack.start_worker()
    report = await report_when(
        own_stack,
        admitted,
        lambda r: r["components"]["workers"]["status"] == "ok",
        "the worker to register",
    )
    status, report, _ = await get(own_stack, DEBUG, admitted)
    assert status == 200
    assert_full_report(report, own_stack)
    [listed] = report["components"]["workers"]["details"]["workers"]
    assert listed["pid"] == worker.pid

    # SIGTERM: the worker signs off as it stops, so it is not alive the moment it has exited.
    assert await worker.stop() == 0
    status, report, _ = await get(own_stack, DEBUG, admitted)
    assert status == 200 and report["status"] == "degraded", report
    assert failing(report) == {"workers"}, report
    conn = await own_stack.db()
    try:
        row = await conn.fetchrow(
            "SELECT role, stopped_at FROM processes WHERE id = $1", listed["id"]
        )
    finally:
        await conn.close()
    assert row is not None and row["role"] == "worker" and row["stopped_at"] is not None

    # So does a dispatcher.
    assert await dispatcher.stop() == 0
    status, report, _ = await get(own_stack, DEBUG, admitted)
    assert status == 200 and report["status"] == "degraded", report
    assert failing(report) == {"workers", "dispatcher"}, report
    assert "no dispatcher alive" in report["components"]["dispatcher"]["error"]


async def test_fail_and_503_when_redis_is_down(own_stack: Platform, workdir: Path) -> None:
    private = EmbeddedRedis(workdir / f"obs-redis-{uuid.uuid4().hex[:6]}", persist=False)
    try:
        token = secrets.token_urlsafe(24)
        await own_stack.start_api(CREWQ_REDIS_URL=private.url, CREWQ_DEBUG_TOKEN=token)
        status, report, _ = await get(own_stack, DEBUG, {"X-Debug-Token": token})
        assert status == 200 and report["components"]["redis"]["status"] == "ok", report

        private.stop()
        for headers in ({"X-Debug-Token": token}, bearer(own_stack.key)):
            status, report, _ = await get(own_stack, DEBUG, headers)
            assert status == 503, (headers.keys(), report)
            assert report["status"] == "fail", report
            redis = report["components"]["redis"]
            assert redis["status"] == "fail" and redis["error"], redis
            assert report["components"]["database"]["status"] == "ok", report
        # /health pings the database only.
        status, body, _ = await get(own_stack, "/health")
        assert status == 200 and body["status"] == "healthy", body
        status, body, _ = await get(own_stack, "/healthz")
        assert status == 503 and body["error"]["code"] == "UNHEALTHY", body
    finally:
        private.stop()


async def test_a_dispatcher_with_another_secret_key_makes_config_fail(
    own_stack: Platform,
) -> None:
    # The dispatcher, which opens the sealed signing secrets, is where another key matters;
    # workers are given none and report none.
    token = secrets.token_urlsafe(24)
    other_key = generate_key()
    assert other_key != own_stack.secret_key
    # Quick heartbeats, and a process taken for dead after 5 s of silence.
    beat = {"CREWQ_PROCESS_HEARTBEAT_INTERVAL": "0.5"}
    await own_stack.start_api(CREWQ_DEBUG_TOKEN=token, CREWQ_PROCESS_DEAD_AFTER="5")
    await own_stack.start_worker(**beat)
    _, odd = await asyncio.gather(
        own_stack.start_dispatcher(**beat),
        own_stack.start_dispatcher(CREWQ_SECRET_KEY=other_key, **beat),
    )
    admitted = {"X-Debug-Token": token}
    await report_when(
        own_stack,
        admitted,
        lambda r: (
            len(alive_pids(r, "dispatcher", "dispatchers")) == 2
            and r["components"]["workers"]["status"] == "ok"
        ),
        "both dispatchers and the worker to register",
    )
    status, report, _ = await get(own_stack, DEBUG, admitted)
    assert status == 200, report
    assert report["status"] == "degraded", report
    assert failing(report) == {"config"}, report
    error = report["components"]["config"]["error"]
    ours, theirs = fingerprint(own_stack.secret_key), fingerprint(other_key)
    assert "CREWQ_SECRET_KEY" in error and ours in error and theirs in error, error
    [odd_entry] = [
        d
        for d in report["components"]["dispatcher"]["details"]["dispatchers"]
        if d["pid"] == odd.pid
    ]
    assert odd_entry["id"] in error, error
    text = orjson.dumps(report).decode()
    assert own_stack.secret_key not in text and other_key not in text

    # Killed, the odd one cannot sign off: it is taken for dead once it has been silent for
    # CREWQ_PROCESS_DEAD_AFTER, while the others, heartbeating, stay alive throughout.
    odd.kill()
    report = await report_when(
        own_stack,
        admitted,
        lambda r: odd.pid not in alive_pids(r, "dispatcher", "dispatchers"),
        "the killed dispatcher to be taken for dead",
    )
    assert_full_report(report, own_stack)
    conn = await own_stack.db()
    try:
        row = await conn.fetchrow("SELECT stopped_at FROM processes WHERE id = $1", odd_entry["id"])
    finally:
        await conn.close()
    assert row is not None and row["stopped_at"] is None, "a killed dispatcher signed off"


# ---------------------------------------------------------------------------------------------
# crewq doctor


async def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [*role_command(), "doctor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_doctor_reports_a_healthy_platform(stack: Platform) -> None:
    text, as_json = await asyncio.gather(doctor(stack.env), doctor(stack.env, "--json"))
    assert text.returncode == 0, text.stdout + text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"crewq {VERSION} (production) on {socket.gethostname()}:"), lines
    assert " OK in " in lines[0], lines[0]
    for name in COMPONENTS:
        [line] = [ln for ln in lines if ln.split("]", 1)[-1].split()[:1] == [name]]
        assert "[ok  ]" in line or "[skip]" in line, line
    assert "error:" not in text.stdout
    assert stack.secret_key not in text.stdout + text.stderr

    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    report = orjson.loads(as_json.stdout)
    assert set(report["components"]) == COMPONENTS
    assert_full_report(report, stack)


async def test_doctor_exits_1_when_redis_is_unreachable(stack: Platform) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    text, as_json = await asyncio.gather(
        doctor({**stack.env, "CREWQ_REDIS_URL": nowhere}),
        doctor({**stack.env, "CREWQ_REDIS_URL": nowhere}, "--json"),
    )
    assert text.returncode == 1, text.stdout + text.stderr
    assert " FAIL in " in text.stdout.splitlines()[0], text.stdout
    [line] = [ln for ln in text.stdout.splitlines() if "] redis " in ln]
    assert "[FAIL]" in line, line
    assert as_json.returncode == 1, as_json.stdout + as_json.stderr
    report = orjson.loads(as_json.stdout)
    assert report["status"] == "fail"
    assert report["components"]["redis"]["status"] == "fail"
    assert report["components"]["redis"]["error"]
    assert report["components"]["database"]["status"] == "ok"


# ---------------------------------------------------------------------------------------------
# Prometheus metrics


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(ls)[label] for (n, ls) in samples if n == name and label in dict(ls)}


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain"), resp.headers
        return parse(await resp.text())


async def test_metrics_move_with_real_jobs_and_webhooks(
    own_stack: Platform, receiver: Receiver, llm: FakeLLM
) -> None:
    token = secrets.token_urlsafe(24)
    api_port, worker_port, dispatcher_port = free_port(), free_port(), free_port()
    await own_stack.start_api(CREWQ_DEBUG_TOKEN=token, CREWQ_METRICS_PORT=str(api_port))
    worker, _ = await asyncio.gather(
        own_stack.start_worker(CREWQ_METRICS_PORT=str(worker_port)),
        own_stack.start_dispatcher(CREWQ_METRICS_PORT=str(dispatcher_port)),
    )
    # Every role's metrics are on its metrics port; the API's public port has none.
    api_url = f"http://127.0.0.1:{api_port}/metrics"
    worker_url = f"http://127.0.0.1:{worker_port}/metrics"
    dispatcher_url = f"http://127.0.0.1:{dispatcher_port}/metrics"
    name = unique("obs-metrics")
    receiver.configure(name, secrets=[own_stack.signing_secret])

    async with aiohttp.ClientSession() as http:
        api0, worker0, dispatcher0 = await asyncio.gather(
            scrape(http, api_url), scrape(http, worker_url), scrape(http, dispatcher_url)
        )
        for samples, role in ((api0, "api"), (worker0, "worker"), (dispatcher0, "dispatcher")):
            assert total(samples, "crewq_build_info", role=role, version=VERSION) == 1, role

        # Two jobs, each with a webhook_url: two job.completed deliveries.
        jobs = [
            await own_stack.submit(
                "echo", {"message": f"metrics {i}"}, webhook_url=receiver.url(name)
            )
            for i in range(2)
        ]
        for job in jobs:
            done = await own_stack.wait_for_status(job["id"], {"completed", "failed"})
            assert done["status"] == "completed", done
        hooks = await receiver.wait_for(name, 2)
        assert all(h.verified and h.event["type"] == "job.completed" for h in hooks)

        async def moved(
            url: str, before: Samples, metric: str, by: float, **labels: str
        ) -> Samples:
            """A scrape of `url` once `metric` has grown by `by` since `before`."""

            async def check() -> Samples | None:
                now = await scrape(http, url)
                grown = total(now, metric, **labels) - total(before, metric, **labels)
                return now if grown >= by else None

            return await eventually(check, 30, f"{metric}{labels} to grow by {by}")  # type: ignore[no-any-return]

        def delta(now: Samples, before: Samples, metric: str, **labels: str) -> float:
            return total(now, metric, **labels) - total(before, metric, **labels)

        # The API.
        status, _, _ = await get(own_stack, "/no/such/route")
        assert status == 404
        api1 = await scrape(http, api_url)
        assert delta(api1, api0, "crewq_jobs_submitted_total", crew="echo") == 2
        posted = {"method": "POST", "route": "/v1/jobs"}
        assert delta(api1, api0, "crewq_http_requests_total", status="202", **posted) == 2
        assert delta(api1, api0, "crewq_http_request_duration_seconds_count", **posted) == 2
        read = {"method": "GET", "route": "/v1/jobs/{job_id}", "status": "200"}
        assert delta(api1, api0, "crewq_http_requests_total", **read) >= 2
        routes = label_values(api1, "crewq_http_requests_total", "route")
        # Route templates, never raw paths: no job id is a label.
        assert not any(job["id"] in r for r in routes for job in jobs), routes
        assert "/no/such/route" not in routes, routes
        unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
        assert delta(api1, api0, "crewq_http_requests_total", **unmatched) == 1

        # The worker: counted after the outcome is stored, so wait for the count.
        worker1 = await moved(
            worker_url, worker0, "crewq_jobs_finished_total", 2, crew="echo", outcome="completed"
        )
        assert delta(worker1, worker0, "crewq_jobs_started_total", crew="echo") == 2
        assert delta(worker1, worker0, "crewq_jobs_finished_total", crew="echo") == 2
        assert (
            delta(
                worker1,
                worker0,
                "crewq_job_duration_seconds_count",
                crew="echo",
                outcome="completed",
            )
            == 2
        )
        assert delta(worker1, worker0, "crewq_job_queue_wait_seconds_count", crew="echo") == 2
        assert delta(worker1, worker0, "crewq_llm_calls_total", outcome="succeeded") == 2
        assert delta(worker1, worker0, "crewq_llm_calls_total", outcome="failed") == 0
        # One series for the one model the crews use (named with or without its provider).
        models = label_values(worker1, "crewq_llm_calls_total", "model")
        assert len(models) == 1 and models <= {DEFAULT_MODEL, DEFAULT_MODEL.split("/")[1]}, models
        # The fake LLM reports 11 prompt and 7 completion tokens a call.
        assert delta(worker1, worker0, "crewq_llm_tokens_total", kind="prompt") == 22
        assert delta(worker1, worker0, "crewq_llm_tokens_total", kind="completion") == 14
        assert total(worker1, "crewq_jobs_running") == 0
        assert ("crewq_queue_depth", frozenset()) in worker1
        assert delta(worker1, worker0, "crewq_job_retries_total") == 0
        assert delta(worker1, worker0, "crewq_job_timeouts_total") == 0

        # The dispatcher.
        dispatcher1 = await moved(
            dispatcher_url, dispatcher0, "crewq_webhook_attempts_total", 2, outcome="succeeded"
        )
        assert delta(dispatcher1, dispatcher0, "crewq_webhook_attempts_total") == 2
        assert (
            delta(
                dispatcher1,
                dispatcher0,
                "crewq_webhook_delivery_seconds_count",
                outcome="succeeded",
            )
            == 2
        )

        # A job past its timeout.
        late = await own_stack.submit("echo", {"message": "[[sleep:5]] obs-timeout"}, timeout=1)
        done = await own_stack.wait_for_status(late["id"], {"completed", "failed"}, timeout=30)
        assert done["status"] == "failed" and done["error"]["code"] == "TIMEOUT", done
        worker2 = await moved(worker_url, worker1, "crewq_job_timeouts_total", 1, crew="echo")
        assert delta(worker2, worker1, "crewq_job_timeouts_total", crew="echo") == 1
        worker2 = await moved(
            worker_url, worker1, "crewq_jobs_finished_total", 1, crew="echo", outcome="failed"
        )
        assert delta(worker2, worker1, "crewq_jobs_finished_total", crew="echo") == 1
        assert delta(worker2, worker1, "crewq_job_retries_total") == 0

        # A crew process that dies mid-job: the attempt is retried, and counted as such.
        crashing = await own_stack.submit(
            "echo", {"message": "[[sleep:3]] obs-crash"}, max_retries=2
        )

        async def calling() -> bool:
            return bool(llm.requests_with("obs-crash"))

        await eventually(calling, 30, "the crew to call the LLM")
        running = await scrape(http, worker_url)
        assert total(running, "crewq_jobs_running") == 1
        for pid in worker.crew_pids():
            psutil.Process(pid).kill()
        done = await own_stack.wait_for_status(crashing["id"], {"completed", "failed"}, timeout=60)
        assert done["status"] == "completed" and done["attempt"] == 2, done
        worker3 = await moved(
            worker_url, worker2, "crewq_jobs_finished_total", 1, crew="echo", outcome="completed"
        )
        assert delta(worker3, worker2, "crewq_job_retries_total", crew="echo") == 1
        crashed = {"crew": "echo", "reason": "CREW_ERROR"}
        assert delta(worker3, worker2, "crewq_job_retries_total", **crashed) == 1
        assert delta(worker3, worker2, "crewq_jobs_started_total", crew="echo") == 2

    # /health/debug says where each worker and dispatcher serves its metrics.
    status, report, _ = await get(own_stack, DEBUG, {"X-Debug-Token": token})
    assert status == 200, report
    [listed] = report["components"]["workers"]["details"]["workers"]
    assert listed["metrics_port"] == worker_port, listed
    [dispatcher] = report["components"]["dispatcher"]["details"]["dispatchers"]
    assert dispatcher["metrics_port"] == dispatcher_port, dispatcher


# ---------------------------------------------------------------------------------------------
# Logs


def _json_lines(process: Process) -> tuple[list[dict[str, Any]], list[str]]:
    """A process's log lines that parse as JSON objects, and those that do not."""
    parsed: list[dict[str, Any]] = []
    other: list[str] = []
    for line in process.log().splitlines():
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            other.append(line)
            continue
        if isinstance(entry, dict):
            parsed.append(entry)
        else:
            other.append(line)
    return parsed, other


async def test_logs_are_json_lines_with_ids_and_no_secrets(
    own_stack: Platform, receiver: Receiver
) -> None:
    token = secrets.token_urlsafe(24)
    # Logs as production writes them: nothing says which format, so JSON.
    assert "CREWQ_LOG_FORMAT" not in own_stack.env and "CREWQ_ENVIRONMENT" not in own_stack.env
    await own_stack.start_api(CREWQ_DEBUG_TOKEN=token)
    await asyncio.gather(own_stack.start_worker(), own_stack.start_dispatcher())
    key = own_stack.key
    invalid = "crq_live_" + secrets.token_urlsafe(32)

    request_ids = {f"req_obs_{what}_{uuid.uuid4().hex[:8]}" for what in ("bearer", "header")}
    bearer_id, header_id = sorted(request_ids)
    status, _, _ = await get(own_stack, "/v1/jobs", {**bearer(key), "X-Request-Id": bearer_id})
    assert status == 200
    status, _, _ = await get(own_stack, "/v1/jobs", {"X-API-Key": key, "X-Request-Id": header_id})
    assert status == 200
    status, body, _ = await get(own_stack, "/v1/jobs", bearer(invalid))
    assert status == 401 and body["error"]["code"] == "INVALID_API_KEY", body
    status, body, _ = await get(own_stack, "/v1/jobs", {"X-API-Key": invalid})
    assert status == 401, body
    status, body, _ = await get(own_stack, f"/v1/jobs?api_key={key}")
    assert status == 401, body
    status, body, _ = await get(own_stack, f"/v1/jobs?api_key={invalid}", bearer(key))
    assert status in (200, 400), body

    name = unique("obs-logs")
    receiver.configure(name, secrets=[own_stack.signing_secret])
    job = await own_stack.submit("echo", {"message": "log me"}, webhook_url=receiver.url(name))
    done = await own_stack.wait_for_status(job["id"], {"completed", "failed"})
    assert done["status"] == "completed", done
    [hook] = await receiver.wait_for(name, 1)
    assert hook.verified

    status, report, _ = await get(own_stack, DEBUG, {"X-Debug-Token": token})
    assert status == 200, report
    assert_full_report(report, own_stack)

    # Stopped, so everything they had to say is on disk (shutting down is logged too).
    codes = await asyncio.gather(*(p.stop() for p in own_stack.processes))
    assert codes == [0] * len(codes), codes

    forbidden = {
        "the valid key": key,
        "the invalid key": invalid,
        "the tenant's signing secret": own_stack.signing_secret,
        "CREWQ_SECRET_KEY": own_stack.secret_key,
        "the debug token": token,
        "OPENAI_API_KEY": FAKE_OPENAI_KEY,
    }
    for process in own_stack.processes:
        text = process.log()
        assert text.strip(), f"{process.role} logged nothing"
        for what, value in forbidden.items():
            assert value not in text, f"{what} is in the {process.role} log {process.log_path}"

    by_role: dict[str, list[dict[str, Any]]] = {}
    not_json: dict[str, list[str]] = {}
    for process in own_stack.processes:
        parsed, other = _json_lines(process)
        by_role.setdefault(process.role, []).extend(parsed)
        if other:
            not_json.setdefault(f"{process.role} ({process.log_path})", []).extend(other)
    for role, entries in by_role.items():
        assert entries, f"no JSON line in the {role} log"
        for entry in entries:
            assert {"timestamp", "level", "logger", "role", "message"} <= set(entry), entry
            datetime.fromisoformat(entry["timestamp"])
        roles = {e["role"] for e in entries}
        assert role in roles, (role, roles)
        # Crew processes the worker started write to its log, as role `crew`.
        assert roles <= ({"worker", "crew"} if role == "worker" else {role}), (role, roles)

    # The API's lines about requests carry the request's id (and, once known, its tenant).
    access = [e for e in by_role["api"] if e["logger"] == "crewq.access"]
    assert access, "no access log line"
    assert all(e.get("request_id") for e in access), [e for e in access if not e.get("request_id")]
    for request_id in (bearer_id, header_id):
        [line] = [e for e in access if e["request_id"] == request_id]
        assert line.get("tenant_id") == own_stack.tenant_id, line
    # The worker's lines about the job carry its id and its tenant's.
    about_job = [e for e in by_role["worker"] if e.get("job_id") == job["id"]]
    assert about_job, "no worker line carries the job id"
    assert any(e.get("tenant_id") == own_stack.tenant_id for e in about_job), about_job

    assert not not_json, "lines that are not JSON:\n" + "\n".join(
        f"{where}: {line[:300]}" for where, lines in not_json.items() for line in lines[:20]
    )
