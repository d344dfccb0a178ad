"""Non-reversible fingerprints of secret settings, so replicas can be compared without any
of them showing a secret: equal values give equal fingerprints, different values differ."""

import hashlib
import os
from collections.abc import Mapping

from shared.llm_providers import SECRET_VARS
from shared.settings import Settings

UNSET = "unset"


def fingerprint(value: str | None) -> str:
    """The first 12 hex digits of SHA-256 of `value`; `unset` for None or empty."""
    if not value:
        return UNSET
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def of_config(
    settings: Settings, environ: Mapping[str, str] = os.environ, *, providers: bool = True
) -> dict[str, str]:
    """This process's fingerprint of each secret it is configured with: the key sealing
    signing secrets and (unless `providers` is False: a process that calls none) every
    provider credential."""
    found = {"CREWQ_SECRET_KEY": fingerprint(settings.secret_key)}
    for name in SECRET_VARS if providers else ():
        found[name] = fingerprint(environ.get(name))
    return found
