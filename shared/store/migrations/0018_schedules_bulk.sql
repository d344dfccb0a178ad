-- Schedules (shared/store/schedules.py): a crew's job made on a cron expression in a time
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
