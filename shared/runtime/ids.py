"""Prefixed, time-ordered identifiers (`job_…`, `evt_…`) and secrets."""

import base64
import os
import secrets
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


_last = 0
_last_lock = threading.Lock()


def new_id(prefix: str) -> str:
    """`prefix_` + 26 chars: a 48-bit millisecond clock then 80 random bits (ULID layout),
    so ids sort by creation time and index well. Ids one process makes in the same
    millisecond sort in the order made (ULID's monotonic mode: one more than the last),
    which first-come orders such as a tenant's parked jobs rely on."""
    global _last
    with _last_lock:
        value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
        if value <= _last:  # the same millisecond, or the clock stepped back
            value = _last + 1
        _last = value
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


def new_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_api_key(mode: str) -> str:
    """`crq_live_…` or `crq_test_…`: which kind a key is shows in logs and config files."""
    return f"crq_{mode}_" + secrets.token_urlsafe(32)
