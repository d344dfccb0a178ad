-- CrewAI AMP's per-crew API (issue 21, docs/amp.md): the webhook URLs and `meta` of an
-- execution kicked off through `/amp/{crew}`, and the AMP body a delivery takes.

-- One row per AMP kickoff (shared/store/amp_kickoffs.py). `events.emit` adds its URLs as
-- targets of the events each receives; the dispatcher renders the AMP body from the stored
-- event with `meta` and the crew's task texts.
CREATE TABLE amp_kickoffs (
    job_id            text PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    task_webhook_url  text,
    step_webhook_url  text,
    crew_webhook_url  text,
    meta              jsonb,                       -- as given (any JSON; NULL: none)
    tasks             jsonb NOT NULL DEFAULT '{}', -- task name -> {description, expected_output}
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- The body a delivery carries: crewq's envelope (every row before this) or an AMP payload.
-- A constant default adds the column without rewriting the table; the CHECK is added NOT
-- VALID (no scan under this lock) and validated by 0013 without holding off writes.
ALTER TABLE webhook_deliveries ADD COLUMN format text NOT NULL DEFAULT 'crewq';
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_format_check
    CHECK (format IN ('crewq', 'amp_task', 'amp_step', 'amp_crew')) NOT VALID;
