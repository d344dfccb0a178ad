"""Verifying a crewq webhook: Standard Webhooks signatures (`webhook-id`,
`webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
several space-separated during a secret's rotation), with the standard library alone. The
same checks as the reference `standardwebhooks` library the server signs with, timestamp
tolerance included."""

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from crewq_client.errors import CrewqError
from schemas.events import Event

__all__ = ["DEFAULT_TOLERANCE", "WebhookVerificationError", "verify_event", "verify_webhook"]

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = timedelta(minutes=5)


class WebhookVerificationError(CrewqError):
    """The webhook is not crewq's, or not now: a header missing, a signature that does not
    match, or a timestamp outside the tolerance (a replay)."""


def _key(secret: str) -> bytes:
    text = secret.removeprefix(SECRET_PREFIX)
    try:
        # Unpadded base64 is accepted, as the reference library does.
        key = base64.b64decode(text + "==")
    except ValueError as exc:
        raise WebhookVerificationError("the secret is not a whsec_ secret") from exc
    if not key:
        raise WebhookVerificationError("the secret is empty")
    return key


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: timedelta = DEFAULT_TOLERANCE,
    now: datetime | None = None,
) -> Any:
    """The webhook's JSON payload once its signature and timestamp check out; raises
    `WebhookVerificationError` otherwise. `body`: the raw request body, unparsed."""
    text = body.decode() if isinstance(body, bytes) else body
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        sent_at = datetime.fromtimestamp(float(stamp), tz=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise WebhookVerificationError("webhook-timestamp is not a Unix time") from exc
    now = now or datetime.now(UTC)
    if sent_at < now - tolerance:
        raise WebhookVerificationError("the webhook's timestamp is too old")
    if sent_at > now + tolerance:
        raise WebhookVerificationError("the webhook's timestamp is too new")
    # The timestamp is signed as sent (whole seconds): sign what the header says.
    signed = f"{msg_id}.{int(sent_at.timestamp())}.{text}".encode()
    expected = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    for versioned in signatures.split(" "):
        version, _, signature = versioned.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(signature)
        except ValueError:
            continue
        if hmac.compare_digest(expected, given):
            return json.loads(text)
    raise WebhookVerificationError("no signature matches the secret")


def verify_event(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> Event:
    """`verify_webhook`, read as a crewq event (the default webhook format)."""
    return Event.model_validate(verify_webhook(secret, headers, body, tolerance=tolerance))
