"""The pure parts of the API's front door (issue 19): which bodies count as JSON, duplicate
keys, comparing a header with a secret whatever bytes it holds, and which refusals the
tenant's request log keeps."""

from datetime import UTC, datetime, timedelta

import pytest

from api.bodies import duplicate_key, is_json
from api.failure_log import FailureLog
from api.headers import secret_matches
from shared.store.keys import DEFAULT_SCOPES
from shared.store.request_failures import RequestFailure


@pytest.mark.parametrize(
    ("content_type", "json"),
    [
        ("application/json", True),
        ("Application/JSON", True),
        ("application/merge-patch+json", True),
        ("application/vnd.crewq+json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data", False),
        ("application/octet-stream", False),  # what aiohttp reports when none is sent
        ("text/json+xml", False),
        ("application/jsonp", False),
    ],
)
def test_is_json(content_type: str, json: bool) -> None:
    assert is_json(content_type) is json


@pytest.mark.parametrize(
    ("raw", "twice"),
    [
        (b'{"crew":"a","crew":"b"}', "crew"),
        (b'{"a":{"x":1,"y":2,"x":3}}', "x"),
        (b'[{"a":1},{"b":{"c":[{"d":1,"d":2}]}}]', "d"),
        (b'{"\\u0063rew":"a","crew":"b"}', "crew"),  # an escaped key is the same key
        (b'{"crew":"a","inputs":{"crew":"b"}}', None),  # one key in two objects
        (b'[{"a":1},{"a":2}]', None),
        (b'{"n":123456789012345678901234567890,"f":1e999}', None),
        (b'"just a string"', None),
    ],
)
def test_duplicate_key(raw: bytes, twice: str | None) -> None:
    assert duplicate_key(raw) == twice


@pytest.mark.parametrize(
    "given",
    ["\udcff\udcfe", "t\u00e9st", "\x00", "wrong", "s3cret\n", "", "s3cre"],
)
def test_secret_matches_refuses_anything_else_without_raising(given: str) -> None:
    assert secret_matches(given, "s3cret") is False


def test_secret_matches_the_secret_itself() -> None:
    assert secret_matches("s3cret", "s3cret")
    assert secret_matches("t\u00e9st", "t\u00e9st")  # a non-ASCII secret someone configured


def _failure(
    status: int, at: datetime, tenant: str = "t1", code: str = "RATE_LIMITED"
) -> RequestFailure:
    return RequestFailure(
        tenant_id=tenant,
        key_id="key_1",
        at=at,
        method="GET",
        path="/v1/crews",
        status=status,
        code=code,
        request_id="req_1",
    )


def _queued(log: FailureLog) -> list[RequestFailure]:
    found = []
    while not log._queue.empty():
        found.append(log._queue.get_nowait())
    return found


def test_failure_log_keeps_one_429_per_tenant_and_code_a_minute() -> None:
    log = FailureLog()
    minute = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    for second in range(50):
        log.note(_failure(429, minute + timedelta(seconds=second)))
    log.note(_failure(429, minute, code="TOO_MANY_STREAMS"))
    log.note(_failure(429, minute, tenant="t2"))
    for _ in range(3):  # other failures are each kept
        log.note(_failure(404, minute, code="JOB_NOT_FOUND"))
    log.note(_failure(429, minute + timedelta(minutes=1)))  # a new minute: kept again
    kept = [(f.tenant_id, f.status, f.code, f.at) for f in _queued(log)]
    assert kept == [
        ("t1", 429, "RATE_LIMITED", minute),
        ("t1", 429, "TOO_MANY_STREAMS", minute),
        ("t2", 429, "RATE_LIMITED", minute),
        ("t1", 404, "JOB_NOT_FOUND", minute),
        ("t1", 404, "JOB_NOT_FOUND", minute),
        ("t1", 404, "JOB_NOT_FOUND", minute),
        ("t1", 429, "RATE_LIMITED", minute + timedelta(minutes=1)),
    ]


def test_default_scopes_leave_out_webhooks_manage_and_admin() -> None:
    assert {s.value for s in DEFAULT_SCOPES} == {
        "jobs:read",
        "jobs:write",
        "jobs:cancel",
        "account:read",
    }
