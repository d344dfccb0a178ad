"""Retries of LLM calls inside a job, with tenacity.

Transient provider failures (429, 5xx, timeouts, broken connections) are retried with
exponential backoff and jitter, never sooner than the provider's `Retry-After`. This is the
one retry layer: the OpenAI client is built with `max_retries=0`, and CrewAI's own
rate-limit loop is told it is already inside one (it checks a context variable and then
makes a single attempt), so attempts do not multiply.

CrewAI has no public hook for either: its LLM call hooks (`crewai.hooks`) run before and
after a call but cannot repeat one, and the flag is private. So crewq uses the private
flag and shadows the instance's `call`, and `tests/unit/test_crew_steps.py` fails the day
CrewAI renames the flag, stops honouring it, or stops calling `llm.call` on the instance.

Each attempt first takes a place under its model's shared limit (worker/crew/model_limits.py),
so retries are throttled too, and a 429's `Retry-After` pauses the model for every process.
"""

import contextvars
import logging
from collections.abc import Callable
from typing import Any

from crewai.llms import retry as crewai_retry
from crewai.llms.base_llm import BaseLLM
from tenacity import (
    RetryCallState,
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from worker.crew.errors import is_transient
from worker.crew.model_limits import limiter

log = logging.getLogger(__name__)

_CREWAI_RETRY_ACTIVE: contextvars.ContextVar[bool] | None = getattr(
    crewai_retry, "_active_llm_rate_limit_retry", None
)


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """The provider's `Retry-After` (or `retry-after-ms`), from an SDK error's response."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        if headers.get("retry-after"):
            return float(headers["retry-after"])
    except (TypeError, ValueError):
        return None
    return None


def _wait(max_wait: float) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(initial=1, max=max_wait)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return max(backoff(state), retry_after_seconds(exc) or 0.0)

    return wait


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None) or getattr(
        getattr(exc, "response", None), "status_code", None
    )
    return status if isinstance(status, int) else None


def _tokens_used(llm: BaseLLM) -> int:
    usage: dict[str, int] = getattr(llm, "_token_usage", None) or {}
    return int(usage.get("total_tokens", 0))


def _limited_call(
    llm: BaseLLM, model: str, call: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """One attempt, under the model's shared limit; a 429's Retry-After pauses the model."""
    shared = limiter()
    messages = args[0] if args else kwargs.get("messages", "")
    max_tokens = getattr(llm, "max_tokens", None)
    ticket = shared.acquire(
        model, messages, int(max_tokens) if isinstance(max_tokens, int | float) else None
    )
    # CrewAI adds each call's usage to the instance; the difference is this call's (a
    # concurrent call on the same instance may blur it: only the settlement is off).
    before = _tokens_used(llm)
    try:
        result = call(*args, **kwargs)
    except Exception as exc:
        retry_after = retry_after_seconds(exc)
        if _status(exc) == 429 and retry_after:
            shared.pause(model, retry_after)
        raise
    used = _tokens_used(llm) - before
    shared.settle(ticket, used if used > 0 else None)
    return result


def with_retries(
    llm: BaseLLM, attempts: int, max_wait: float, *, model: str | None = None
) -> BaseLLM:
    """Make `llm.call` retry transient failures, each attempt under the shared limit of
    `model` (the model string as crews and operators name it: CrewAI strips the provider
    from `llm.model`); returns the same object."""
    call = llm.call
    name = model or llm.model

    def call_with_retries(*args: Any, **kwargs: Any) -> Any:
        for attempt in Retrying(
            retry=retry_if_exception(is_transient),
            wait=_wait(max_wait),
            stop=stop_after_attempt(attempts),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        ):
            with attempt:
                token = _CREWAI_RETRY_ACTIVE.set(True) if _CREWAI_RETRY_ACTIVE else None
                try:
                    return _limited_call(llm, name, call, *args, **kwargs)
                finally:
                    if token is not None and _CREWAI_RETRY_ACTIVE is not None:
                        _CREWAI_RETRY_ACTIVE.reset(token)
        raise AssertionError("unreachable")  # tenacity re-raises the last error

    # A pydantic model: set the attribute past its validation, shadowing the method.
    object.__setattr__(llm, "call", call_with_retries)
    return llm
