-- SQL functions that Python calls carry a version in their name, and Python calls them with
-- named arguments (`p_x => $n`). During a rolling deploy the previous release's processes
-- keep calling what they know while the new release's call theirs: a changed signature is
-- a new version (`…_v2`) beside the old one, never a replaced one (docs/migrations.md).
--
-- The unversioned crewq_submit_job (0005, 0006) and crewq_fold_job_counts (0005) stay, as
-- they were, for the processes of the release before this one, which call them by position.
-- Nothing of this release calls them: drop them in a migration of the next release (a
-- rolling deploy runs only two neighbouring releases at once).

-- The same body as crewq_fold_job_counts (0005).
CREATE FUNCTION crewq_fold_job_counts_v1(
    p_lock_purpose  int,          -- shared/runtime/db.py TenantLock.JOBS
    p_tenant_id     text,
    OUT pending     bigint,
    OUT busy        bigint
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_purpose, hashtext(p_tenant_id));
    IF NOT EXISTS (SELECT FROM tenants WHERE id = p_tenant_id) THEN
        DELETE FROM tenant_job_count_changes c WHERE c.tenant_id = p_tenant_id;
        RETURN;
    END IF;
    WITH folded AS (
        DELETE FROM tenant_job_count_changes c WHERE c.tenant_id = p_tenant_id
        RETURNING c.pending, c.busy
    )
    INSERT INTO tenant_job_counts AS t (tenant_id, pending, busy)
    SELECT p_tenant_id, coalesce(sum(f.pending), 0), coalesce(sum(f.busy), 0) FROM folded f
    ON CONFLICT (tenant_id) DO UPDATE
        SET pending = t.pending + excluded.pending, busy = t.busy + excluded.busy
    RETURNING t.pending, t.busy INTO pending, busy;
END;
$$;

-- The same body as crewq_submit_job (0006), calling the versioned functions by name.
CREATE FUNCTION crewq_submit_job_v1(
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
    IF p_livemode AND NOT crewq_count_job_v1(p_tenant_id => p_tenant_id,
                                             p_monthly_limit => p_monthly_limit) THEN
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
