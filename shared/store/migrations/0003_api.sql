-- The API's front door: keys that expire and say where they were last used, plans with
-- monthly job quotas and rate limits, IP allowlists, a rotatable tenant signing secret,
-- sandbox (test-key) jobs, and the tenant's log of failed requests.

-- Keys: live or test, optionally named and expiring; `last_used_at` is refreshed at most
-- once a minute. `prefix` is what `keys list` shows of a key (its first characters).
ALTER TABLE api_keys
    ADD COLUMN name text NOT NULL DEFAULT '',
    ADD COLUMN mode text NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'test')),
    ADD COLUMN prefix text NOT NULL DEFAULT 'crq_',
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN last_used_at timestamptz;
-- Cancel and retry move to their own scope, account reads to theirs: existing keys keep
-- every call they could make.
UPDATE api_keys SET scopes = scopes || '{jobs:cancel}'
 WHERE 'jobs:write' = ANY (scopes) AND NOT 'jobs:cancel' = ANY (scopes);
UPDATE api_keys SET scopes = scopes || '{account:read}' WHERE NOT 'account:read' = ANY (scopes);

-- Plans (shared/domain/plans.py) and per-tenant overrides of theirs; NULL: the plan's own.
ALTER TABLE tenants
    ADD COLUMN plan text NOT NULL DEFAULT 'pro' CHECK (plan IN ('free', 'pro', 'unlimited')),
    ADD COLUMN monthly_job_limit int CHECK (monthly_job_limit >= 0),
    ADD COLUMN rate_limit int CHECK (rate_limit > 0),
    -- NULL: any address; otherwise requests must come from one of these ranges.
    ADD COLUMN allowed_ips cidr[],
    -- After a rotation the previous secret signs too, until it expires (then it is cleared).
    ADD COLUMN previous_signing_secret text,
    ADD COLUMN previous_signing_secret_expires_at timestamptz;

-- Jobs each tenant created per calendar month (UTC): the quota's count. A counter, not a
-- count of `jobs`, so that retention deleting old jobs cannot give quota back.
CREATE TABLE tenant_usage (
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    month      date NOT NULL CHECK (extract(day FROM month) = 1),
    jobs       bigint NOT NULL DEFAULT 0 CHECK (jobs >= 0),
    PRIMARY KEY (tenant_id, month)
);

-- Jobs submitted with a test key run on the offline model and count against no quota.
ALTER TABLE jobs ADD COLUMN livemode boolean NOT NULL DEFAULT true;

-- The tenant's failed requests (status >= 400), kept 7 days, so that a customer can find
-- the request id of what went wrong.
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

-- GET /v1/jobs?created_after=… reads a tenant's jobs by creation time.
CREATE INDEX jobs_tenant_created ON jobs (tenant_id, created_at);
