"""The port workers and dispatchers answer on, and `crewq healthcheck` that asks it: served
and stopped with its block, `/health` following the registration heartbeat, and the check
trying the API's port before the metrics port."""

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest

from crewq.embedded import free_port
from crewq.healthcheck import check, health_urls
from schemas.health import ProcessRole
from shared.runtime import metrics
from shared.runtime.ops_server import API_PATHS, PATHS, Presence, ops_server
from shared.runtime.settings import Settings


def test_presence_starts_then_follows_its_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    presence = Presence(ProcessRole.WORKER, dead_after_s=20)
    first = presence.health()
    assert (first.status, first.id, first.seconds_since_heartbeat) == ("starting", None, None)
    presence.beat("w-1")
    now[0] += 20
    assert presence.health().status == "healthy"
    assert presence.health().seconds_since_heartbeat == 20
    now[0] += 0.5  # past CREWQ_PROCESS_DEAD_AFTER without a beat: Postgres thinks it dead
    assert presence.health().status == "unhealthy"
    presence.beat("w-1")
    assert presence.health().status == "healthy" and presence.health().id == "w-1"


async def test_serves_metrics_health_and_livez_then_stops() -> None:
    metrics.QUEUE_DEPTH.set(17)
    presence = Presence(ProcessRole.DISPATCHER, dead_after_s=20)
    async with (
        ops_server("127.0.0.1", 0, presence) as port,
        aiohttp.ClientSession() as session,
    ):
        assert port is not None and port > 0
        url = f"http://127.0.0.1:{port}"
        async with session.get(f"{url}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
        assert "# TYPE crewq_jobs_finished_total counter" in text
        assert "crewq_queue_depth 17.0" in text
        async with session.get(f"{url}/health") as resp:
            assert resp.status == 503
            assert (await resp.json())["status"] == "starting"
        presence.beat("d-1")
        async with session.get(f"{url}/health") as resp:
            body = await resp.json()
            assert resp.status == 200, body
            assert body["status"] == "healthy" and body["role"] == "dispatcher"
            assert body["id"] == "d-1"
        async with session.get(f"{url}/livez") as resp:
            assert resp.status == 200 and (await resp.json()) == {"status": "alive"}
        async with session.get(f"{url}/elsewhere") as resp:
            assert resp.status == 404
        # The healthcheck finds it after the API's port refuses.
        settings = Settings(api_port=free_port(), metrics_port=port, metrics_host="0.0.0.0")
        # In a thread: it blocks, as the one-shot command it is, and this loop must answer.
        verdict = await asyncio.to_thread(check, health_urls(settings))
        assert verdict.healthy, verdict
        assert f":{port}/health: 200" in verdict.detail
    assert set(PATHS) == {"/metrics", "/health", "/livez"}
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(f"{url}/metrics"):
                pass


async def test_without_a_presence_serves_the_apis_metrics_and_livez_only() -> None:
    """The API's metrics port: its health is answered on the API's own port."""
    async with (
        ops_server("127.0.0.1", 0, None) as port,
        aiohttp.ClientSession() as session,
    ):
        url = f"http://127.0.0.1:{port}"
        async with session.get(f"{url}/metrics") as resp:
            assert resp.status == 200
            assert "# TYPE crewq_http_requests_total counter" in await resp.text()
        async with session.get(f"{url}/livez") as resp:
            assert resp.status == 200 and (await resp.json()) == {"status": "alive"}
        async with session.get(f"{url}/health") as resp:
            assert resp.status == 404
    assert set(API_PATHS) == {"/metrics", "/livez"}


async def test_without_a_port_serves_nothing() -> None:
    async with ops_server("127.0.0.1", None, Presence(ProcessRole.WORKER, 20)) as port:
        assert port is None


@pytest.fixture
def unhealthy_server() -> Iterator[int]:
    """A port answering 503 to everything, as a process still starting does."""
    import http.server
    import threading

    class Starting(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b'{"status": "starting"}')

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Starting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_healthcheck_fails_on_an_answer_other_than_200(unhealthy_server: int) -> None:
    # The first port that answers decides: a 503 there is unhealthy, whatever comes after.
    settings = Settings(api_port=unhealthy_server, metrics_port=free_port())
    verdict = check(health_urls(settings))
    assert not verdict.healthy and "503" in verdict.detail and "starting" in verdict.detail


def test_healthcheck_fails_when_nothing_listens() -> None:
    api, ops = free_port(), free_port()
    verdict = check(health_urls(Settings(api_port=api, metrics_port=ops)))
    assert not verdict.healthy
    assert verdict.detail == (
        f"nothing listens on http://127.0.0.1:{api}/health, http://127.0.0.1:{ops}/health"
    )


def test_health_urls_reach_wildcard_binds_through_loopback() -> None:
    settings = Settings(api_host="::", api_port=8000, metrics_host="10.1.2.3", metrics_port=9100)
    assert health_urls(settings) == [
        "http://127.0.0.1:8000/health",
        "http://10.1.2.3:9100/health",
    ]
    assert health_urls(Settings(api_host="0.0.0.0")) == ["http://127.0.0.1:8000/health"]
