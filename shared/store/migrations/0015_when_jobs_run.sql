-- When jobs run (issue 22): a job may wait, `scheduled`, until `run_after` (delay, run_at);
-- it may expire unstarted (`expired`, at `expires_at`: ttl); it has a priority among its
-- tenant's jobs waiting for a slot; and a concurrency key limiting how many run at once.

ALTER TABLE jobs
    ADD COLUMN priority int NOT NULL DEFAULT 0 CHECK (priority BETWEEN -1000 AND 1000),
    ADD COLUMN expires_at timestamptz,
    -- At most `concurrency_limit` of a tenant's jobs (per mode) with the same key run at
    -- once; the others wait, parked (issue 22: concurrency keys).
    ADD COLUMN concurrency_key text,
    ADD COLUMN concurrency_limit int CHECK (concurrency_limit > 0);
CREATE INDEX jobs_concurrency ON jobs (tenant_id, livemode, concurrency_key)
    WHERE concurrency_key IS NOT NULL AND status IN ('pending', 'scheduled', 'running');
-- Workers promote scheduled jobs as they come due, and expire unstarted ones.
CREATE INDEX jobs_scheduled ON jobs (run_after) WHERE status = 'scheduled';
CREATE INDEX jobs_expiring ON jobs (expires_at)
    WHERE status IN ('pending', 'scheduled') AND expires_at IS NOT NULL;

ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check CHECK (status IN (
    'pending', 'running', 'completed', 'failed', 'cancelled', 'awaiting_input', 'scheduled',
    'expired')) NOT VALID;

CREATE OR REPLACE FUNCTION crewq_refuse_illegal_job_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.status, NEW.status) NOT IN (
        ('pending', 'running'), ('pending', 'cancelled'), ('pending', 'expired'),
        ('scheduled', 'pending'), ('scheduled', 'cancelled'), ('scheduled', 'expired'),
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

-- Submitting, this release: crewq_submit_job_v1's checks under the tenant's lock, and the
-- job's input settings, budget, start time, expiry and priority. A job to start later is
-- `scheduled` (neither pending nor parked: it takes no slot and waits for no cap).
CREATE FUNCTION crewq_submit_job_v2(
    p_lock_purpose      int,          -- shared/runtime/db.py TenantLock.JOBS
    p_id                text,
    p_tenant_id         text,
    p_crew              text,
    p_inputs            jsonb,
    p_metadata          jsonb,
    p_webhook_url       text,
    p_timeout_s         int,
    p_max_retries       int,
    p_idempotency_key   text,
    p_request_hash      bytea,
    p_traceparent       text,
    p_livemode          boolean,
    p_monthly_limit     bigint,       -- live jobs a month; NULL: no quota
    p_default_max_pending int,
    p_default_cap       int,
    p_input_timeout_s   int DEFAULT NULL,
    p_input_default     text DEFAULT NULL,
    p_budget            jsonb DEFAULT NULL,   -- {max_tokens, max_cost_usd, max_llm_calls}
    p_run_after         timestamptz DEFAULT NULL,  -- later than now: scheduled
    p_expires_at        timestamptz DEFAULT NULL,
    p_priority          int DEFAULT 0,
    p_concurrency_key   text DEFAULT NULL,
    p_concurrency_limit int DEFAULT NULL,
    p_concurrency_reject boolean DEFAULT false  -- refused while the key has its limit
) RETURNS TABLE (
    outcome     text,                 -- created | replayed | too_many_pending | quota_exceeded
                                      -- | concurrency_busy
    bound       bigint,
    decided_at  timestamptz,
    job         jobs
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_bounds record;
    v_job jobs;
    v_later boolean := p_run_after IS NOT NULL AND p_run_after > now();
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_purpose, hashtext(p_tenant_id));
    IF p_idempotency_key IS NOT NULL THEN
        SELECT * INTO v_job FROM jobs j
         WHERE j.tenant_id = p_tenant_id AND j.livemode = p_livemode
           AND j.idempotency_key = p_idempotency_key;
        IF FOUND THEN
            RETURN QUERY SELECT 'replayed', NULL::bigint, now(), v_job;
            RETURN;
        END IF;
    END IF;
    SELECT coalesce(t.max_pending_jobs, p_default_max_pending) AS max_pending,
           coalesce(t.max_running_jobs, p_default_cap) AS cap, c.pending, c.busy
      INTO v_bounds
      FROM tenants t,
           crewq_fold_job_counts_v1(p_lock_purpose => p_lock_purpose,
                                    p_tenant_id => p_tenant_id) c
     WHERE t.id = p_tenant_id;
    IF v_bounds.pending >= v_bounds.max_pending THEN
        RETURN QUERY SELECT 'too_many_pending', v_bounds.max_pending::bigint, now(), NULL::jobs;
        RETURN;
    END IF;
    IF p_concurrency_reject AND (
        SELECT count(*) FROM jobs j
         WHERE j.tenant_id = p_tenant_id AND j.livemode = p_livemode
           AND j.concurrency_key = p_concurrency_key
           AND j.status IN ('pending', 'scheduled', 'running')) >= p_concurrency_limit THEN
        RETURN QUERY SELECT 'concurrency_busy', p_concurrency_limit::bigint, now(), NULL::jobs;
        RETURN;
    END IF;
    IF p_livemode AND NOT crewq_count_job_v1(p_tenant_id => p_tenant_id,
                                             p_monthly_limit => p_monthly_limit) THEN
        RETURN QUERY SELECT 'quota_exceeded', p_monthly_limit, now(), NULL::jobs;
        RETURN;
    END IF;
    INSERT INTO jobs (id, tenant_id, crew, inputs, metadata, webhook_url, status, timeout_s,
                      max_retries, idempotency_key, request_hash, traceparent, parked_at,
                      livemode, input_timeout_s, input_default, budget, run_after,
                      expires_at, priority, concurrency_key, concurrency_limit)
    VALUES (p_id, p_tenant_id, p_crew, p_inputs, p_metadata, p_webhook_url,
            CASE WHEN v_later THEN 'scheduled' ELSE 'pending' END,
            p_timeout_s, p_max_retries, p_idempotency_key, p_request_hash, p_traceparent,
            CASE WHEN NOT v_later AND v_bounds.busy >= v_bounds.cap THEN now() END,
            p_livemode, p_input_timeout_s, p_input_default, p_budget,
            CASE WHEN v_later THEN p_run_after ELSE now() END, p_expires_at, p_priority,
            p_concurrency_key, p_concurrency_limit)
    RETURNING * INTO v_job;
    RETURN QUERY SELECT 'created', NULL::bigint, now(), v_job;
END;
$$;
