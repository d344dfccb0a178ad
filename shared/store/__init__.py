"""Postgres tables: one module owns each table's SQL (jobs, events, deliveries, endpoints,
tenants, keys, usage, request_failures, processes, signing secrets), beside the migrations
and `schema.sql` that define them. Nothing here speaks HTTP or Redis."""
