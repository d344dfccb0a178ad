"""What a model call costs, in US dollars: the operator's prices (`CREWQ_MODEL_PRICES`)
first, then LiteLLM's price table, which ships with CrewAI's dependencies.

The table is read from LiteLLM's JSON file without importing LiteLLM (whose import takes
seconds and reaches for the network unless told not to): 23 ms, once per process, and only
in the processes that price calls (crew processes and workers).
"""

import importlib.util
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_TABLE = "model_prices_and_context_window_backup.json"
_MILLION = 1_000_000


@dataclass(frozen=True)
class Price:
    input_per_token: float  # US dollars
    output_per_token: float

    def of(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input_per_token + completion_tokens * self.output_per_token


FREE = Price(0.0, 0.0)


@lru_cache(maxsize=1)
def _litellm_table() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / _TABLE
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("LiteLLM's price table could not be read (%s): models are unpriced", exc)
        return {}
    return table if isinstance(table, dict) else {}


class Prices:
    """Prices by model string. `overrides`: `{"model": {"input_usd_per_mtok": x,
    "output_usd_per_mtok": y}}` (CREWQ_MODEL_PRICES), per million tokens."""

    def __init__(self, overrides: dict[str, dict[str, float]] | None = None) -> None:
        self._overrides = {
            model: Price(
                float(p.get("input_usd_per_mtok", 0)) / _MILLION,
                float(p.get("output_usd_per_mtok", 0)) / _MILLION,
            )
            for model, p in (overrides or {}).items()
        }
        self._unpriced: set[str] = set()

    def of(self, model: str) -> Price:
        """The model's price; one without a price (the offline model, a local one) is free,
        said once in the log."""
        for name in (model, model.split("/", 1)[-1]):
            if name in self._overrides:
                return self._overrides[name]
            found = _litellm_table().get(name)
            if isinstance(found, dict) and "input_cost_per_token" in found:
                return Price(
                    float(found.get("input_cost_per_token") or 0.0),
                    float(found.get("output_cost_per_token") or 0.0),
                )
        if model not in self._unpriced:
            self._unpriced.add(model)
            log.info("no price for model %r: its calls count as free", model)
        return FREE

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        return self.of(model).of(prompt_tokens, completion_tokens)
