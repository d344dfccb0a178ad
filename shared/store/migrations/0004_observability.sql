-- Seeing inside a running crewq: the workers and dispatchers that are alive, a running
-- job's progress, and the tenant-wide event stream.

-- Each worker and dispatcher registers itself and heartbeats here, so any API replica can
-- tell who is alive (`last_seen_at` recent, `stopped_at` unset) without asking them.
CREATE TABLE processes (
    id              text PRIMARY KEY,
    role            text NOT NULL CHECK (role IN ('worker', 'dispatcher')),
    host            text NOT NULL,
    pid             int NOT NULL,
    version         text NOT NULL,
    concurrency     int NOT NULL CHECK (concurrency > 0),
    running         int NOT NULL DEFAULT 0 CHECK (running >= 0),
    -- What the process runs with: its crews, LLM connections, config fingerprints, the port
    -- of its /metrics (schemas/health.py `ProcessReport`).
    report          jsonb NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    stopped_at      timestamptz
);
CREATE INDEX processes_seen ON processes (role, last_seen_at DESC);

-- {"completed_tasks", "total_tasks", "current_task"} of the running attempt.
ALTER TABLE jobs ADD COLUMN progress jsonb;

-- GET /v1/stream reads a tenant's events in the order they were made.
CREATE INDEX events_tenant ON events (tenant_id, created_at, id);
