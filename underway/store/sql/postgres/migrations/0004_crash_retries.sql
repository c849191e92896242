-- 0004: a job that lost its worker (an expired lease) runs again on its own budget, not its
-- task's retries: how many times it lost one, and how many times it may (jobs stored before:
-- the default).

ALTER TABLE underway_jobs
    ADD COLUMN crashes integer NOT NULL DEFAULT 0,
    ADD COLUMN crash_retries integer NOT NULL DEFAULT 2;
