"""The LLM providers crewq's crews use, as the environment configures them: which
credentials each needs, whether it is reached at its public API or at a custom base URL,
and where its public API answers (for `/health/debug`'s reachability probe).

CrewAI picks the provider from the model string's prefix (`anthropic/claude-…`); a model
without one is OpenAI's. Credentials and endpoints come from the providers' own variables.
"""

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from schemas.health import LlmConnection
from shared.runtime.settings import OFFLINE_MODEL, PROVIDER_SECRET_VARS


@dataclass(frozen=True)
class Provider:
    name: str
    prefixes: tuple[str, ...]  # model-string prefixes CrewAI routes to it
    credentials: tuple[tuple[str, ...], ...]  # each needed, as any one of its variables
    base_url_vars: tuple[str, ...]  # a custom endpoint, when one of these is set
    public_url: str | None  # None: tenant-specific endpoints only; checked for credentials
    # CrewAI's native module for it, which a process imports (with the provider's SDK) when
    # it builds its first LLM of the provider; None: CrewAI routes it through LiteLLM.
    crewai_module: str | None = None


PROVIDERS = (
    Provider(
        "openai",
        ("openai/",),
        (("OPENAI_API_KEY",),),
        ("OPENAI_BASE_URL", "OPENAI_API_BASE"),
        "https://api.openai.com/v1/models",
        "crewai.llms.providers.openai.completion",
    ),
    Provider(
        "anthropic",
        ("anthropic/",),
        (("ANTHROPIC_API_KEY",),),
        ("ANTHROPIC_BASE_URL",),
        "https://api.anthropic.com/v1/models",
        "crewai.llms.providers.anthropic.completion",
    ),
    Provider(
        "gemini",
        ("gemini/", "google/"),
        (("GEMINI_API_KEY", "GOOGLE_API_KEY"),),
        (),
        "https://generativelanguage.googleapis.com/v1beta/models",
        "crewai.llms.providers.gemini.completion",  # ~2.7 s to import
    ),
    Provider(
        "openrouter",
        ("openrouter/",),
        (("OPENROUTER_API_KEY",),),
        (),
        "https://openrouter.ai/api/v1/models",
    ),
    Provider(
        "deepseek",
        ("deepseek/",),
        (("DEEPSEEK_API_KEY",),),
        (),
        "https://api.deepseek.com/models",
    ),
    Provider(
        "azure",
        ("azure/",),
        (("AZURE_API_KEY",), ("AZURE_API_BASE",)),
        (),
        None,
        "crewai.llms.providers.azure.completion",
    ),
    Provider(
        "bedrock",
        ("bedrock/",),
        (("AWS_ACCESS_KEY_ID",), ("AWS_SECRET_ACCESS_KEY",)),
        (),
        None,
        "crewai.llms.providers.bedrock.completion",
    ),
    Provider("ollama", ("ollama/",), (), ("OLLAMA_HOST",), None),
)
OPENAI = PROVIDERS[0]

# Every variable holding a provider credential: fingerprinted, never shown.
SECRET_VARS = PROVIDER_SECRET_VARS


def provider_of(model: str) -> Provider | None:
    """The provider CrewAI sends `model` to; None for crewq's offline model."""
    if model == OFFLINE_MODEL:
        return None
    for provider in PROVIDERS:
        if model.startswith(provider.prefixes):
            return provider
    return OPENAI if "/" not in model else None


def crewai_modules(models: Iterable[str]) -> list[str]:
    """CrewAI's provider modules these models need: a worker's forkserver imports them once,
    instead of each crew process on its first job (and none it does not need)."""
    found = (provider_of(model) for model in models)
    return list(dict.fromkeys(p.crewai_module for p in found if p and p.crewai_module))


def connections(
    models: Iterable[str], environ: Mapping[str, str] = os.environ
) -> list[LlmConnection]:
    """The providers `models` need, and those whose credentials are set although no crew
    uses them yet, each with what it is missing."""
    used: dict[str, list[str]] = {}
    for model in models:
        provider = provider_of(model)
        if provider is not None:
            used.setdefault(provider.name, [])
            if model not in used[provider.name]:
                used[provider.name].append(model)
    found = []
    for provider in PROVIDERS:
        configured = any(environ.get(v) for group in provider.credentials for v in group) or any(
            environ.get(v) for v in provider.base_url_vars
        )
        if provider.name not in used and not configured:
            continue
        base_url = next((environ[v] for v in provider.base_url_vars if environ.get(v)), None)
        missing = [
            " or ".join(group)
            for group in provider.credentials
            if not any(environ.get(v) for v in group)
        ]
        found.append(
            LlmConnection(
                provider=provider.name,
                base_url=base_url,
                missing_credentials=missing,
                models=used.get(provider.name, []),
            )
        )
    return found


def public_url(name: str) -> str | None:
    """Where a provider's public API answers; None when it has none (or is unknown)."""
    return next((p.public_url for p in PROVIDERS if p.name == name), None)
