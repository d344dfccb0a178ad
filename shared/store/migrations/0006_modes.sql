-- Test keys see and touch only test data (issue 19's audit: a test key read, cancelled and
-- retried live jobs, replayed a live job by its idempotency key, minted live keys and read
-- the live signing secret). A mode is now part of whose data a row is, beside its tenant.

-- An idempotency key names a job within one mode: a test key's key never answers a live job.
DROP INDEX jobs_idempotency;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant_id, livemode, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Webhook endpoints belong to a mode: a test key registers test endpoints, which receive
-- the events of test jobs only. Existing endpoints were registered by live keys.
ALTER TABLE webhook_endpoints ADD COLUMN livemode boolean NOT NULL DEFAULT true;

-- Test jobs' own webhooks are signed with a secret of their own, made when a test key first
-- needs it (sealed by the application, which holds the keys: shared/store/tenants.py).
ALTER TABLE tenants
    ADD COLUMN test_signing_secret text,
    ADD COLUMN previous_test_signing_secret text,
    ADD COLUMN previous_test_signing_secret_expires_at timestamptz;

-- One job counted against the tenant's monthly quota of live jobs (shared/store/usage.py reads
-- the count): false when the quota is used up. An upsert whose conflict row is locked and
-- whose WHERE is evaluated again under that lock, so two callers can neither both take the
-- last job of a quota nor lose a count. Submissions and manual retries both call it.
CREATE FUNCTION crewq_count_job_v1(p_tenant_id text, p_monthly_limit bigint)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO tenant_usage AS u (tenant_id, month, jobs)
    SELECT p_tenant_id, date_trunc('month', now() AT TIME ZONE 'UTC')::date, 1
     WHERE p_monthly_limit IS NULL OR p_monthly_limit > 0
    ON CONFLICT (tenant_id, month) DO UPDATE SET jobs = u.jobs + 1
     WHERE p_monthly_limit IS NULL OR u.jobs < p_monthly_limit;
    RETURN FOUND;
END;
$$;

-- The same function as migration 0005's, with its signature unchanged (API processes of the
-- previous release keep calling it during a rolling deploy): the idempotency look-up keeps
-- to the submitting key's mode, and the quota is counted by crewq_count_job_v1.
CREATE OR REPLACE FUNCTION crewq_submit_job(
    p_lock_purpose      int,
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
    p_monthly_limit     bigint,
    p_default_max_pending int,
    p_default_cap       int
) RETURNS TABLE (
    outcome     text,
    bound       bigint,
    decided_at  timestamptz,
    job         jobs
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_bounds record;
    v_job jobs;
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
      FROM tenants t, crewq_fold_job_counts(p_lock_purpose, p_tenant_id) c
     WHERE t.id = p_tenant_id;
    IF v_bounds.pending >= v_bounds.max_pending THEN
        RETURN QUERY SELECT 'too_many_pending', v_bounds.max_pending::bigint, now(), NULL::jobs;
        RETURN;
    END IF;
    IF p_livemode AND NOT crewq_count_job_v1(p_tenant_id, p_monthly_limit) THEN
        RETURN QUERY SELECT 'quota_exceeded', p_monthly_limit, now(), NULL::jobs;
        RETURN;
    END IF;
    INSERT INTO jobs (id, tenant_id, crew, inputs, metadata, webhook_url, status, timeout_s,
                      max_retries, idempotency_key, request_hash, traceparent, parked_at,
                      livemode)
    VALUES (p_id, p_tenant_id, p_crew, p_inputs, p_metadata, p_webhook_url, 'pending',
            p_timeout_s, p_max_retries, p_idempotency_key, p_request_hash, p_traceparent,
            CASE WHEN v_bounds.busy >= v_bounds.cap THEN now() END, p_livemode)
    RETURNING * INTO v_job;
    RETURN QUERY SELECT 'created', NULL::bigint, now(), v_job;
END;
$$;
