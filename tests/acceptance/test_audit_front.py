"""The API's front door, as issue 19's audit attacked it over real HTTP: bad keys must not
lock out good ones, slow or idle connections must not be held for an hour, input must not
make a 500 (nor reveal the hidden route), refused requests must not flood the request log
or the server log, keys made without scopes must not see the signing secret, bodies must be
JSON and unambiguous, and metrics must not be on the public port."""

import asyncio
import contextlib
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest_asyncio
from yarl import URL

from crewq.embedded import free_port
from schemas.account import Plan
from tests.fakes import FakeLLM
from tests.harness import Platform, Process, Services, eventually

HEADER_TIMEOUT_S = 2
KEEPALIVE_TIMEOUT_S = 3
DEBUG_TOKEN = secrets.token_urlsafe(24)


class Front:
    """A platform whose API has small connection timeouts, a debug token and a metrics
    port: one API process for this module's tests."""

    def __init__(self, platform: Platform, api: Process, metrics_port: int) -> None:
        self.platform = platform
        self.api = api
        self.metrics_port = metrics_port


@pytest_asyncio.fixture(scope="module")
async def front(services: Services, workdir: Path, llm: FakeLLM) -> AsyncIterator[Front]:
    platform = Platform(services, workdir, llm.base_url)
    await platform.prepare()
    metrics_port = free_port()
    api = await platform.start_api(
        CREWQ_API_HEADER_TIMEOUT=str(HEADER_TIMEOUT_S),
        CREWQ_API_KEEPALIVE_TIMEOUT=str(KEEPALIVE_TIMEOUT_S),
        CREWQ_DEBUG_TOKEN=DEBUG_TOKEN,
        CREWQ_METRICS_PORT=str(metrics_port),
    )
    yield Front(platform, api, metrics_port)
    await platform.close()


async def raw_exchange(port: int, request: bytes) -> bytes:
    """Send `request` as is on a new connection; everything the server sends before it
    closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def split_answer(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def assert_error_shape(body: Any, code: str) -> None:
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["request_id"].startswith("req_"), body
    assert body["error"]["message"], body


# --- finding 4: bad keys from an address never lock out a good key from it ------------------


async def test_thirty_bad_keys_do_not_lock_out_a_good_key_from_the_same_address(
    front: Front,
) -> None:
    platform = front.platform
    # The count is per clock minute: do not let the window turn during the test.
    if time.time() % 60 > 45:
        await asyncio.sleep(60 - time.time() % 60 + 0.1)
    statuses = [
        (await platform.request("GET", "/v1/crews", key=f"crq_live_{secrets.token_urlsafe(32)}"))[0]
        for _ in range(31)
    ]
    assert statuses == [401] * 30 + [429], statuses
    status, body, _ = await platform.request("GET", "/v1/crews")  # the platform's good key
    assert status == 200, body
    status, body, headers = await platform.request(
        "GET", "/v1/crews", key=f"crq_live_{secrets.token_urlsafe(32)}"
    )
    assert status == 429 and body["error"]["code"] == "RATE_LIMITED", body
    assert headers["Retry-After"] == "60"
    # Not even shaped like a key: refused without a look-up, and still limited.
    status, _, _ = await platform.request("GET", "/v1/crews", key="hunter2")
    assert status == 429
    status, _, _ = await platform.request("GET", "/v1/crews")
    assert status == 200


# --- finding 5: slowloris, idle keep-alive, a cap on connections -----------------------------


async def _dribble(port: int, head: bytes) -> tuple[int, bytes]:
    """Send `head` one byte a second until the server closes the connection; how many
    bytes were sent by then, and what the server answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.ensure_future(reader.read())
    sent = 0
    try:
        for byte in head:
            if answer.done():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            sent += 1
            await asyncio.wait([answer], timeout=1)
        try:
            received = await asyncio.wait_for(answer, 30)
        except ConnectionError:
            received = b""
        return sent, received
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_slow_request_heads_are_closed_unanswered(front: Front) -> None:
    """The audit's forty sockets sending one header byte every ten seconds, scaled down:
    ten sockets, one byte a second, a head that would take 40 s to send whole."""
    head = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 20 + b"\r\n\r\n"
    assert len(head) > 10 * HEADER_TIMEOUT_S
    results = await asyncio.gather(*(_dribble(front.platform.port, head) for _ in range(10)))
    for sent, received in results:
        assert received == b"", received[:200]  # closed, never answered
        assert sent < len(head), "the whole head went through: nothing closed the connection"
    # A normal request on a new connection is served.
    status, body, _ = await front.platform.request("GET", "/livez")
    assert status == 200 and body == {"status": "alive"}


async def test_an_idle_keepalive_connection_is_closed(front: Front) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", front.platform.port)
    try:
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status, headers, _ = split_answer(head)
        assert status == 200
        body = await reader.readexactly(int(headers["content-length"]))
        assert orjson.loads(body) == {"status": "alive"}
        # Kept alive, then closed once idle: aiohttp's default would wait 3,630 s. The
        # wait_for only bounds the test; the assertion is that the server hangs up.
        assert await asyncio.wait_for(reader.read(), KEEPALIVE_TIMEOUT_S + 30) == b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_connections_past_the_cap_get_503_in_the_error_shape(front: Front) -> None:
    platform = front.platform
    port = free_port()
    capped = await platform.start_api(
        CREWQ_API_PORT=str(port), CREWQ_API_MAX_CONNECTIONS="5", CREWQ_API_HEADER_TIMEOUT="120"
    )
    held: list[asyncio.StreamWriter] = []
    try:
        for _ in range(5):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            held.append(writer)
        # The five are open (a request on one of them is answered) ...
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        status, headers, body = split_answer(answer)
        assert status == 503, answer[:300]
        assert headers["retry-after"] == "1"
        assert_error_shape(orjson.loads(body), "SERVICE_UNAVAILABLE")
        assert orjson.loads(body)["error"]["request_id"] == headers["x-request-id"]
        for writer in held:
            writer.close()
        held.clear()

        async def served() -> bool:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/livez") as resp,
            ):
                return resp.status == 200

        assert await eventually(served, 30, "a connection once the others closed")
    finally:
        for writer in held:
            writer.close()
        await capped.stop()


# --- finding 6: input that made 500s --------------------------------------------------------


async def test_nul_in_a_query_parameter_name_or_value_is_a_400_naming_it(front: Front) -> None:
    platform = front.platform
    cases = {
        "/v1/jobs?metadata[te%00am]=red": "metadata[te\\u0000am]",
        "/v1/jobs?x%00y=1": "x\\u0000y",
        "/v1/jobs?crew=ec%00ho": "crew",
        "/v1/jobs?metadata[team]=r%00ed": "metadata[team]",
    }
    async with aiohttp.ClientSession() as http:
        for path, named in cases.items():
            url = platform.base_url + path
            async with http.get(URL(url, encoded=True), headers=platform.headers()) as resp:
                body = await resp.json()
                assert resp.status == 400, (path, body)
            assert_error_shape(body, "INVALID_REQUEST")
            assert body["error"]["details"] == {named: ["must not contain NUL (\\u0000)"]}, body


async def test_a_non_ascii_debug_token_answers_as_an_unknown_route(front: Front) -> None:
    port = front.platform.port
    for token in (b"\xff\xfe\xfd", "t\u00e9st".encode(), b"\xc3\x28"):
        answers = [
            split_answer(
                await raw_exchange(
                    port,
                    b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    b"X-Debug-Token: " + token + b"\r\n\r\n",
                )
            )
            for path in (b"/health/debug", b"/no/such/route")
        ]
        (status, headers, body), (unknown_status, unknown_headers, unknown_body) = answers
        assert status == unknown_status == 404, (token, body)
        hidden, unknown = orjson.loads(body), orjson.loads(unknown_body)
        assert hidden["error"]["code"] == unknown["error"]["code"] == "NOT_FOUND"
        assert hidden["error"]["message"] == unknown["error"]["message"]
        assert set(hidden["error"]) == set(unknown["error"])
        ignored = {"date", "x-request-id", "content-length"}
        assert set(headers) - ignored == set(unknown_headers) - ignored, token
    # The real token still opens it.
    status, _, _ = await front.platform.request(
        "GET", "/health/debug", headers={"X-Debug-Token": DEBUG_TOKEN}
    )
    assert status in (200, 503)


async def test_undecodable_bytes_in_any_header_are_never_a_500(front: Front) -> None:
    """The class of the debug token's bug: a header value that is not UTF-8 (it reaches
    the handlers as surrogates) in every header crewq reads."""
    platform = front.platform
    key = platform.key.encode()
    for name in (
        b"traceparent",
        b"X-Forwarded-For",
        b"X-Forwarded-Proto",
        b"Origin",
        b"X-Request-Id",
        b"Idempotency-Key",
        b"Last-Event-ID",
        b"Accept",
        b"X-Debug-Token",
    ):
        for method, path, body in (
            (b"GET", b"/v1/jobs?crew=echo", b""),
            (b"POST", b"/v1/jobs", b'{"crew":"echo","inputs":{"message":"hi"}}'),
        ):
            request = (
                method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Authorization: Bearer " + key + b"\r\n" + name + b": \xff\xfe\xc3\x28\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            status, _, answer = split_answer(await raw_exchange(platform.port, request))
            assert status < 500, (name, method, answer)
    # With no key: the bytes reach the key check.
    for name in (b"Authorization", b"X-API-Key"):
        request = (
            b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + name
            + b": crq_live_\xff\xfe\r\n\r\n"
        )
        status, _, answer = split_answer(await raw_exchange(platform.port, request))
        assert status in (401, 429), (name, answer)


# --- finding 8: smaller ---------------------------------------------------------------------


async def test_rate_limited_refusals_are_not_logged_one_row_each(front: Front) -> None:
    platform = front.platform
    key, _, _ = await platform.new_tenant("flood", plan=Plan.FREE)  # 10 requests a second
    if time.time() % 1 > 0.5:  # one burst in one window
        await asyncio.sleep(1 - time.time() % 1 + 0.01)
    answers = await asyncio.gather(
        *(platform.request("GET", "/v1/crews", key=key) for _ in range(40))
    )
    refused = [s for s, _, _ in answers if s == 429]
    assert len(refused) >= 20, [s for s, _, _ in answers]
    await asyncio.sleep(1.1)  # the next window, for a marker failure the log must keep
    status, body, headers = await platform.request("GET", "/v1/jobs/job_nosuchjob", key=key)
    assert 400 <= status < 500, body
    marker = headers["X-Request-Id"]

    async def logged() -> list[dict[str, Any]] | None:
        await asyncio.sleep(1.1)  # one request a window, under the plan's limit
        status, page, _ = await platform.request("GET", "/v1/account/logs?limit=100", key=key)
        assert status == 200, page
        rows: list[dict[str, Any]] = page["data"]
        return rows if any(r["request_id"] == marker for r in rows) else None

    # The writer keeps order: once the marker is written, so is every refusal before it.
    rows = await eventually(logged, 60, "the marker failure in the request log")
    throttled = [r for r in rows if r["status"] == 429]
    # One row for the burst (two if it straddled a minute), not one per refusal.
    assert 1 <= len(throttled) <= 2, throttled
    assert throttled[0]["code"] == "RATE_LIMITED"


async def test_a_key_made_without_scopes_cannot_see_the_signing_secret(front: Front) -> None:
    platform = front.platform
    made = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "crewq", "keys", "create", "--tenant", f"noscope-{uuid.uuid4()}"],
        env=platform.env,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    status, account, _ = await platform.request("GET", "/v1/account", key=key)
    assert status == 200, account
    assert account["webhook_signing_secret"] is None, "a default key sees the signing secret"
    assert set(account["scopes"]) == {
        "jobs:read",
        "jobs:write",
        "jobs:cancel",
        "account:read",
    }, account
    status, body, _ = await platform.request("GET", "/v1/webhooks", key=key)
    assert status == 403 and body["error"]["code"] == "INSUFFICIENT_SCOPE", body
    status, body, _ = await platform.request("GET", "/v1/account/api-keys", key=key)
    assert status == 403, body
    status, _, _ = await platform.request("GET", "/v1/jobs", key=key)
    assert status == 200


async def test_a_body_that_is_not_json_by_content_type_is_refused_with_415(
    front: Front,
) -> None:
    platform = front.platform
    body = orjson.dumps({"crew": "echo", "inputs": {"message": "plain"}})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        status, answer, _ = await platform.request("POST", "/v1/jobs", data=body, headers=headers)
        assert status == 415, (content_type, answer)
        assert_error_shape(answer, "UNSUPPORTED_MEDIA_TYPE")
    for content_type in ("application/json", "application/json; charset=utf-8"):
        status, answer, _ = await platform.request(
            "POST", "/v1/jobs", data=body, headers={"Content-Type": content_type}
        )
        assert status == 202, (content_type, answer)


async def test_duplicate_json_keys_are_refused(front: Front) -> None:
    platform = front.platform
    cases = {
        b'{"crew":"echo","crew":"boom","inputs":{"message":"x"}}': "crew",
        b'{"crew":"echo","inputs":{"message":"x","message":"y"}}': "message",
        b'{"crew":"echo","inputs":{"message":"x"},"\\u0063rew":"boom"}': "crew",
    }
    json_type = {"Content-Type": "application/json"}
    for raw, twice in cases.items():
        status, body, _ = await platform.request("POST", "/v1/jobs", data=raw, headers=json_type)
        assert status == 400, (raw, body)
        assert_error_shape(body, "INVALID_JSON")
        assert body["error"]["details"] == {"duplicate_key": twice}, body
    # The same key in two objects is no duplicate.
    raw = b'{"crew":"echo","inputs":{"message":"x"},"metadata":{"message":"y"}}'
    status, body, _ = await platform.request("POST", "/v1/jobs", data=raw, headers=json_type)
    assert status == 202, body


async def test_metrics_are_on_the_metrics_port_not_the_public_one(front: Front) -> None:
    platform = front.platform
    status, body, _ = await platform.request("GET", "/metrics", headers={"Authorization": ""})
    assert status == 404 and body["error"]["code"] == "NOT_FOUND", body
    status, body, _ = await platform.request("GET", "/metrics")  # with a key: still not here
    assert status == 404, body
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{front.metrics_port}/metrics") as resp,
    ):
        assert resp.status == 200
        text = await resp.text()
    assert 'crewq_build_info{role="api"' in text
    assert "crewq_http_requests_total" in text


async def test_malformed_requests_are_one_log_line_not_an_error_with_a_traceback(
    front: Front,
) -> None:
    port = front.platform.port
    marker = uuid.uuid4().hex
    malformed = [
        f"GET /{marker} HTTP/1.1\r\nHost: x\r\nno colon in this line\r\n\r\n".encode(),
        f"GET /{marker} HTTP/1.1\r\nHost: x\r\nX-Long: {'a' * 10_000}\r\n\r\n".encode(),
        f"GET /{marker} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        "ab".encode(),
    ]
    for request in malformed:
        status, _, body = split_answer(await raw_exchange(port, request))
        assert 400 <= status < 500, body
        assert_error_shape(orjson.loads(body), "INVALID_REQUEST")
    # A chunked body that breaks off mid-way: a 400 too, not a 500.
    broken = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + front.platform.key.encode()
        + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"cre\r\nzz\r\n'
    )
    status, _, body = split_answer(await raw_exchange(port, broken))
    assert 400 <= status < 500, body

    async def noted() -> bool:
        return front.api.log().count("malformed request") >= len(malformed)

    await eventually(noted, 30, "the malformed requests in the log")
    log = front.api.log()
    assert "Traceback" not in log, log[-3000:]
    errors = [
        line
        for line in log.splitlines()
        if line.startswith("{") and orjson.loads(line).get("level") in ("ERROR", "CRITICAL")
    ]
    assert errors == [], errors
