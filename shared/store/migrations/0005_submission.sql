-- Submitting a job in one round trip, at a cost that does not grow with the tenant's backlog.
--
-- A submission checks the tenant's pending jobs against its bound and its busy ones
-- (running, or pending and not parked) against its cap, and counts the month's quota,
-- then inserts, all under the tenant's submission lock.
--
-- Counting the tenant's pending and running jobs took ~0.25 us a row, ~2.5 ms at the
-- default bound of 10,000 pending, inside the lock. The counts are kept instead:
-- every change of a job's status or parking appends a row of differences to
-- `tenant_job_count_changes` (an insert: it waits for no lock, so no order of locks can
-- deadlock), and `crewq_fold_job_counts` adds them into `tenant_job_counts` under the
-- tenant's lock: each submission folds its tenant's changes since the last one, and
-- workers fold every tenant's now and then (shared/store/jobs.py `fold_counts`).
--
-- Run as separate statements, the lock was held across five round trips to an API process
-- busy with every other request, so one tenant's submissions queued behind each other: 32
-- concurrent clients of one tenant got ~240 submissions/s from an API that sat a third
-- idle. In one function called outside an explicit transaction, the lock is taken and
-- released (at the statement's commit) within the server. Each statement in the function
-- takes a fresh snapshot (it is VOLATILE), so what it reads after the lock includes every
-- submission committed before it.

CREATE TABLE tenant_job_counts (
    tenant_id  text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    pending    bigint NOT NULL,
    busy       bigint NOT NULL
);

-- No foreign key: deleting a tenant deletes its jobs, whose changes are written here.
CREATE TABLE tenant_job_count_changes (
    tenant_id  text NOT NULL,
    pending    int NOT NULL,
    busy       int NOT NULL
);
CREATE INDEX tenant_job_count_changes_tenant ON tenant_job_count_changes (tenant_id);

CREATE FUNCTION crewq_count_job_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_pending int := 0;
    v_busy int := 0;
    v_tenant_id text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        v_tenant_id := OLD.tenant_id;
        v_pending := v_pending - (OLD.status = 'pending')::int;
        v_busy := v_busy
            - (OLD.status = 'running' OR OLD.status = 'pending' AND OLD.parked_at IS NULL)::int;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        v_tenant_id := NEW.tenant_id;
        v_pending := v_pending + (NEW.status = 'pending')::int;
        v_busy := v_busy
            + (NEW.status = 'running' OR NEW.status = 'pending' AND NEW.parked_at IS NULL)::int;
    END IF;
    IF v_pending <> 0 OR v_busy <> 0 THEN
        INSERT INTO tenant_job_count_changes (tenant_id, pending, busy)
        VALUES (v_tenant_id, v_pending, v_busy);
    END IF;
    RETURN NULL;
END;
$$;

-- Created before the counts are taken: CREATE TRIGGER waits for every transaction writing
-- jobs and holds off new ones until this migration commits, so none is missed or counted
-- twice.
CREATE TRIGGER jobs_counted
    AFTER INSERT OR DELETE OR UPDATE OF status, parked_at ON jobs
    FOR EACH ROW EXECUTE FUNCTION crewq_count_job_change();

INSERT INTO tenant_job_counts (tenant_id, pending, busy)
SELECT t.id,
       count(j.id) FILTER (WHERE j.status = 'pending'),
       count(j.id) FILTER (WHERE j.status = 'running'
                              OR j.status = 'pending' AND j.parked_at IS NULL)
  FROM tenants t
  LEFT JOIN jobs j ON j.tenant_id = t.id AND j.status IN ('pending', 'running')
 GROUP BY t.id;

-- The tenant's counts, with every change committed so far added in. Under the tenant's
-- lock (taken here; a caller may already hold it), so two folds of one tenant never
-- delete the same changes in different orders.
CREATE FUNCTION crewq_fold_job_counts(
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

CREATE FUNCTION crewq_submit_job(
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
         WHERE j.tenant_id = p_tenant_id AND j.idempotency_key = p_idempotency_key;
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
    -- The month's count (shared/store/usage.py reads it): bumped here, under the lock, so two
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
