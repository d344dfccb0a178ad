"""LLM clients in a crew process: one default TLS context shared by every SDK client,
while each LLM object keeps clients of its own key and base URL."""

import importlib.util
import ssl
from typing import Any

import httpx
import pytest
from crewai import LLM

from shared.runtime.llm_providers import crewai_modules
from shared.runtime.settings import OFFLINE_MODEL
from worker.crew.tls import share_default_context


def _ssl_context(client: httpx.Client | httpx.AsyncClient) -> ssl.SSLContext:
    context: ssl.SSLContext = client._transport._pool._ssl_context  # type: ignore[union-attr]
    return context


def _clients(llm: Any) -> tuple[Any, Any]:
    return llm._get_sync_client(), llm._get_async_client()


def test_every_llm_shares_one_tls_context_but_keeps_its_own_key_and_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    share_default_context()
    first = LLM(model="openai/gpt-4o-mini", api_key="sk-one", base_url="https://one.test/v1")
    second = LLM(model="openai/gpt-4o", api_key="sk-two", base_url="https://two.test/v1")
    (sync1, async1), (sync2, async2) = _clients(first), _clients(second)
    assert (sync1.api_key, str(sync1.base_url)) == ("sk-one", "https://one.test/v1/")
    assert (async2.api_key, str(async2.base_url)) == ("sk-two", "https://two.test/v1/")
    assert sync1 is not sync2 and sync1._client is not sync2._client  # own connection pools
    shared = _ssl_context(sync1._client)
    for client in (async1._client, sync2._client, async2._client):
        assert _ssl_context(client) is shared
    assert shared.verify_mode is ssl.CERT_REQUIRED and shared.check_hostname
    assert shared.cert_store_stats()["x509_ca"] > 0  # the CA bundle, loaded once


def test_other_tls_settings_are_built_as_httpx_builds_them() -> None:
    share_default_context()
    insecure = httpx.Client(verify=False)
    assert _ssl_context(insecure).verify_mode is ssl.CERT_NONE
    own = ssl.create_default_context()
    assert _ssl_context(httpx.Client(verify=own)) is own
    assert _ssl_context(httpx.Client()) is _ssl_context(httpx.Client())


def test_the_forkserver_imports_the_providers_the_crews_use_and_no_other() -> None:
    models = ["gpt-4o", "openai/gpt-4o-mini", "anthropic/claude-sonnet", OFFLINE_MODEL, "ollama/x"]
    wanted = crewai_modules(models)
    assert wanted == [
        "crewai.llms.providers.openai.completion",
        "crewai.llms.providers.anthropic.completion",
    ]
    assert crewai_modules([OFFLINE_MODEL]) == []
    for module in wanted:  # CrewAI still has them where crewq says
        assert importlib.util.find_spec(module) is not None, module
