"""One delivery attempt over real HTTP to a receiver on 127.0.0.1: numeric host forms and
names that lead to private addresses are refused when the request is made, not only when
the URL was registered."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio

from schemas.events import EventType
from shared.runtime.ids import new_signing_secret
from shared.store.deliveries import Due
from shared.webhooks.urls import make_resolver, origin
from tests.fakes import Receiver
from worker.dispatcher.delivery import make_session, send


@pytest_asyncio.fixture
async def local_receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


def _due(url: str) -> Due:
    event = {"id": "evt_1", "type": "job.failed", "created_at": str(datetime.now(UTC)), "data": {}}
    return Due(
        id="dlv_1",
        event_id="evt_1",
        event_type=EventType.JOB_FAILED,
        tenant_id="ten_1",
        endpoint_id=None,
        url=url,
        origin=origin(url),
        attempt=1,
        payload=event,
        secrets=[new_signing_secret()],
        traceparent=None,
    )


async def _send(url: str, *, allow_private: bool) -> tuple[bool, str | None]:
    async with make_session(
        timeout_s=3,
        allow_private=allow_private,
        limit=4,
        resolver=make_resolver([], 2),
        dns_timeout_s=2,
    ) as session:
        answer = await send(
            session, _due(url), allow_http=True, allow_private=allow_private, max_body_bytes=100
        )
    return answer.succeeded, answer.record.error


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.1", "127.0.0.1 is a loopback address"),
        ("2130706433", "127.0.0.1 is a loopback address"),
        ("0177.0.0.1", "127.0.0.1 is a loopback address"),
        ("0", "0.0.0.0 is the unspecified address"),
        ("0.0.0.0", "0.0.0.0 is the unspecified address"),
        ("[2002:7f00:1::1]", "2002:7f00:1::1 wraps 127.0.0.1, a loopback address"),
        ("[::ffff:127.0.0.1]", "wraps 127.0.0.1, a loopback address"),
        # A name's refusal tells the tenant, who reads the attempt, nothing of where it leads.
        ("localhost", "localhost is not a public address"),
    ],
)
async def test_private_destinations_are_refused_by_policy_at_delivery_time(
    local_receiver: Receiver, host: str, reason: str
) -> None:
    """Refused by crewq's own check, with its reason, before any connection: not left to
    the HTTP client's parsing of numeric forms, which differs between versions."""
    url = f"http://{host}:{local_receiver.port}/hooks/ssrf"
    succeeded, error = await _send(url, allow_private=False)
    assert not succeeded and error is not None and reason in error, error
    if host == "localhost":
        assert "127.0.0.1" not in error and "::1" not in error, error
    assert local_receiver.at("ssrf") == []


@pytest.mark.parametrize("host", ["localhost", "0.0.0.0", "127.0.0.1"])
async def test_the_same_destinations_are_reached_when_private_ones_are_allowed(
    local_receiver: Receiver, host: str
) -> None:
    succeeded, error = await _send(
        f"http://{host}:{local_receiver.port}/hooks/allowed", allow_private=True
    )
    assert succeeded, error
    assert len(local_receiver.at("allowed")) == 1
