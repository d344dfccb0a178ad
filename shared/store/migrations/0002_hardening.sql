-- Enums checked in SQL, a guard on every status move, jobs parked behind their tenant's
-- running cap, per-tenant bounds, and the indexes that retention, fair delivery claims and
-- id-ordered delivery pages read.

-- Outcomes, error codes and reasons are StrEnums in Python (schemas/); Postgres refuses
-- anything else, so a typo in a literal cannot reach the data.
ALTER TABLE job_attempts ADD CONSTRAINT job_attempts_outcome CHECK (outcome IN (
    'completed', 'failed', 'cancelled', 'retrying', 'released', 'lost', 'timeout'));
ALTER TABLE job_attempts ADD CONSTRAINT job_attempts_error_code CHECK (error->>'code' IN (
    'CREW_ERROR', 'CREW_CONFIG_ERROR', 'TIMEOUT', 'WORKER_LOST', 'LLM_UNAVAILABLE'));
ALTER TABLE jobs ADD CONSTRAINT jobs_error_code CHECK (error->>'code' IN (
    'CREW_ERROR', 'CREW_CONFIG_ERROR', 'TIMEOUT', 'WORKER_LOST', 'LLM_UNAVAILABLE'));
ALTER TABLE webhook_endpoints ADD CONSTRAINT webhook_endpoints_disabled_reason
    CHECK (disabled_reason IN ('webhook.disabled: receiver answered 410 Gone',
                               'webhook.disabled: failing for too long',
                               'disabled through the API'));

-- The job state machine. Every move is made by shared/store/jobs.py's `_move`, guarded by the
-- states it may leave; this refuses any other change of status, whoever makes it.
CREATE FUNCTION crewq_refuse_illegal_job_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.status, NEW.status) NOT IN (
        ('pending', 'running'), ('pending', 'cancelled'),
        ('running', 'completed'), ('running', 'failed'), ('running', 'cancelled'),
        ('running', 'pending'),
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

-- A pending job its tenant's running cap refused waits here, off the queue, until one of
-- the tenant's running jobs ends and hands it the slot.
ALTER TABLE jobs ADD COLUMN parked_at timestamptz;
CREATE INDEX jobs_parked ON jobs (tenant_id, id) WHERE parked_at IS NOT NULL;

-- Per-tenant bounds; NULL: the platform default (CREWQ_TENANT_MAX_*).
ALTER TABLE tenants
    ADD COLUMN max_pending_jobs int CHECK (max_pending_jobs > 0),
    ADD COLUMN max_webhook_endpoints int CHECK (max_webhook_endpoints >= 0),
    ADD COLUMN max_event_streams int CHECK (max_event_streams > 0);

-- Retention deletes finished jobs oldest first, and events that belong to no job.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE status IN ('completed', 'failed', 'cancelled');
CREATE INDEX events_without_job ON events (created_at) WHERE job_id IS NULL;

-- Claims take due deliveries tenant by tenant: one index probe finds the next tenant with
-- any pending, one more its due rows. The index on next_attempt_at alone goes: the planner
-- preferred it for a tenant's rows and filtered other tenants' backlog row by row.
DROP INDEX webhook_deliveries_due;
CREATE INDEX webhook_deliveries_tenant_due ON webhook_deliveries (tenant_id, next_attempt_at)
    WHERE status = 'pending';
-- Delivery ids are time-ordered from now on: an endpoint's deliveries page by id.
DROP INDEX webhook_deliveries_endpoint;
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id DESC);
