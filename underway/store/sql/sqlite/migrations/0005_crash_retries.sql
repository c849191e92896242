-- A job that lost its worker (an expired lease) runs again on its own budget, not its task's
-- retries: how many times it lost one, and how many times it may (jobs stored before: the default).

ALTER TABLE jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN crash_retries INTEGER NOT NULL DEFAULT 2;
