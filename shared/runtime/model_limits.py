"""Per-model limits on LLM calls (requests and tokens a minute), shared by every crew
process of every worker through one limiter in Redis (worker/crew/model_limits.py).

Operators set them in `CREWQ_MODEL_LIMITS` (JSON) and with `crewq models set` (the
`model_limits` table, shared/store/model_limits.py); a model's row wins over the setting.
Workers read both at start and every `REFRESH_S`, and hand them to each crew process in its
`RunRequest`, so crew processes need no database.
"""

from pydantic import BaseModel, ConfigDict, Field

REFRESH_S = 30.0


class ModelLimit(BaseModel):
    """A model's limits; None: that dimension is not limited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rpm: int | None = Field(default=None, ge=1, description="Requests a minute.")
    tpm: int | None = Field(
        default=None, ge=1, description="Tokens (prompt + completion) a minute."
    )

    @property
    def limited(self) -> bool:
        return self.rpm is not None or self.tpm is not None


def merged(
    configured: dict[str, ModelLimit], stored: dict[str, ModelLimit]
) -> dict[str, ModelLimit]:
    """The limits in force: the setting's, with each model the table names replaced whole by
    its row (an operator's `crewq models set` is the later, deliberate word)."""
    limits = {**configured, **stored}
    return {model: limit for model, limit in limits.items() if limit.limited}
