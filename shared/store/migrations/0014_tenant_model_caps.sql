-- A tenant's monthly caps on what its live jobs spend on models (issue 22), beside its
-- job quota; NULL: none. Whole tokens and whole US dollars. What a month has spent is
-- summed from its jobs' `usage` when an attempt starts (shared/store/usage.py), not kept
-- in a counter every model call would update.
ALTER TABLE tenants
    ADD COLUMN max_tokens_per_month bigint CHECK (max_tokens_per_month > 0),
    ADD COLUMN max_cost_usd_per_month int CHECK (max_cost_usd_per_month > 0);
