"""Webhook signatures: Standard Webhooks (`webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`) via the reference
`standardwebhooks` library, plus `X-Crewq-Signature: sha256=<hex HMAC of the raw body>` for
receivers that want one line of `hmac`."""

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

__all__ = ["WebhookVerificationError", "sign_headers", "simple_signature", "verify_webhook"]


def simple_signature(secret: str, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 of the raw body, keyed with the whole `whsec_…` string."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_headers(
    secrets: Sequence[str], msg_id: str, timestamp: datetime, body: bytes
) -> dict[str, str]:
    """Headers for one attempt. Several secrets (during a rotation) give several
    space-separated `v1,` signatures, as the spec allows; the simple signature uses the
    first (newest) secret."""
    text = body.decode()
    signatures = " ".join(Webhook(s).sign(msg_id, timestamp, text) for s in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signatures,
        "X-Crewq-Signature": simple_signature(secrets[0], body),
    }


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes | str) -> object:
    """Check a crewq webhook and return its parsed event; raises `WebhookVerificationError`
    when the signature, the timestamp (5 minutes' tolerance) or a header is wrong."""
    return Webhook(secret).verify(body, dict(headers))
