"""A job's budget, enforced in its crew process before every model call.

CrewAI declares `Agent.max_tokens` and enforces nothing (crewAI #933, #4056). crewq checks
in a `PRE_MODEL_CALL` hook, scoped to the job's kickoff (CrewAI's `scoped_hooks`): the hook
sees the call's messages before they are sent, and raising `HookAborted` from it stops the
kickoff (any other exception in a hook is swallowed by CrewAI, fail-open). So the call that
would go past a limit is never sent; the job fails `BUDGET_EXCEEDED`, keeping its finished
tasks and checkpoint for a retry with a larger budget.

What has been spent is what the job's LLM objects counted from the providers' answers
(`get_token_usage_summary`), plus what earlier attempts spent; what the next call would
add is its prompt, estimated at four characters a token (its completion cannot be known
before it is written). Calls are counted as they are let through.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from crewai.hooks.dispatch import HookAborted, InterceptionPoint, register_scoped, scoped_hooks

from schemas.jobs import Budget, Spent
from shared.domain.prices import Prices

_CHARS_PER_TOKEN = 4


class BudgetExceeded(HookAborted):
    """The next model call would go past the job's budget: it is not sent."""


def _prompt_chars(messages: Any) -> int:
    total = 0
    for message in messages or []:
        content = message.get("content") if isinstance(message, dict) else message
        total += len(content) if isinstance(content, str) else len(str(content or ""))
    return total


def _check(limits: Budget, whose: str, spent: Spent, prompt: int, next_cost: float) -> None:
    """Refuse the next call (about `prompt` tokens and `next_cost`) past `limits`."""
    if limits.max_llm_calls is not None and spent.llm_calls + 1 > limits.max_llm_calls:
        raise BudgetExceeded(f"{whose} of {limits.max_llm_calls} model calls is spent")
    if limits.max_tokens is not None and spent.total_tokens + prompt > limits.max_tokens:
        raise BudgetExceeded(
            f"the next model call (about {prompt} prompt tokens) would go past {whose} of"
            f" {limits.max_tokens} tokens ({spent.total_tokens} spent)"
        )
    if limits.max_cost_usd is not None and spent.cost_usd + next_cost > limits.max_cost_usd:
        raise BudgetExceeded(
            f"the next model call (about ${next_cost:.6f}) would go past {whose} of"
            f" ${limits.max_cost_usd} (${spent.cost_usd:.6f} spent)"
        )


class BudgetGuard:
    def __init__(
        self,
        budget: Budget | None,
        before: Spent | None,
        prices: Prices,
        caps: Budget | None = None,
    ) -> None:
        # The job's own limits, and what its tenant's monthly caps leave it (in the same
        # terms: the job's whole spending), each checked the same way.
        self.limits = [
            (budget or Budget(), "the job's budget"),
            (caps or Budget(), "its tenant's monthly cap"),
        ]
        self.before = before or Spent()
        self.prices = prices
        self._llms: list[Any] = []  # the job's LLM objects, each counting its own usage
        self._calls = 0
        self._lock = threading.Lock()  # calls may come from a crew's async tasks' threads

    def spent(self) -> Spent:
        """What the job has spent, this attempt and the earlier ones together."""
        prompt = completion = 0
        cost = self.before.cost_usd
        for llm in self._llms:
            summary = llm.get_token_usage_summary()
            prompt += summary.prompt_tokens
            completion += summary.completion_tokens
            cost += self.prices.cost(
                str(getattr(llm, "model", "")), summary.prompt_tokens, summary.completion_tokens
            )
        prompt += self.before.prompt_tokens
        completion += self.before.completion_tokens
        return Spent(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cost_usd=cost,
            llm_calls=self.before.llm_calls + self._calls,
        )

    def before_call(self, context: Any) -> None:
        """The `PRE_MODEL_CALL` hook: let the call through, counted, or refuse it."""
        llm = context.llm
        with self._lock:
            if llm is not None and not isinstance(llm, str) and llm not in self._llms:
                self._llms.append(llm)
            spent = self.spent()
            prompt = _prompt_chars(context.messages) // _CHARS_PER_TOKEN
            next_cost = self.prices.cost(str(getattr(llm, "model", llm or "")), prompt, 0)
            for limits, whose in self.limits:
                _check(limits, whose, spent, prompt, next_cost)
            self._calls += 1

    @contextmanager
    def guarding(self) -> Iterator[None]:
        """Check every model call made in this block (the job's kickoff)."""
        with scoped_hooks():
            register_scoped(InterceptionPoint.PRE_MODEL_CALL, self.before_call)
            yield
