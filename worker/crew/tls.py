"""One TLS context per crew process for every LLM client it builds.

CrewAI builds two SDK clients (sync and async) for every LLM object, and crewq builds the
LLM objects afresh for every job (worker/crew/builder.py: CrewAI objects keep state between
kickoffs). Each client's httpx transport makes a new `ssl.SSLContext` and loads the whole
CA bundle into it: about 30 ms of CPU each, 60-80 ms per LLM object, more than the rest of
a fast job's own overhead. An SSLContext is meant to be shared by many connections, so the
default one (certificate verification against the default bundle, no client certificate)
is made once per process and handed to every client that asks for exactly that. Anything
else (`verify=False`, a custom context or CA path, a client certificate) is built as httpx
always builds it. The clients themselves stay per LLM object: their keys, base URLs and
connection pools are never shared between jobs.
"""

import functools
import os
import ssl
from typing import Any

import httpx._transports.default as _transports
from httpx._config import create_ssl_context as _create_ssl_context


@functools.lru_cache(maxsize=4)
def _default_context(trust_env: bool, cafile: str | None, capath: str | None) -> ssl.SSLContext:
    # The variables are part of the key: httpx reads them when trust_env is set.
    return _create_ssl_context(verify=True, cert=None, trust_env=trust_env)


def _shared_ssl_context(
    verify: ssl.SSLContext | str | bool = True, cert: Any = None, trust_env: bool = True
) -> ssl.SSLContext:
    if verify is True and cert is None:
        return _default_context(
            trust_env, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
        )
    return _create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)


def share_default_context() -> None:
    """Make httpx's transports (every SDK client CrewAI builds: OpenAI, Anthropic, Gemini,
    LiteLLM's) use one default TLS context in this process. Idempotent."""
    _transports.create_ssl_context = _shared_ssl_context  # type: ignore[attr-defined]
