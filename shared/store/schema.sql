-- crewq's schema as it is after every migration in shared/store/migrations/, in one place to read.
--
-- The migrations build the database; this file describes it. tests/integration/test_schema.py
-- builds a database from each and compares their catalogs (columns in order, with types,
-- defaults and nullability; constraints; indexes; sequences; functions with their bodies;
-- triggers), so a change to one without the other fails. Change it in the same change as
-- the migration (docs/migrations.md). Columns are in their tables' order: one added by a
-- later migration comes last, noted with the migration that added it.
--
-- Not here: schema_migrations, the migrator's own table (shared/runtime/db.py), and data the
-- migrations wrote (0003's scopes, 0005's first counts).

-- --- tenants, their keys and their usage -------------------------------------------------

CREATE TABLE tenants (
    id                                      text PRIMARY KEY,
    name                                    text NOT NULL UNIQUE,
    signing_secret                          text NOT NULL,      -- sealed (shared/runtime/secret_box.py)
    max_running_jobs                        int CHECK (max_running_jobs > 0),
    created_at                              timestamptz NOT NULL DEFAULT now(),
    -- 0002: per-tenant bounds; NULL: the platform default (CREWQ_TENANT_MAX_*).
    max_pending_jobs                        int CHECK (max_pending_jobs > 0),
    max_webhook_endpoints                   int CHECK (max_webhook_endpoints >= 0),
    max_event_streams                       int CHECK (max_event_streams > 0),
    -- 0003: the plan (schemas/account.py Plan) and overrides of it; NULL: the plan's own.
    plan                                    text NOT NULL DEFAULT 'pro'
                                            CHECK (plan IN ('free', 'pro', 'unlimited')),
    monthly_job_limit                       int CHECK (monthly_job_limit >= 0),
    rate_limit                              int CHECK (rate_limit > 0),
    allowed_ips                             cidr[],             -- NULL: any address
    previous_signing_secret                 text,               -- signs too until it expires
    previous_signing_secret_expires_at      timestamptz,
    -- 0006: test jobs' webhooks are signed with a secret of their own, made when first needed.
    test_signing_secret                     text,
    previous_test_signing_secret            text,
    previous_test_signing_secret_expires_at timestamptz,
    -- 0014: monthly caps on what live jobs spend on models; NULL: none.
    max_tokens_per_month                    bigint CHECK (max_tokens_per_month > 0),
    max_cost_usd_per_month                  int CHECK (max_cost_usd_per_month > 0)
);

CREATE TABLE api_keys (
    id            text PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash      bytea NOT NULL UNIQUE,          -- sha256 of the key; the key itself is never stored
    scopes        text[] NOT NULL,                -- schemas/account.py Scope
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    -- 0003
    name          text NOT NULL DEFAULT '',
    mode          text NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'test')),  -- KeyMode
    prefix        text NOT NULL DEFAULT 'crq_',   -- what `keys list` shows of a key
    expires_at    timestamptz,
    last_used_at  timestamptz                     -- refreshed at most once a minute
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

-- Live jobs each tenant created per calendar month (UTC): the quota's count, bumped only by
-- crewq_count_job_v1. A counter, so that retention deleting old jobs gives no quota back.
CREATE TABLE tenant_usage (
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    month      date NOT NULL CHECK (extract(day FROM month) = 1),
    jobs       bigint NOT NULL DEFAULT 0 CHECK (jobs >= 0),
    PRIMARY KEY (tenant_id, month)
);

-- The tenant's failed requests (status >= 400), kept CREWQ_REQUEST_LOG_DAYS.
CREATE TABLE request_failures (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_id      text,
    at          timestamptz NOT NULL,
    method      text NOT NULL,
    path        text NOT NULL,
    status      smallint NOT NULL CHECK (status >= 400),
    code        text NOT NULL,
    request_id  text NOT NULL
);
CREATE INDEX request_failures_tenant ON request_failures (tenant_id, at DESC);
CREATE INDEX request_failures_at ON request_failures (at);

-- --- jobs -----------------------------------------------------------------------------------

CREATE TABLE jobs (
    id                   text PRIMARY KEY,        -- time-ordered (shared/runtime/ids.py)
    tenant_id            text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    crew                 text NOT NULL,
    inputs               jsonb NOT NULL,
    metadata             jsonb NOT NULL DEFAULT '{}',
    webhook_url          text,
    status               text NOT NULL            -- schemas/jobs.py JobStatus
                         CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled',
                                           'awaiting_input', 'scheduled', 'expired')),
    timeout_s            int NOT NULL CHECK (timeout_s > 0),
    max_retries          int NOT NULL CHECK (max_retries >= 0),
    attempt              int NOT NULL DEFAULT 0,  -- attempts started so far
    uncounted_attempts   int NOT NULL DEFAULT 0,  -- of those, not spent from max_retries (handed back
                                                  -- by a draining worker, or before a manual retry)
    result               jsonb,
    token_usage          jsonb,
    error                jsonb,                   -- its code: schemas/jobs.py ErrorCode
    worker_id            text,
    idempotency_key      text,
    request_hash         bytea,
    run_after            timestamptz NOT NULL DEFAULT now(),  -- earliest start, pushed back by retries
    traceparent          text,                               -- W3C trace context of the submitting request
    created_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz,
    last_activity_at     timestamptz,
    cancel_requested_at  timestamptz,
    -- 0002: a pending job its tenant's running cap refused waits here, off the queue.
    parked_at            timestamptz,
    -- 0003: false for a test key's job (offline model, no quota).
    livemode             boolean NOT NULL DEFAULT true,
    -- 0004: {"completed_tasks", "total_tasks", "current_task"} of the running attempt.
    progress             jsonb,
    -- 0010: a job paused for a person (`awaiting_input`): its wait as submitted (NULL: the
    -- crew's, then the platform's), what it asks, until when, and the answer resuming it.
    input_timeout_s      int CHECK (input_timeout_s > 0),
    input_default        text CHECK (input_default IN ('approve', 'reject', 'fail')),
    input_request        jsonb,
    input_expires_at     timestamptz,
    input_answer         jsonb,
    -- 0010: what the job may spend on models (NULL: no limit) and has spent, over all its
    -- attempts (schemas/jobs.py Budget, Usage).
    budget               jsonb,
    usage                jsonb,
    -- 0015: among the tenant's jobs waiting for a slot, higher first; and when an unstarted
    -- job expires (ttl).
    priority             int NOT NULL DEFAULT 0 CHECK (priority BETWEEN -1000 AND 1000),
    expires_at           timestamptz,
    -- 0015: at most concurrency_limit of the tenant's jobs (per mode) with this key run at once.
    concurrency_key      text,
    concurrency_limit    int CHECK (concurrency_limit > 0),
    CONSTRAINT jobs_error_code CHECK (error->>'code' IN (
        'CREW_ERROR', 'CREW_CONFIG_ERROR', 'TIMEOUT', 'WORKER_LOST', 'LLM_UNAVAILABLE',
        'INPUT_TIMEOUT', 'BUDGET_EXCEEDED'))
);
-- GET /v1/jobs: newest first per tenant (ids are time-ordered), by status, crew or time.
CREATE INDEX jobs_tenant ON jobs (tenant_id, id DESC);
CREATE INDEX jobs_tenant_status ON jobs (tenant_id, status, id DESC);
CREATE INDEX jobs_tenant_crew ON jobs (tenant_id, crew, id DESC);
CREATE INDEX jobs_tenant_created ON jobs (tenant_id, created_at);
-- The reaper scans running jobs; the reconciler pages through pending ones by id.
CREATE INDEX jobs_live ON jobs (status, last_activity_at) WHERE status IN ('pending', 'running');
CREATE INDEX jobs_pending ON jobs (id) WHERE status = 'pending';
-- An idempotency key names a job within one tenant and mode.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant_id, livemode, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_parked ON jobs (tenant_id, id) WHERE parked_at IS NOT NULL;
-- Retention deletes finished jobs oldest first.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE status IN ('completed', 'failed', 'cancelled');
-- The worker's sweep finds the jobs whose wait for input is over.
CREATE INDEX jobs_awaiting_input ON jobs (input_expires_at) WHERE status = 'awaiting_input';
-- Workers promote scheduled jobs as they come due, and expire unstarted ones (0015).
CREATE INDEX jobs_scheduled ON jobs (run_after) WHERE status = 'scheduled';
CREATE INDEX jobs_expiring ON jobs (expires_at)
    WHERE status IN ('pending', 'scheduled') AND expires_at IS NOT NULL;
CREATE INDEX jobs_concurrency ON jobs (tenant_id, livemode, concurrency_key)
    WHERE concurrency_key IS NOT NULL AND status IN ('pending', 'scheduled', 'running');

CREATE TABLE job_attempts (
    job_id       text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    number       int NOT NULL,
    worker_id    text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    outcome      text,
    error        jsonb,
    resumed_from text,  -- 0010: the task it resumed after, from the job's checkpoint
    PRIMARY KEY (job_id, number),
    CONSTRAINT job_attempts_outcome CHECK (outcome IN (  -- schemas/jobs.py AttemptOutcome
        'completed', 'failed', 'cancelled', 'retrying', 'released', 'lost', 'timeout',
        'awaiting_input')),
    CONSTRAINT job_attempts_error_code CHECK (error->>'code' IN (
        'CREW_ERROR', 'CREW_CONFIG_ERROR', 'TIMEOUT', 'WORKER_LOST', 'LLM_UNAVAILABLE',
        'INPUT_TIMEOUT', 'BUDGET_EXCEEDED'))
);

-- A running crew's state after each task it finished, sealed (shared/store/checkpoints.py,
-- 0010). An attempt resumes from the newest one it can open; a few older ones stay.
CREATE TABLE job_checkpoints (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     int NOT NULL,
    tasks_done  int NOT NULL CHECK (tasks_done >= 0),
    task        text,
    awaiting    boolean NOT NULL DEFAULT false,
    sealed      bytea NOT NULL,
    bytes       int NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_checkpoints_job ON job_checkpoints (job_id, id DESC);

-- Each tenant's pending and busy (running, or pending and not parked) jobs, kept instead of
-- counted: the trigger jobs_counted appends differences to tenant_job_count_changes, and
-- crewq_fold_job_counts_v1 adds them in under the tenant's lock (0005 says why).
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

-- --- events and webhooks ----------------------------------------------------------------------

CREATE TABLE webhook_endpoints (
    id                          text PRIMARY KEY,
    tenant_id                   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url                         text NOT NULL,
    description                 text NOT NULL DEFAULT '',
    events                      text[] NOT NULL,
    secret                      text NOT NULL,
    previous_secret             text,
    previous_secret_expires_at  timestamptz,
    disabled_at                 timestamptz,
    disabled_reason             text,
    failing_since               timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    -- 0006: an endpoint receives the events of its mode's jobs only.
    livemode                    boolean NOT NULL DEFAULT true,
    CONSTRAINT webhook_endpoints_disabled_reason  -- schemas/webhooks.py DisabledReason
        CHECK (disabled_reason IN ('webhook.disabled: receiver answered 410 Gone',
                                   'webhook.disabled: failing for too long',
                                   'disabled through the API'))
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, created_at DESC);

CREATE TABLE events (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    job_id      text REFERENCES jobs (id) ON DELETE CASCADE,
    type        text NOT NULL,
    payload     jsonb NOT NULL,                 -- the exact envelope receivers get
    traceparent text,                           -- the trace of the work that caused it
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_job ON events (job_id, created_at);
-- GET /v1/stream reads a tenant's events in the order they were made.
CREATE INDEX events_tenant ON events (tenant_id, created_at, id);
-- Retention deletes events that belong to no job.
CREATE INDEX events_without_job ON events (created_at) WHERE job_id IS NULL;

CREATE TABLE webhook_deliveries (
    id                text PRIMARY KEY,           -- time-ordered
    event_id          text NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    tenant_id         text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    endpoint_id       text REFERENCES webhook_endpoints (id) ON DELETE CASCADE,  -- NULL: the job's webhook_url
    url               text NOT NULL,
    status            text NOT NULL DEFAULT 'pending'  -- schemas/webhooks.py DeliveryStatus
                      CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempt_count     int NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),  -- also the lease while an attempt is under way
    last_attempt_at   timestamptz,
    last_status_code  int,
    last_error        text,
    delivered_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- 0007: the receiver (scheme, host, port) that limits and circuit breakers count;
    -- NULL on rows written before it (keyed on their URL).
    origin            text
);
-- Claims take due deliveries tenant by tenant.
CREATE INDEX webhook_deliveries_tenant_due ON webhook_deliveries (tenant_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id DESC);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

CREATE TABLE delivery_attempts (
    id             bigserial PRIMARY KEY,
    delivery_id    text NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    number         int NOT NULL,
    attempted_at   timestamptz NOT NULL DEFAULT now(),
    duration_ms    int NOT NULL,
    status_code    int,
    error          text,
    response_body  text
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, number);

-- --- processes ------------------------------------------------------------------------------

-- Workers and dispatchers alive (`last_seen_at` recent, `stopped_at` unset).
CREATE TABLE processes (
    id              text PRIMARY KEY,
    role            text NOT NULL CHECK (role IN ('worker', 'dispatcher')),  -- ProcessRole
    host            text NOT NULL,
    pid             int NOT NULL,
    version         text NOT NULL,
    concurrency     int NOT NULL CHECK (concurrency > 0),
    running         int NOT NULL DEFAULT 0 CHECK (running >= 0),
    report          jsonb NOT NULL,              -- schemas/health.py ProcessReport
    started_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    stopped_at      timestamptz
);
CREATE INDEX processes_seen ON processes (role, last_seen_at DESC);

-- --- state machines (triggers refusing any other change of status) ------------------------

-- Every job move is a Move of shared/store/jobs.py (0002).
CREATE FUNCTION crewq_refuse_illegal_job_move() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE TRIGGER jobs_state_machine BEFORE UPDATE OF status ON jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION crewq_refuse_illegal_job_move();

-- Every delivery move is one of shared/store/deliveries.py's MOVES (0009).
CREATE FUNCTION crewq_refuse_illegal_delivery_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.status, NEW.status) NOT IN (
        ('pending', 'succeeded'), ('pending', 'failed'),
        ('succeeded', 'pending'), ('failed', 'pending')
    ) THEN
        RAISE EXCEPTION 'delivery %: % -> % is not a move of the delivery state machine',
            OLD.id, OLD.status, NEW.status USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER webhook_deliveries_state_machine BEFORE UPDATE OF status ON webhook_deliveries
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION crewq_refuse_illegal_delivery_move();

-- --- kept job counts (0005) -------------------------------------------------------------------

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

CREATE TRIGGER jobs_counted
    AFTER INSERT OR DELETE OR UPDATE OF status, parked_at ON jobs
    FOR EACH ROW EXECUTE FUNCTION crewq_count_job_change();

-- The tenant's counts, with every change committed so far added in, under the tenant's lock.
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

-- --- functions called from Python ------------------------------------------------------------
--
-- Versioned, and called with named arguments: a changed signature is a new version beside
-- the old (docs/migrations.md).

-- One live job counted against the month's quota (0006): false when it is used up.
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

-- A submission in one round trip (shared/store/job_submission.py `insert`; 0005 says why).
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

-- --- kept for the previous release; drop in the next (0008) ------------------------------------
--
-- Processes of the release before 0008 call these by position during a rolling deploy.

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

-- 0012: CrewAI AMP's per-crew API (docs/amp.md): an AMP kickoff's webhook URLs, `meta` and
-- its crew's task texts (shared/store/amp_kickoffs.py).
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

-- 0012/0013: the body a delivery carries, crewq's envelope or an AMP payload.
ALTER TABLE webhook_deliveries ADD COLUMN format text NOT NULL DEFAULT 'crewq';
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_format_check
    CHECK (format IN ('crewq', 'amp_task', 'amp_step', 'amp_crew'));

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

-- 0017: per-model limits on LLM calls shared by every worker (shared/store/model_limits.py);
-- a row wins over CREWQ_MODEL_LIMITS for its model. NULL: that dimension is not limited.
CREATE TABLE model_limits (
    model       text PRIMARY KEY CHECK (model <> ''),
    rpm         int CHECK (rpm > 0),
    tpm         int CHECK (tpm > 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- 0018: schedules (shared/store/schedules.py): a crew's job made on a cron expression in a time
-- zone, or every `interval_s`, one job per tick however many workers fire them. And bulk
-- operations (shared/store/bulk_operations.py): a cancel or retry of every job matching a
-- filter, done in batches by the workers, with its progress.
CREATE TABLE schedules (
    id            text PRIMARY KEY,                -- sch_… (shared/runtime/ids.py)
    tenant_id     text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    livemode      boolean NOT NULL,
    crew          text NOT NULL,
    inputs        jsonb NOT NULL,
    metadata      jsonb NOT NULL DEFAULT '{}',
    timeout_s     int NOT NULL CHECK (timeout_s > 0),
    max_retries   int NOT NULL CHECK (max_retries >= 0),
    cron          text,
    timezone      text,                            -- an IANA name, with `cron`
    interval_s    int CHECK (interval_s > 0),
    missed        text NOT NULL                    -- schemas/schedules.py MissedPolicy
                  CHECK (missed IN ('skip', 'run_once')),
    paused        boolean NOT NULL DEFAULT false,
    next_run_at   timestamptz NOT NULL,            -- the next tick due
    last_run_at   timestamptz,                     -- the last tick that made a job
    last_job_id   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedules_one_timing CHECK (
        (cron IS NOT NULL AND timezone IS NOT NULL AND interval_s IS NULL)
        OR (cron IS NULL AND timezone IS NULL AND interval_s IS NOT NULL))
);
CREATE INDEX schedules_tenant ON schedules (tenant_id, livemode, id DESC);
-- Every worker's scheduler looks for the due ones.
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE NOT paused;

CREATE TABLE bulk_operations (
    id            text PRIMARY KEY,                -- bulk_…
    tenant_id     text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    livemode      boolean NOT NULL,
    kind          text NOT NULL                    -- schemas/bulk.py BulkKind
                  CHECK (kind IN ('cancel', 'retry')),
    filter        jsonb NOT NULL,                  -- as asked (schemas/bulk.py JobSelection)
    job_ids       text[] NOT NULL,                 -- the match, frozen when asked
    monthly_limit bigint,                          -- the tenant's quota then (retry counts)
    status        text NOT NULL DEFAULT 'running'  -- schemas/bulk.py BulkStatus
                  CHECK (status IN ('running', 'done')),
    matched       int NOT NULL,
    done          int NOT NULL DEFAULT 0,          -- jobs processed so far (job_ids[1:done])
    changed       int NOT NULL DEFAULT 0,          -- of those, cancelled or retried
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX bulk_operations_tenant ON bulk_operations (tenant_id, livemode, id DESC);
CREATE INDEX bulk_operations_running ON bulk_operations (id) WHERE status = 'running';
