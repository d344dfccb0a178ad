"""Prometheus metrics without crewq processes: the helpers move the series they name, and
the API's middleware labels requests by route template and final status, errors included."""

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from api import metrics as api_metrics
from api.errors import ApiError, Code, error_middleware
from schemas.jobs import ErrorCode
from shared.runtime import metrics
from shared.runtime.metrics import JobOutcome, Role, WebhookOutcome
from shared.runtime.version import VERSION


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_job_helpers_move_their_series() -> None:
    crew = "metrics-jobs"
    metrics.job_submitted(crew)
    metrics.job_submitted(crew)
    assert _value("crewq_jobs_submitted_total", crew=crew) == 2

    metrics.job_started(crew, 3.0)
    # Clock skew between Postgres and the worker: counted, as no wait, not a negative one.
    metrics.job_started(crew, -0.2)
    assert _value("crewq_jobs_started_total", crew=crew) == 2
    assert _value("crewq_job_queue_wait_seconds_count", crew=crew) == 2
    assert _value("crewq_job_queue_wait_seconds_sum", crew=crew) == 3.0
    assert _value("crewq_job_queue_wait_seconds_bucket", crew=crew, le="0.01") == 1

    done = {"crew": crew, "outcome": "completed"}
    metrics.job_finished(crew, JobOutcome.COMPLETED, 42.0)
    assert _value("crewq_jobs_finished_total", **done) == 1
    assert _value("crewq_job_duration_seconds_bucket", **done, le="30.0") == 0
    assert _value("crewq_job_duration_seconds_bucket", **done, le="60.0") == 1
    # Long crews get buckets of their own, not all lumped past 10 s.
    metrics.job_finished(crew, JobOutcome.COMPLETED, 5000.0)
    assert _value("crewq_job_duration_seconds_bucket", **done, le="3600.0") == 1
    assert _value("crewq_job_duration_seconds_bucket", **done, le="7200.0") == 2

    # Cancelled while queued: a final state, but no run to time.
    cancelled = {"crew": crew, "outcome": "cancelled"}
    metrics.job_finished(crew, JobOutcome.CANCELLED, None)
    assert _value("crewq_jobs_finished_total", **cancelled) == 1
    assert _value("crewq_job_duration_seconds_count", **cancelled) == 0

    metrics.job_retried(crew, ErrorCode.LLM_UNAVAILABLE)
    assert _value("crewq_job_retries_total", crew=crew, reason="LLM_UNAVAILABLE") == 1
    assert _value("crewq_job_retries_total", crew=crew, reason="CREW_ERROR") == 0
    metrics.job_timed_out(crew)
    assert _value("crewq_job_timeouts_total", crew=crew) == 1


def test_llm_webhook_and_build_helpers() -> None:
    model = "metrics/model"
    metrics.llm_called(model, 120, 30, failed=False)
    metrics.llm_called(model, 0, 0, failed=True)
    # A negative usage report is ignored; a counter would raise and fail the job.
    metrics.llm_called(model, -5, 10, failed=False)
    assert _value("crewq_llm_calls_total", model=model, outcome="succeeded") == 2
    assert _value("crewq_llm_calls_total", model=model, outcome="failed") == 1
    assert _value("crewq_llm_tokens_total", model=model, kind="prompt") == 120
    assert _value("crewq_llm_tokens_total", model=model, kind="completion") == 40

    before = _value("crewq_webhook_attempts_total", outcome="timed_out")
    slow_before = _value("crewq_webhook_delivery_seconds_bucket", outcome="timed_out", le="5.0")
    metrics.webhook_attempt(WebhookOutcome.TIMED_OUT, 10.0)
    assert _value("crewq_webhook_attempts_total", outcome="timed_out") == before + 1
    assert (
        _value("crewq_webhook_delivery_seconds_bucket", outcome="timed_out", le="5.0")
        == slow_before
    )
    assert _value("crewq_webhook_delivery_seconds_bucket", outcome="timed_out", le="10.0") >= 1

    metrics.identify(Role.WORKER)
    assert _value("crewq_build_info", version=VERSION, role="worker") == 1
    metrics.identify(Role.DISPATCHER)  # replaces, never adds a second build series
    assert _value("crewq_build_info", version=VERSION, role="worker") == 0
    assert _value("crewq_build_info", version=VERSION, role="dispatcher") == 1


def test_render_is_parseable_prometheus_text() -> None:
    metrics.job_submitted("metrics-render")
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name in (
        "crewq_jobs_submitted",
        "crewq_job_duration_seconds",
        "crewq_queue_depth",
        "crewq_jobs_running",
        "crewq_http_request_duration_seconds",
    ):
        assert name in families, name
    submitted = families["crewq_jobs_submitted"].samples
    assert any(s.labels == {"crew": "metrics-render"} and s.value >= 1 for s in submitted)


async def _ok(request: web.Request) -> web.Response:
    match request.match_info["item_id"]:
        case "bad":
            raise ApiError(Code.VALIDATION_ERROR, "item_id: is not valid")
        case "boom":
            raise RuntimeError("a bug")
        case "gone":
            raise web.HTTPNotFound()
        case "moved":
            raise web.HTTPFound("/items/ok")
    return web.Response(text="ok")


async def _stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(b"data: hi\n\n")
    return response


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    # The API's order: metrics outside error_middleware, which turns errors into answers.
    app = web.Application(middlewares=[api_metrics.metrics_middleware, error_middleware])
    app.router.add_get("/items/{item_id}", _ok)
    app.router.add_get("/events", _stream)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def _requests(method: str, route: str, status: int) -> float:
    return _value("crewq_http_requests_total", method=method, route=route, status=str(status))


async def test_middleware_counts_answers_and_errors_by_route_template(
    client: TestClient[web.Request, web.Application],
) -> None:
    route = "/items/{item_id}"
    before = {s: _requests("GET", route, s) for s in (200, 302, 400, 404, 500)}
    timed = _value("crewq_http_request_duration_seconds_count", method="GET", route=route)
    unmatched = _requests("GET", "unmatched", 404)
    for item in ("ok", "ok", "bad", "gone", "boom"):
        async with client.get(f"/items/{item}") as resp:
            await resp.read()
    async with client.get("/items/moved", allow_redirects=False) as resp:
        assert resp.status == 302
    async with client.get("/no/such/path") as resp:
        assert resp.status == 404

    assert _requests("GET", route, 200) == before[200] + 2
    assert _requests("GET", route, 400) == before[400] + 1  # ApiError, answered by error_mw
    assert _requests("GET", route, 404) == before[404] + 1  # HTTPNotFound from the handler
    assert _requests("GET", route, 500) == before[500] + 1  # a bug, answered 500
    assert _requests("GET", route, 302) == before[302] + 1  # escapes error_middleware
    assert _value("crewq_http_request_duration_seconds_count", method="GET", route=route) == (
        timed + 6
    )
    assert _requests("GET", "unmatched", 404) == unmatched + 1
    # Raw paths never become labels.
    assert (
        REGISTRY.get_sample_value(
            "crewq_http_requests_total", {"method": "GET", "route": "/items/ok", "status": "200"}
        )
        is None
    )


async def test_middleware_bounds_methods_and_skips_stream_durations(
    client: TestClient[web.Request, web.Application],
) -> None:
    other = _requests("OTHER", "unmatched", 404)
    async with client.request("PROPFIND", "/pot") as resp:
        assert resp.status == 404
    assert _requests("OTHER", "unmatched", 404) == other + 1
    assert (
        REGISTRY.get_sample_value(
            "crewq_http_requests_total",
            {"method": "PROPFIND", "route": "unmatched", "status": "404"},
        )
        is None
    )

    streams = _requests("GET", "/events", 200)
    async with client.get("/events") as resp:
        assert await resp.read() == b"data: hi\n\n"
    assert _requests("GET", "/events", 200) == streams + 1
    assert _value("crewq_http_request_duration_seconds_count", method="GET", route="/events") == 0
