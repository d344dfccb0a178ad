"""Per-model limits on LLM calls that operators set with `crewq models set`: every statement
on `model_limits`.

A row wins over CREWQ_MODEL_LIMITS for its model (shared/runtime/model_limits.py `merged`);
workers read `all_limits` at start and every 30 s and hand the limits to their crew
processes, which apply them through the limiter in Redis (worker/crew/model_limits.py).
"""

from dataclasses import dataclass

from shared.runtime.db import Executor
from shared.runtime.model_limits import ModelLimit

# `set_limit`'s word for "take this dimension's limit away" (stored NULL).
NO_LIMIT = 0


@dataclass(frozen=True)
class StoredLimit:
    model: str
    limit: ModelLimit


async def set_limit(db: Executor, model: str, rpm: int | None, tpm: int | None) -> StoredLimit:
    """Set `model`'s limits: None keeps a dimension as stored, `NO_LIMIT` removes it. One
    upsert, so two operators racing each land whole, the later one last."""
    row = await db.fetchrow(
        """
        INSERT INTO model_limits AS m (model, rpm, tpm)
        VALUES ($1, nullif($2::int, 0), nullif($3::int, 0))
        ON CONFLICT (model) DO UPDATE
           SET rpm = CASE WHEN $2::int IS NULL THEN m.rpm ELSE nullif($2::int, 0) END,
               tpm = CASE WHEN $3::int IS NULL THEN m.tpm ELSE nullif($3::int, 0) END,
               updated_at = now()
        RETURNING model, rpm, tpm
        """,
        model,
        rpm,
        tpm,
    )
    assert row is not None
    return StoredLimit(row["model"], ModelLimit(rpm=row["rpm"], tpm=row["tpm"]))


async def unset(db: Executor, model: str) -> bool:
    """Forget `model`'s row (CREWQ_MODEL_LIMITS applies to it again); False: it had none."""
    return (
        await db.fetchval("DELETE FROM model_limits WHERE model = $1 RETURNING true", model) is True
    )


async def all_limits(db: Executor) -> dict[str, ModelLimit]:
    rows = await db.fetch("SELECT model, rpm, tpm FROM model_limits ORDER BY model")
    return {r["model"]: ModelLimit(rpm=r["rpm"], tpm=r["tpm"]) for r in rows}
