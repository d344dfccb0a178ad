"""Retries on 429 and 503 honouring Retry-After, one Idempotency-Key over a submission's
retries, and what is raised when retries run out: against a loopback aiohttp server that
answers "later" first."""

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from crewq_client import AsyncClient, Client, ConnectionFailed, RetryPolicy, Unavailable

from schemas.account import Plan, Usage
from schemas.errors import ApiErrorCode, ErrorBody, ErrorDetail
from tests.fakes import start_site

NOW = datetime(2026, 1, 1, tzinfo=UTC)
USAGE = Usage(
    plan=Plan.PRO,
    jobs_this_month=3,
    jobs_limit=100,
    jobs_remaining=97,
    resets_at=NOW,
    rate_limit=10,
    rate_limit_remaining=9,
    rate_limit_resets_at=NOW,
)
JOB: dict[str, Any] = {
    "id": "job_1",
    "livemode": True,
    "status": "pending",
    "crew": "echo",
    "attempt": 0,
    "max_retries": 3,
    "result": None,
    "progress": None,
    "token_usage": None,
    "error": None,
    "worker_id": None,
    "created_at": NOW.isoformat(),
    "started_at": None,
    "finished_at": None,
    "inputs": {"message": "hi"},
    "metadata": {},
    "webhook_url": None,
    "timeout": 600,
    "input_timeout": None,
    "input_default": None,
    "attempts": [],
    "last_activity_at": None,
    "cancel_requested_at": None,
}


def _later(status: int, code: ApiErrorCode, retry_after: str) -> web.Response:
    body = ErrorBody(error=ErrorDetail(code=code, message="later", request_id="req_stub"))
    return web.json_response(
        body.model_dump(mode="json"), status=status, headers={"Retry-After": retry_after}
    )


class Stub:
    """Answers 503 (Retry-After: 1), then 429 (Retry-After: 1), then the real answer."""

    def __init__(self) -> None:
        self.hits: list[tuple[float, web.Request]] = []
        self.always_busy = False

    def _answer(self, request: web.Request, ok: web.Response) -> web.Response:
        self.hits.append((time.monotonic(), request))
        if self.always_busy:
            return _later(503, ApiErrorCode.SERVICE_UNAVAILABLE, "0")
        if len(self.hits) == 1:
            return _later(503, ApiErrorCode.SERVICE_UNAVAILABLE, "1")
        if len(self.hits) == 2:
            return _later(429, ApiErrorCode.RATE_LIMITED, "1")
        return ok

    async def usage(self, request: web.Request) -> web.Response:
        return self._answer(request, web.json_response(USAGE.model_dump(mode="json")))

    async def submit(self, request: web.Request) -> web.Response:
        return self._answer(request, web.json_response(JOB, status=202))


@pytest_asyncio.fixture
async def stub() -> AsyncIterator[tuple[Stub, str]]:
    found = Stub()
    app = web.Application()
    app.router.add_get("/v1/account/usage", found.usage)
    app.router.add_post("/v1/jobs", found.submit)
    runner, port = await start_site(app)
    yield found, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _gaps(stub: Stub) -> list[float]:
    times = [t for t, _ in stub.hits]
    return [b - a for a, b in itertools.pairwise(times)]


async def test_the_async_client_waits_out_503_and_429_as_retry_after_says(
    stub: tuple[Stub, str],
) -> None:
    server, url = stub
    async with AsyncClient(url, "sk_test") as crewq:
        usage = await crewq.account.usage()
    assert usage == USAGE
    assert len(server.hits) == 3
    assert all(gap >= 0.95 for gap in _gaps(server)), _gaps(server)


async def test_the_sync_client_too_and_a_submission_keeps_its_idempotency_key(
    stub: tuple[Stub, str],
) -> None:
    server, url = stub

    def submit() -> str:
        with Client(url, "sk_test") as crewq:
            return crewq.jobs.submit("echo", {"message": "hi"}).id

    job_id = await asyncio.to_thread(submit)
    assert job_id == "job_1" and len(server.hits) == 3
    keys = {request.headers["Idempotency-Key"] for _, request in server.hits}
    assert len(keys) == 1 and next(iter(keys)).startswith("crewq-client-")
    assert all(gap >= 0.95 for gap in _gaps(server))


async def test_retries_run_out_into_a_typed_error(stub: tuple[Stub, str]) -> None:
    server, url = stub
    server.always_busy = True
    async with AsyncClient(url, "sk_test", retry=RetryPolicy(attempts=3)) as crewq:
        with pytest.raises(Unavailable) as busy:
            await crewq.account.usage()
    assert len(server.hits) == 3
    assert busy.value.code is ApiErrorCode.SERVICE_UNAVAILABLE
    assert busy.value.retry_after == 0 and busy.value.request_id == "req_stub"


async def test_an_unreachable_api_is_a_connection_failure_after_retries() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    policy = RetryPolicy(attempts=3, backoff=0.05)
    async with AsyncClient(f"http://127.0.0.1:{port}", "sk_test", retry=policy) as crewq:
        started = time.monotonic()
        with pytest.raises(ConnectionFailed):
            await crewq.jobs.get("job_1")
    assert time.monotonic() - started < 5
