-- The receiver a delivery goes to, as the dispatcher's per-endpoint limit and circuit
-- breaker count receivers: scheme, host and port (shared/webhooks/urls.py `origin`).
--
-- Keyed on the exact URL, each query string or path was a receiver of its own, so varying
-- one escaped both the in-flight limit and the breaker. The origin is computed where the
-- URL is written (yarl reads it as aiohttp will), not parsed again here in SQL. Rows written
-- before this column are keyed on their URL, as before, until delivered (`coalesce`).
ALTER TABLE webhook_deliveries ADD COLUMN origin text;
