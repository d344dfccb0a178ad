"""Field types more than one body takes: whole numbers and webhook URLs."""

from typing import Annotated, Any

from pydantic import BeforeValidator, Field


def _integral(value: Any) -> Any:
    """`942.0` is the integer 942: JSON does not tell them apart, nor does JSON Schema's
    `integer`, so a client (or a JavaScript one, whose numbers are all floats) that sends it
    means 942. Anything else is left to the strict check, which refuses `942.5`, `"942"` and
    `true`."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# After a strict int's `Field(strict=True, ge=..., le=...)`: an integer, given as a JSON
# number without a fractional part; never a string or a bool. Last in the `Annotated`, so
# that the bounds before it stay the schema's `minimum` and `maximum`.
WHOLE = BeforeValidator(_integral)


# A webhook URL as the document states it: http(s), a host of letters, digits, dots and
# dashes, an optional port, then anything but NUL. The URL policy (shared/webhooks/urls.py)
# is what refuses, with `INVALID_WEBHOOK_URL`, and it takes more than this (other hosts, and
# plain http:// only where CREWQ_WEBHOOK_ALLOW_HTTP is set); the pattern is the part of it
# a client can check before sending, and every URL it matches passes the policy's syntax.
# Documented only, not validated by pydantic: a URL it does not match keeps the policy's
# answer, which says why.
URL_PATTERN = "^https?://[A-Za-z0-9._~-]+(:[0-9]{1,4})?([/?#][^\\u0000]*)?$"
WebhookUrl = Annotated[
    str, Field(min_length=1, max_length=2048, json_schema_extra={"pattern": URL_PATTERN})
]
