-- The CHECKs 0010 added NOT VALID, validated: a scan that holds off no writes. Safe to run
-- twice (validating a valid constraint does nothing).
ALTER TABLE jobs VALIDATE CONSTRAINT jobs_status_check;
ALTER TABLE jobs VALIDATE CONSTRAINT jobs_error_code;
ALTER TABLE job_attempts VALIDATE CONSTRAINT job_attempts_outcome;
ALTER TABLE job_attempts VALIDATE CONSTRAINT job_attempts_error_code;
