"""The pure parts of per-model limits: the setting, the merge with stored rows, the token
estimate, and what an LLM attempt takes from a provider's refusal."""

from typing import Any

import pytest
from pydantic import ValidationError

from shared.runtime.model_limits import ModelLimit, merged
from shared.runtime.settings import Settings
from worker.crew.llm_retry import _status, retry_after_seconds
from worker.crew.model_limits import Limiter, estimate_tokens, keys
from worker.crew.protocol import Step


def test_the_setting_is_json_per_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "CREWQ_MODEL_LIMITS", '{"openai/gpt-4o-mini": {"rpm": 60, "tpm": 100000}, "m": {}}'
    )
    assert Settings().model_limits == {
        "openai/gpt-4o-mini": ModelLimit(rpm=60, tpm=100000),
        "m": ModelLimit(),
    }


@pytest.mark.parametrize("value", ['{"m": {"rpm": 0}}', '{"m": {"rps": 1}}', '{"m": 5}'])
def test_a_misshapen_setting_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CREWQ_MODEL_LIMITS", value)
    with pytest.raises(ValidationError):
        Settings()


def test_a_stored_row_replaces_the_settings_limits_whole() -> None:
    configured = {"a": ModelLimit(rpm=10, tpm=100), "b": ModelLimit(rpm=1), "c": ModelLimit()}
    stored = {"a": ModelLimit(tpm=50), "b": ModelLimit(), "d": ModelLimit(rpm=3)}
    # "b" is lifted by its row; "c" limits nothing and is left out.
    assert merged(configured, stored) == {"a": ModelLimit(tpm=50), "d": ModelLimit(rpm=3)}


def test_the_estimate_is_a_quarter_of_the_prompt_plus_the_most_it_may_answer() -> None:
    assert estimate_tokens("x" * 400, None) == 100
    assert estimate_tokens("x" * 400, 256) == 356
    messages = [{"role": "user", "content": "y" * 100}]
    assert estimate_tokens(messages, None) == len(repr(messages)) // 4
    assert estimate_tokens("", None) == 1  # every call holds some place


def test_keys_are_per_model() -> None:
    assert keys("openai/gpt-4o-mini") == (
        "crewq:model:openai/gpt-4o-mini:requests",
        "crewq:model:openai/gpt-4o-mini:tokens",
        "crewq:model:openai/gpt-4o-mini:pause",
        "crewq:model:openai/gpt-4o-mini:tokens_held",
    )


def test_without_redis_configured_nothing_waits_or_reports() -> None:
    steps: list[Step] = []
    limiter = Limiter(None)
    limiter.begin({"m": ModelLimit(rpm=1)}, steps.append)
    tickets = [limiter.acquire("m", "p") for _ in range(3)]
    assert [t.waited_s for t in tickets] == [0.0] * 3 and steps == []


class _Response:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code = status
        self.headers = headers


class _ProviderError(Exception):
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.response: Any = _Response(status, headers)


def test_a_429s_status_and_retry_after_are_read() -> None:
    refused = _ProviderError(429, {"retry-after": "7"})
    assert _status(refused) == 429 and retry_after_seconds(refused) == 7
    assert _status(_ProviderError(500, {})) == 500
    assert _status(ValueError("no response")) is None
