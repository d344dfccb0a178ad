"""Structured logs (shared/runtime/logs.py): the ids each line carries, the two formats,
redaction of
every kind of secret, and CrewAI's token-count warning once per model."""

import asyncio
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from importlib import metadata
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import TracerProvider

from api.auth import PRINCIPAL
from api.errors import error_middleware
from api.tracing import RequestAccessLogger, tracing_middleware
from schemas.account import KeyMode, Plan
from shared.domain.plans import ALLOWANCES
from shared.runtime.logs import (
    CREWAI_TOKEN_LOGGER,
    SECRET_ENV_VARS,
    bind,
    configure,
    context_ids,
    log_context,
)
from shared.runtime.settings import LogFormat
from shared.store.keys import Principal

log = logging.getLogger("tests.logs")
Configure = Callable[[LogFormat], io.StringIO]


@pytest.fixture
def logs() -> Iterator[Configure]:
    """`configure` for real, its output in a buffer; the logging setup restored after."""
    root = logging.getLogger()
    level = root.level
    loggers = logging.root.manager.loggerDict
    levels = {name: lg.level for name, lg in loggers.items() if isinstance(lg, logging.Logger)}
    crewai = logging.getLogger(CREWAI_TOKEN_LOGGER)
    crewai_filters = crewai.filters[:]
    added: list[logging.Handler] = []

    def setup(fmt: LogFormat) -> io.StringIO:
        before = root.handlers[:]
        configure("INFO", "tester", fmt)
        ours = root.handlers[0]
        assert isinstance(ours, logging.StreamHandler)
        out = io.StringIO()
        ours.setStream(out)
        # Ours first: pytest's own handlers (caplog) then see what ours left of the record.
        root.handlers[:] = [ours, *before]
        added.append(ours)
        return out

    yield setup
    for handler in added:
        root.removeHandler(handler)
    root.setLevel(level)
    crewai.filters[:] = crewai_filters
    for name, lg in list(loggers.items()):
        if isinstance(lg, logging.Logger):
            lg.setLevel(levels.get(name, logging.NOTSET))


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


IDS = ("request_id", "job_id", "tenant_id", "trace_id", "span_id")


def test_json_lines_carry_the_ids_inside_a_context_and_not_outside(logs: Configure) -> None:
    out = logs(LogFormat.JSON)
    log.info("before")
    with log_context(request_id="req_1", job_id="job_1", tenant_id="ten_1"):
        log.warning("inside %s", "the context")
    log.info("after")

    before, inside, after = lines(out)
    assert inside["message"] == "inside the context"
    assert inside["level"] == "WARNING"
    assert inside["logger"] == "tests.logs"
    assert inside["role"] == "tester"
    assert (inside["request_id"], inside["job_id"], inside["tenant_id"]) == (
        "req_1",
        "job_1",
        "ten_1",
    )
    stamp = datetime.fromisoformat(inside["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert abs((datetime.now(stamp.tzinfo) - stamp).total_seconds()) < 60
    for outside in (before, after):
        assert not set(IDS) & outside.keys()
        assert "exception" not in outside


def test_a_multiline_message_and_its_exception_stay_on_one_line(logs: Configure) -> None:
    out = logs(LogFormat.JSON)
    try:
        raise ValueError("no good")
    except ValueError:
        log.exception("first line\nsecond line")
    assert len(out.getvalue().splitlines()) == 1
    (entry,) = lines(out)
    assert entry["message"] == "first line\nsecond line"
    assert entry["level"] == "ERROR"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: no good")


def test_nested_contexts_restore_the_outer_ids() -> None:
    with log_context(request_id="req_outer", tenant_id="ten_1"):
        with log_context(request_id="req_inner", job_id="job_1", tenant_id=None):
            # None leaves an id as it was.
            assert context_ids() == {
                "request_id": "req_inner",
                "job_id": "job_1",
                "tenant_id": "ten_1",
            }
        assert context_ids() == {"request_id": "req_outer", "tenant_id": "ten_1"}
    assert context_ids() == {}


def test_unknown_ids_are_refused() -> None:
    with pytest.raises(TypeError, match="job"), log_context(jobid="job_1"):
        pass


async def test_contexts_follow_await_and_stay_in_their_task() -> None:
    async def handle(request_id: str, delay: float) -> dict[str, str]:
        with log_context(request_id=request_id):
            await asyncio.sleep(delay)
            return context_ids()

    first, second = await asyncio.gather(handle("req_a", 0.02), handle("req_b", 0.01))
    assert first == {"request_id": "req_a"}
    assert second == {"request_id": "req_b"}
    assert context_ids() == {}


def test_bind_adds_to_the_enclosing_context_until_it_ends(logs: Configure) -> None:
    out = logs(LogFormat.JSON)

    def inner_middleware() -> None:
        bind(tenant_id="ten_7")  # learnt deep inside the request
        raise RuntimeError("refused")

    with log_context(request_id="req_9"):
        try:
            inner_middleware()
        except RuntimeError:
            log.error("answered with an error")  # the outer middleware, afterwards
    log.info("next request")

    answered, following = lines(out)
    assert (answered["request_id"], answered["tenant_id"]) == ("req_9", "ten_7")
    assert "tenant_id" not in following


async def test_bind_reaches_the_awaiting_caller_but_not_other_tasks() -> None:
    async def authenticate(tenant_id: str) -> None:
        await asyncio.sleep(0)
        bind(tenant_id=tenant_id)

    with log_context(request_id="req_1"):
        await authenticate("ten_1")  # a middleware awaited by the outer ones
        assert context_ids() == {"request_id": "req_1", "tenant_id": "ten_1"}
        await asyncio.create_task(authenticate("ten_2"))  # a task has its own copy
        assert context_ids() == {"request_id": "req_1", "tenant_id": "ten_1"}
    assert context_ids() == {}


def test_trace_and_span_ids_come_from_the_current_span(logs: Configure) -> None:
    out = logs(LogFormat.JSON)
    tracer = TracerProvider().get_tracer("tests.logs")
    with tracer.start_as_current_span("work") as span:
        log.info("traced")
    log.info("untraced")

    traced, untraced = lines(out)
    context = span.get_span_context()
    assert traced["trace_id"] == f"{context.trace_id:032x}"
    assert traced["span_id"] == f"{context.span_id:016x}"
    assert re.fullmatch(r"[0-9a-f]{32}", traced["trace_id"])
    assert re.fullmatch(r"[0-9a-f]{16}", traced["span_id"])
    assert "trace_id" not in untraced and "span_id" not in untraced


def test_text_lines_stay_readable_and_show_the_ids_that_are_set(logs: Configure) -> None:
    out = logs(LogFormat.TEXT)
    log.info("plain")
    tracer = TracerProvider().get_tracer("tests.logs")
    with (
        log_context(request_id="req_1", job_id="job_1", tenant_id="ten_1"),
        tracer.start_as_current_span("work") as span,
    ):
        log.info("with everything")
    with log_context(job_id="job_2"):
        log.info("with a job")

    plain, everything, job_only = out.getvalue().splitlines()
    assert re.fullmatch(r"\S+ \S+ INFO +tester +tests\.logs: plain", plain)
    trace_id = f"{span.get_span_context().trace_id:032x}"
    assert everything.endswith(
        f"tests.logs: with everything [job=job_1 tenant=ten_1 request=req_1 trace={trace_id}]"
    )
    assert job_only.endswith("tests.logs: with a job [job=job_2]")


# -- secrets ---------------------------------------------------------------------------------

LIVE_KEY = "crq_live_Q2hvb3NlIGEgbG9uZyByYW5kb20ga2V5IGhlcmU-_x"
ENV_SECRETS = {name: f"{name.lower()}-value-0123456789" for name in SECRET_ENV_VARS}
FERNET_KEYS = ("fernet-newest-key-0123456789abcdef", "fernet-older-key-0123456789abcdef")
ENV_SECRETS["CREWQ_SECRET_KEY"] = ",".join(FERNET_KEYS)
# (what is logged, the secret in it, what is logged instead)
SECRET_CASES = [
    pytest.param(LIVE_KEY, LIVE_KEY, "crq_live_***", id="live key"),
    # aiohttp logs a WebSocket client's subprotocols when none matches: a key offered
    # as one (api/auth.py) is masked there too.
    pytest.param(
        f"Client protocols ['crewq.bearer.{LIVE_KEY}']",
        LIVE_KEY,
        "Client protocols ['crewq.bearer.crq_live_***']",
        id="key as a websocket subprotocol",
    ),
    pytest.param(
        "crq_test_dGVzdCBrZXkgZm9yIHRoZSBzYW5kYm94IG1vZGU",
        "dGVzdCBrZXkgZm9yIHRoZSBzYW5kYm94IG1vZGU",
        "crq_test_***",
        id="test key",
    ),
    pytest.param(
        "crq_bGVnYWN5IGtleSBmcm9tIGJlZm9yZSBtb2Rlcw_-Ab",
        "bGVnYWN5IGtleSBmcm9tIGJlZm9yZSBtb2Rlcw_-Ab",
        "crq_***",
        id="legacy key",
    ),
    pytest.param(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw+E/pA+SkZ2M=",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw+E/pA+SkZ2M=",
        "whsec_***",
        id="signing secret",
    ),
    pytest.param(
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
        "Authorization: Bearer [REDACTED]",
        id="bearer token",
    ),
    pytest.param(
        "sk-proj-Zx81bQe7TnJd0aLp3VwYr5Kc", "Zx81bQe7TnJd0aLp3VwYr5Kc", "sk-***", id="openai key"
    ),
    *(
        pytest.param(f"x {value}.", value, "x [REDACTED].", id=name)
        for name, value in ENV_SECRETS.items()
        if name != "CREWQ_SECRET_KEY"
    ),
    *(
        pytest.param(f"key={key}", key, "key=[REDACTED]", id=f"CREWQ_SECRET_KEY part {n}")
        for n, key in enumerate(FERNET_KEYS)
    ),
]


@pytest.fixture
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV_SECRETS.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("secrets_in_env")
@pytest.mark.parametrize(("text", "secret", "redacted"), SECRET_CASES)
def test_secrets_are_redacted_in_messages_arguments_and_exceptions(
    logs: Configure, text: str, secret: str, redacted: str
) -> None:
    out = logs(LogFormat.JSON)
    log.info("in the message: " + text)
    log.info("as an argument: %s (%d)", text, 3)
    try:
        raise RuntimeError(f"failed with {text}")
    except RuntimeError:
        log.exception("calling out")

    assert secret not in out.getvalue()
    in_message, as_argument, in_exception = lines(out)
    assert in_message["message"] == f"in the message: {redacted}"
    assert as_argument["message"] == f"as an argument: {redacted} (3)"
    assert f"RuntimeError: failed with {redacted}" in in_exception["exception"]


@pytest.mark.usefixtures("secrets_in_env")
def test_text_format_redacts_too(logs: Configure) -> None:
    out = logs(LogFormat.TEXT)
    log.info("key %s, token %s", LIVE_KEY, ENV_SECRETS["CREWQ_DEBUG_TOKEN"])
    assert out.getvalue().rstrip().endswith("key crq_live_***, token [REDACTED]")


def test_redaction_leaves_the_record_for_other_handlers(
    logs: Configure, caplog: pytest.LogCaptureFixture
) -> None:
    out = logs(LogFormat.JSON)
    log.info("key %s and %d jobs", LIVE_KEY, 3)
    assert lines(out)[0]["message"] == "key crq_live_*** and 3 jobs"
    record = caplog.records[-1]
    assert (record.msg, record.args) == ("key %s and %d jobs", (LIVE_KEY, 3))


def test_short_values_and_prose_are_left_alone(
    logs: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREWQ_DEBUG_TOKEN", "abc123")  # too short to redact by value
    out = logs(LogFormat.JSON)
    text = "abc123: send 'Authorization: Bearer <key>'; see crq_live_… and whsec_ in the docs"
    log.info(text)
    assert lines(out)[0]["message"] == text


# -- CrewAI's approximate token count warning ------------------------------------------------

# What crewai/llms/base_llm.py logs on every LLM call.
TOKEN_WARNING = (
    "Using an approximate input token count for model %r: assuming one "
    "token per four characters because a native token count is unavailable."
)


def test_crewai_logs_the_warning_this_filter_expects() -> None:
    # Read, not imported: importing CrewAI takes seconds. A new CrewAI that moves or rewords
    # the warning fails here rather than flooding the logs again.
    source = metadata.distribution("crewai").locate_file("crewai/llms/base_llm.py").read_text()
    assert CREWAI_TOKEN_LOGGER == "crewai.llms.base_llm"
    assert "logger = logging.getLogger(__name__)" in source
    assert '"Using an approximate input token count for model %r: assuming one "' in source


def test_crewais_token_warning_appears_once_per_model(logs: Configure) -> None:
    out = logs(LogFormat.JSON)
    crewai = logging.getLogger(CREWAI_TOKEN_LOGGER)
    for call in range(50):
        crewai.warning(TOKEN_WARNING, "gpt-4o" if call % 2 else "claude-sonnet-4")
    crewai.warning("something else")
    crewai.warning("something else")

    messages = [entry["message"] for entry in lines(out)]
    assert messages == [
        TOKEN_WARNING % "claude-sonnet-4",
        TOKEN_WARNING % "gpt-4o",
        "something else",
        "something else",
    ]


# -- the API's request ids -------------------------------------------------------------------


async def test_api_lines_carry_the_request_id_it_answers_with(logs: Configure) -> None:
    out = logs(LogFormat.JSON)
    principal = Principal(
        key_id="key_1",
        tenant_id="ten_42",
        tenant_name="acme",
        scopes=frozenset(),
        mode=KeyMode.LIVE,
        plan=Plan.PRO,
        allowance=ALLOWANCES[Plan.PRO],
        allowed_ips=None,
        expires_at=None,
    )

    async def failing(request: web.Request) -> web.Response:
        request[PRINCIPAL] = principal  # as auth_middleware does once the key checks out
        bind(tenant_id=principal.tenant_id)
        log.info("handling")
        raise RuntimeError("broken")

    app = web.Application(middlewares=[tracing_middleware, error_middleware])
    app.router.add_get("/fail", failing)
    server = TestServer(app)
    # The access log as the API writes it.
    await server.start_server(
        access_log=logging.getLogger("crewq.access"), access_log_class=RequestAccessLogger
    )
    async with TestClient(server) as client:
        chosen = await client.get("/fail", headers={"X-Request-Id": "client-chosen-1"})
        made = await client.get("/fail")

    assert chosen.status == made.status == 500
    assert chosen.headers["X-Request-Id"] == "client-chosen-1"
    made_id = made.headers["X-Request-Id"]
    assert re.fullmatch(r"req_[0-9a-f]{32}", made_id)
    by_request: dict[str, list[str]] = {}
    for entry in lines(out):
        assert entry.get("tenant_id") == "ten_42", entry
        by_request.setdefault(entry["request_id"], []).append(entry["logger"])
    # The handler's line, the error middleware's, and aiohttp's access log line.
    for request_id in ("client-chosen-1", made_id):
        assert by_request[request_id] == ["tests.logs", "api.errors", "crewq.access"]
