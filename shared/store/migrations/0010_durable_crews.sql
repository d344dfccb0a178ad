-- Crews that survive and wait (issue 21): checkpoints of a running crew's finished tasks,
-- the `awaiting_input` state of a job paused for a person, and where an attempt resumed.

-- A crew's state after each task it finished, sealed (shared/store/checkpoints.py). An
-- attempt resumes from the newest one it can open; older ones stay as a fallback, a few.
CREATE TABLE job_checkpoints (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     int NOT NULL,
    tasks_done  int NOT NULL CHECK (tasks_done >= 0),  -- tasks it holds as finished
    task        text,                                  -- the last of them
    awaiting    boolean NOT NULL DEFAULT false,        -- it also holds a task's answer under review
    sealed      bytea NOT NULL,                        -- Fernet, under CREWQ_CHECKPOINT_KEY
    bytes       int NOT NULL,                          -- the state's size before sealing
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_checkpoints_job ON job_checkpoints (job_id, id DESC);

-- A job paused for a person: what it asks (shown to clients), the answer that resumes it,
-- and how long it waits (as submitted; NULL: the crew's, then the platform's default).
ALTER TABLE jobs
    ADD COLUMN input_timeout_s int CHECK (input_timeout_s > 0),
    ADD COLUMN input_default text CHECK (input_default IN ('approve', 'reject', 'fail')),
    ADD COLUMN input_request jsonb,
    ADD COLUMN input_expires_at timestamptz,
    ADD COLUMN input_answer jsonb,
    -- What the job may spend on models (issue 22; NULL: no limit) and has spent, over all
    -- its attempts: {prompt_tokens, completion_tokens, total_tokens, cost_usd, llm_calls,
    -- tasks: {name: {...}}} (schemas/jobs.py Budget, Usage).
    ADD COLUMN budget jsonb,
    ADD COLUMN usage jsonb;
-- The worker's sweep finds the jobs whose wait is over.
CREATE INDEX jobs_awaiting_input ON jobs (input_expires_at) WHERE status = 'awaiting_input';

ALTER TABLE job_attempts ADD COLUMN resumed_from text;

-- The new status, outcome and error code (NOT VALID: no scan under this lock; 0011
-- validates them without holding off writes).
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check CHECK (status IN (
    'pending', 'running', 'completed', 'failed', 'cancelled', 'awaiting_input')) NOT VALID;
ALTER TABLE jobs DROP CONSTRAINT jobs_error_code;
ALTER TABLE jobs ADD CONSTRAINT jobs_error_code CHECK (error->>'code' IN (
    'CREW_ERROR', 'CREW_CONFIG_ERROR', 'TIMEOUT', 'WORKER_LOST', 'LLM_UNAVAILABLE',
    'INPUT_TIMEOUT', 'BUDGET_EXCEEDED')) NOT VALID;
ALTER TABLE job_attempts DROP CONSTRAINT job_attempts_outcome;
ALTER TABLE job_attempts ADD CONSTRAINT job_attempts_outcome CHECK (outcome IN (
    'completed', 'failed', 'cancelled', 'retrying', 'released', 'lost', 'timeout',
    'awaiting_input')) NOT VALID;
ALTER TABLE job_attempts DROP CONSTRAINT job_attempts_error_code;
ALTER TABLE job_attempts ADD CONSTRAINT job_attempts_error_code CHECK (error->>'code' IN (
    'CREW_ERROR', 'CREW_CONFIG_ERROR', 'TIMEOUT', 'WORKER_LOST', 'LLM_UNAVAILABLE',
    'INPUT_TIMEOUT', 'BUDGET_EXCEEDED')) NOT VALID;

-- The job state machine gains the pause: running -> awaiting_input (the attempt ends and
-- frees its slot), then -> pending (answered, or approved at its timeout), -> cancelled
-- (cancelled, or rejected at its timeout) or -> failed (its timeout, with `fail`).
CREATE OR REPLACE FUNCTION crewq_refuse_illegal_job_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.status, NEW.status) NOT IN (
        ('pending', 'running'), ('pending', 'cancelled'),
        ('running', 'completed'), ('running', 'failed'), ('running', 'cancelled'),
        ('running', 'pending'), ('running', 'awaiting_input'),
        ('awaiting_input', 'pending'), ('awaiting_input', 'cancelled'),
        ('awaiting_input', 'failed'),
        ('failed', 'pending'), ('cancelled', 'pending')
    ) THEN
        RAISE EXCEPTION 'job %: % -> % is not a move of the job state machine',
            OLD.id, OLD.status, NEW.status USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
