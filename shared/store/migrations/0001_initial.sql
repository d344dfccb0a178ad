-- crewq's initial schema: tenants and keys, jobs and their attempts,
-- events with their webhook deliveries (the transactional outbox).

CREATE TABLE tenants (
    id                text PRIMARY KEY,
    name              text NOT NULL UNIQUE,
    signing_secret    text NOT NULL,
    max_running_jobs  int CHECK (max_running_jobs > 0),
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id            text PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash      bytea NOT NULL UNIQUE,          -- sha256 of the key; the key itself is never stored
    scopes        text[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE jobs (
    id                   text PRIMARY KEY,
    tenant_id            text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    crew                 text NOT NULL,
    inputs               jsonb NOT NULL,
    metadata             jsonb NOT NULL DEFAULT '{}',
    webhook_url          text,
    status               text NOT NULL
                         CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    timeout_s            int NOT NULL CHECK (timeout_s > 0),
    max_retries          int NOT NULL CHECK (max_retries >= 0),
    attempt              int NOT NULL DEFAULT 0,  -- attempts started so far
    uncounted_attempts   int NOT NULL DEFAULT 0,  -- of those, not spent from max_retries (handed back
                                                  -- by a draining worker, or before a manual retry)
    result               jsonb,
    token_usage          jsonb,
    error                jsonb,
    worker_id            text,
    idempotency_key      text,
    request_hash         bytea,
    run_after            timestamptz NOT NULL DEFAULT now(),  -- earliest start, pushed back by retries
    traceparent          text,                               -- W3C trace context of the submitting request
    created_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz,
    last_activity_at     timestamptz,
    cancel_requested_at  timestamptz
);
-- GET /v1/jobs: newest first per tenant, optionally by status or crew.
-- Ids are time-ordered, so `id DESC` is newest first and the cursor is the last id seen.
CREATE INDEX jobs_tenant ON jobs (tenant_id, id DESC);
CREATE INDEX jobs_tenant_status ON jobs (tenant_id, status, id DESC);
CREATE INDEX jobs_tenant_crew ON jobs (tenant_id, crew, id DESC);
-- The reaper scans running jobs; the reconciler pages through pending ones by id.
CREATE INDEX jobs_live ON jobs (status, last_activity_at) WHERE status IN ('pending', 'running');
CREATE INDEX jobs_pending ON jobs (id) WHERE status = 'pending';
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE job_attempts (
    job_id       text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    number       int NOT NULL,
    worker_id    text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    outcome      text,
    error        jsonb,
    PRIMARY KEY (job_id, number)
);

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
    updated_at                  timestamptz NOT NULL DEFAULT now()
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

CREATE TABLE webhook_deliveries (
    id                text PRIMARY KEY,
    event_id          text NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    tenant_id         text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    endpoint_id       text REFERENCES webhook_endpoints (id) ON DELETE CASCADE,  -- NULL: the job's webhook_url
    url               text NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempt_count     int NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),  -- also the lease while an attempt is under way
    last_attempt_at   timestamptz,
    last_status_code  int,
    last_error        text,
    delivered_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC);
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
