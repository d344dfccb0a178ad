-- Per-model limits on LLM calls, shared by every worker (issue 22): what `crewq models set`
-- stores (shared/store/model_limits.py). A row wins over CREWQ_MODEL_LIMITS for its model;
-- workers read the table at start and every 30 s. NULL: that dimension is not limited.
CREATE TABLE model_limits (
    model       text PRIMARY KEY CHECK (model <> ''),
    rpm         int CHECK (rpm > 0),
    tpm         int CHECK (tpm > 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
