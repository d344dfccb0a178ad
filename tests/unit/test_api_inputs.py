"""What the API refuses before any query: body checks, field-named validation messages,
client addresses behind proxies, and the key-duration syntax of the CLI."""

import ipaddress
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request
from pydantic import ValidationError

from api.addresses import came_over_tls, client_address
from api.bodies import MAX_DEPTH, _refusal
from api.errors import _unexpected, validation_error
from crewq.cli import parse_duration
from schemas.jobs import JobCreate
from schemas.webhooks import SecretRotate, WebhookUpdate


def _details(body: dict[str, Any]) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        JobCreate.model_validate(body)
    err = validation_error(JobCreate, caught.value)
    assert err.status == 400 and err.code == "VALIDATION_ERROR"
    return dict(err.details)


def test_types_are_strict_and_each_field_is_named() -> None:
    assert _details({"crew": "echo", "timeout": "600"}) == {
        "timeout": ["must be an integer between 1 and 7200"]
    }
    assert _details({"crew": "echo", "timeout": 0}) == {
        "timeout": ["must be an integer between 1 and 7200"]
    }
    assert _details({"crew": "echo", "max_retries": 1.5}) == {
        "max_retries": ["must be an integer between 0 and 10"]
    }
    assert _details({"inputs": []}) == {"crew": ["is required"], "inputs": ["must be an object"]}
    assert _details({"crew": "echo", "colour": "red"}) == {"colour": ["is not a known field"]}
    assert _details({"crew": "echo", "webhook_url": ""}) == {"webhook_url": ["must not be empty"]}


def test_whole_numbers_may_be_written_as_floats_but_never_as_strings_or_bools() -> None:
    # JSON Schema's `integer`, which the document states, takes 942.0: so does the API.
    job = JobCreate.model_validate({"crew": "echo", "timeout": 942.0, "max_retries": 2.0})
    assert (job.timeout, job.max_retries) == (942, 2)
    assert type(job.timeout) is int
    for refused in ("942", True, 942.5):
        assert _details({"crew": "echo", "timeout": refused}) == {
            "timeout": ["must be an integer between 1 and 7200"]
        }
    # The webhook rotation body was lax, and read "600" as 600; it is strict like the rest.
    with pytest.raises(ValidationError):
        SecretRotate.model_validate({"grace_seconds": "600"})
    assert SecretRotate.model_validate({"grace_seconds": 60.0}).grace_seconds == 60
    with pytest.raises(ValidationError):
        WebhookUpdate.model_validate({"enabled": 0})


def test_metadata_limits() -> None:
    assert _details({"crew": "e", "metadata": {str(i): "v" for i in range(101)}}) == {
        "metadata": ["must have at most 100 items"]
    }
    details = _details({"crew": "e", "metadata": {"note": "x" * 1001}})
    assert details == {"metadata": ["note: string values must be at most 1000 characters"]}
    JobCreate.model_validate({"crew": "e", "metadata": {"n": 7, "note": "x" * 1000}})


def test_documents_crewq_cannot_store_exactly_are_refused_by_field() -> None:
    assert _refusal({"metadata": {"id": 2**53}}, "", 0) == (
        "metadata.id",
        "must lie within ±(2^53 - 1); send larger numbers as strings",
    )
    # orjson reads integers past 64 bits as floats: those are refused too.
    assert _refusal({"n": 1.2345678901234568e29}, "", 0) is not None
    assert _refusal({"n": 2**53 - 1, "f": 0.5, "b": True}, "", 0) is None
    assert _refusal({"inputs": {"a": ["ok", "nul\x00"]}}, "", 0) == (
        "inputs.a.1",
        "must not contain NUL (\\u0000)",
    )
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    found = _refusal({"inputs": deep}, "", 0)
    assert found is not None and "nested more than" in found[1]


TRUSTED = [ipaddress.ip_network("10.0.0.0/8")]


def _request(peer: str, **headers: str) -> Any:
    request = make_mocked_request("GET", "/", headers=headers)
    request._transport_peername = (peer, 1234)
    return request


def test_proxy_headers_are_believed_only_from_trusted_proxies() -> None:
    # Not a proxy we trust: its X-Forwarded-For is the client's own word.
    spoofed = _request("203.0.113.9", **{"X-Forwarded-For": "198.51.100.1"})
    assert str(client_address(spoofed, TRUSTED)) == "203.0.113.9"
    # Through two of our proxies: the right-most address that is not one of them.
    chained = _request("10.0.0.2", **{"X-Forwarded-For": "6.6.6.6, 198.51.100.1, 10.0.0.7"})
    assert str(client_address(chained, TRUSTED)) == "198.51.100.1"
    assert came_over_tls(_request("10.0.0.2", **{"X-Forwarded-Proto": "https"}), TRUSTED)
    assert not came_over_tls(_request("203.0.113.9", **{"X-Forwarded-Proto": "https"}), TRUSTED)


def test_key_lifetimes_parse() -> None:
    assert parse_duration("90d").days == 90
    assert parse_duration("12h").total_seconds() == 12 * 3600
    for bad in ("90", "d", "-1d", "0d", "1w"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_an_unexpected_error_is_answered_without_its_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = mock.Mock()
    transport.is_closing.return_value = False
    request = make_mocked_request("GET", "/v1/jobs", transport=transport)
    request["request_id"] = "req_abc"
    err = _unexpected(request, KeyError("postgres://user:secret@db/crewq"))
    assert (err.status, err.code) == (500, "INTERNAL_ERROR")
    assert "secret" not in err.message and "req_abc" in err.message and err.details is None
    assert "req_abc" in caplog.text and "secret@db" in caplog.text  # the log has the cause
