-- 0015's new status CHECK, validated without holding off writes (safe to run twice).
ALTER TABLE jobs VALIDATE CONSTRAINT jobs_status_check;
