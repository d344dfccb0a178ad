-- Submitting a job in one round trip (shared/jobs.py `insert` is its only caller).
--
-- A submission counts the tenant's pending and busy jobs and its month's quota, then
-- inserts, under the tenant's submission lock. Run as separate statements, that lock was
-- held across five round trips to an API process busy with every other request, so one
-- tenant's submissions queued behind each other: 32 concurrent clients of one tenant got
-- ~240 submissions/s from an API that sat a third idle. In one function called outside an
-- explicit transaction, the lock is taken and released (at the statement's commit) within
-- the server. Each statement below takes a fresh snapshot (the function is VOLATILE), so
-- the counts read after the lock see every submission committed before it.
CREATE FUNCTION crewq_submit_job(
    p_lock_purpose      int,          -- shared/db.py TenantLock.JOBS
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
    p_default_cap       int
) RETURNS TABLE (
    outcome     text,                 -- created | replayed | too_many_pending | quota_exceeded
    bound       bigint,               -- the bound that refused it
    decided_at  timestamptz,          -- the database's clock (when a quota resets)
    job         jobs
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_bounds record;
    v_job jobs;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_purpose, hashtext(p_tenant_id));
    IF p_idempotency_key IS NOT NULL THEN
        SELECT * INTO v_job FROM jobs j
         WHERE j.tenant_id = p_tenant_id AND j.idempotency_key = p_idempotency_key;
        IF FOUND THEN
            RETURN QUERY SELECT 'replayed', NULL::bigint, now(), v_job;
            RETURN;
        END IF;
    END IF;
    SELECT coalesce(t.max_pending_jobs, p_default_max_pending) AS max_pending,
           coalesce(t.max_running_jobs, p_default_cap) AS cap,
           count(*) FILTER (WHERE j.status = 'pending') AS pending,
           count(*) FILTER (WHERE j.status = 'running'
                               OR j.status = 'pending' AND j.parked_at IS NULL) AS busy
      INTO v_bounds
      FROM tenants t
      LEFT JOIN jobs j ON j.tenant_id = t.id AND j.status IN ('pending', 'running')
     WHERE t.id = p_tenant_id
     GROUP BY t.id;
    IF v_bounds.pending >= v_bounds.max_pending THEN
        RETURN QUERY SELECT 'too_many_pending', v_bounds.max_pending::bigint, now(), NULL::jobs;
        RETURN;
    END IF;
    -- The month's count (shared/usage.py reads it): bumped here, under the lock, so two
    -- submissions can neither both take the last job of a quota nor lose a count.
    IF p_livemode THEN
        INSERT INTO tenant_usage AS u (tenant_id, month, jobs)
        SELECT p_tenant_id, date_trunc('month', now() AT TIME ZONE 'UTC')::date, 1
         WHERE p_monthly_limit IS NULL OR p_monthly_limit > 0
        ON CONFLICT (tenant_id, month) DO UPDATE SET jobs = u.jobs + 1
         WHERE p_monthly_limit IS NULL OR u.jobs < p_monthly_limit;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'quota_exceeded', p_monthly_limit, now(), NULL::jobs;
            RETURN;
        END IF;
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
