"""What every crewq process runs on: settings, the Postgres pool and migrator (db), the
Redis queue adapter (queue: the only module besides worker/consumer.py that names arq),
logs, metrics, traces, the supervisor, a role's life, periodic loops and what counts as a
transient error, ids, sealing, version, size bounds and provider settings. It imports no
store, domain rule or webhook policy (import-linter, pyproject.toml), but for a role's
registration in the processes table."""
