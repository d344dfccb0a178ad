"""Non-reversible fingerprints of secret settings, so replicas can be compared without any
of them showing a secret: equal values give equal fingerprints, different values differ."""

import hashlib
import os
from collections.abc import Mapping

from shared.runtime.llm_providers import SECRET_VARS
from shared.runtime.settings import Settings

UNSET = "unset"


def fingerprint(value: str | None) -> str:
    """The first 12 hex digits of SHA-256 of `value`; `unset` for None or empty."""
    if not value:
        return UNSET
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def of_config(
    settings: Settings,
    environ: Mapping[str, str] = os.environ,
    *,
    providers: bool = True,
    secret_key: bool = True,
    checkpoint_key: bool = False,
) -> dict[str, str]:
    """This process's fingerprint of each secret it uses: the key sealing signing secrets
    (unless `secret_key` is False: a worker, which seals and opens none and is not given
    it) and every provider credential (unless `providers` is False: a process that calls
    none). A secret a role is not given is left out, not reported as unset, so that it does
    not stand out as a mismatch."""
    found = {"CREWQ_SECRET_KEY": fingerprint(settings.secret_key)} if secret_key else {}
    if checkpoint_key:  # a worker's: it seals and opens crew checkpoints
        found["CREWQ_CHECKPOINT_KEY"] = fingerprint(settings.checkpoint_key)
    for name in SECRET_VARS if providers else ():
        found[name] = fingerprint(environ.get(name))
    return found
