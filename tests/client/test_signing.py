"""The client's webhook verification (stdlib only) against the server's signer."""

import base64
import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from crewq_client import WebhookVerificationError, verify_event, verify_webhook

from schemas.events import EventType
from shared.webhooks.signing import sign_headers


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


BODY = json.dumps(
    {
        "id": "evt_1",
        "type": "job.completed",
        "created_at": "2026-01-01T00:00:00Z",
        "data": {"id": "job_1"},
    }
).encode()


def test_a_signed_webhook_verifies_and_parses() -> None:
    secret = _secret()
    headers = sign_headers([secret], "evt_1", datetime.now(UTC), BODY)
    assert verify_webhook(secret, headers, BODY)["id"] == "evt_1"
    assert verify_event(secret, headers, BODY.decode()).type is EventType.JOB_COMPLETED
    # Header names are case-insensitive, as HTTP's are.
    upper = {k.upper(): v for k, v in headers.items()}
    assert verify_webhook(secret, upper, BODY)["type"] == "job.completed"


def test_during_a_rotation_either_secret_verifies() -> None:
    new, old = _secret(), _secret()
    headers = sign_headers([new, old], "evt_1", datetime.now(UTC), BODY)
    assert verify_webhook(old, headers, BODY) == verify_webhook(new, headers, BODY)


def test_a_tampered_body_a_wrong_secret_or_a_stale_timestamp_is_refused() -> None:
    secret = _secret()
    now = datetime.now(UTC)
    headers = sign_headers([secret], "evt_1", now, BODY)
    with pytest.raises(WebhookVerificationError, match="no signature"):
        verify_webhook(secret, headers, BODY.replace(b"job_1", b"job_2"))
    with pytest.raises(WebhookVerificationError, match="no signature"):
        verify_webhook(_secret(), headers, BODY)
    old = sign_headers([secret], "evt_1", now - timedelta(minutes=6), BODY)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(secret, old, BODY)
    ahead = sign_headers([secret], "evt_1", now + timedelta(minutes=6), BODY)
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify_webhook(secret, ahead, BODY)
    # Within a wider tolerance, the old one passes.
    assert verify_webhook(secret, old, BODY, tolerance=timedelta(minutes=10))["id"] == "evt_1"
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify_webhook(secret, {"webhook-id": "evt_1"}, BODY)
