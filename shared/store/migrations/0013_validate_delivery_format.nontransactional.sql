-- The CHECK 0012 added NOT VALID, validated: a scan that holds off no writes. Safe to run
-- twice (validating a valid constraint does nothing).
ALTER TABLE webhook_deliveries VALIDATE CONSTRAINT webhook_deliveries_format_check;
