"""Budgets as pure rules: a job's limits from its request, crew and platform; prices; the
check before each model call (worker/crew/budget.py) with stand-in LLM objects that count
usage as CrewAI's do."""

from dataclasses import dataclass, field
from typing import Any

import pytest

from schemas.jobs import Budget, Spent
from shared.domain.prices import FREE, Prices
from shared.domain.submissions import budget_of
from shared.runtime.settings import Settings
from worker.crew.budget import BudgetExceeded, BudgetGuard


@dataclass
class Summary:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class CountingLlm:
    """Counts usage as a CrewAI LLM object does (`get_token_usage_summary`)."""

    model: str
    usage: Summary = field(default_factory=Summary)

    def get_token_usage_summary(self) -> Summary:
        return self.usage


@dataclass
class Call:
    llm: Any
    messages: list[dict[str, str]]


def _call(llm: CountingLlm, chars: int = 400) -> Call:
    return Call(llm, [{"role": "user", "content": "x" * chars}])


def test_each_limit_comes_from_the_request_then_the_crew_then_the_platform() -> None:
    settings = Settings(job_max_tokens=1000, job_max_cost_usd=2.0, job_max_llm_calls=None)
    crew = Budget(max_tokens=500, max_llm_calls=7)
    asked = Budget(max_tokens=50)
    assert budget_of(asked, crew, settings) == Budget(
        max_tokens=50, max_cost_usd=2.0, max_llm_calls=7
    )
    assert budget_of(None, None, Settings()) is None


def test_a_budget_refuses_negative_and_unknown_limits() -> None:
    with pytest.raises(ValueError):
        Budget.model_validate({"max_tokens": -1})
    with pytest.raises(ValueError):
        Budget.model_validate({"max_dollars": 1})


def test_prices_come_from_litellm_s_table_unless_the_operator_sets_one() -> None:
    prices = Prices({"openai/mine": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}})
    assert prices.cost("openai/mine", 1_000_000, 500_000) == pytest.approx(2.0)
    # gpt-4o-mini in LiteLLM's table, with or without the provider's prefix.
    assert prices.cost("openai/gpt-4o-mini", 1_000_000, 0) == pytest.approx(0.15)
    assert prices.of("gpt-4o-mini") == prices.of("openai/gpt-4o-mini")
    assert prices.of("crewq/offline") == FREE


def test_the_call_past_the_call_budget_is_refused_before_it_is_sent() -> None:
    llm = CountingLlm("openai/gpt-4o-mini")
    guard = BudgetGuard(Budget(max_llm_calls=2), Spent(llm_calls=1), Prices())
    guard.before_call(_call(llm))  # the second call of the job: within the budget
    with pytest.raises(BudgetExceeded, match="2 model calls"):
        guard.before_call(_call(llm))
    assert guard.spent().llm_calls == 2


def test_a_call_whose_prompt_would_pass_the_token_budget_is_refused() -> None:
    llm = CountingLlm("openai/gpt-4o-mini")
    guard = BudgetGuard(Budget(max_tokens=300), None, Prices())
    guard.before_call(_call(llm, chars=400))  # about 100 tokens: fits
    llm.usage = Summary(prompt_tokens=150, completion_tokens=50)  # what the provider said
    with pytest.raises(BudgetExceeded, match="300 tokens"):
        guard.before_call(_call(llm, chars=404))  # 200 spent + 101 > 300
    guard.before_call(_call(llm, chars=400))  # 200 + 100 fits, just


def test_earlier_attempts_and_the_tenant_s_cap_count_too() -> None:
    llm = CountingLlm("openai/gpt-4o-mini")
    before = Spent(prompt_tokens=900, completion_tokens=0, total_tokens=900, cost_usd=0.5)
    guard = BudgetGuard(Budget(max_tokens=10_000), before, Prices(), caps=Budget(max_tokens=950))
    with pytest.raises(BudgetExceeded, match="tenant's monthly cap"):
        guard.before_call(_call(llm, chars=400))
    costly = BudgetGuard(Budget(max_cost_usd=0.5), before, Prices())
    with pytest.raises(BudgetExceeded, match=r"\$0.5"):
        costly.before_call(_call(llm))
