-- Finding when the next delayed or retried job becomes due, so idle workers wake for it.

CREATE INDEX jobs_due ON jobs (run_at) WHERE status = 'queued';
