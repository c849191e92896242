-- 0002: batches, queue controls, per-key limits and idempotency keys.

ALTER TABLE underway_jobs
    ADD COLUMN batch_id text,
    ADD COLUMN limit_key text,
    ADD COLUMN limit_concurrency integer,
    ADD COLUMN rate_count integer,
    ADD COLUMN rate_per double precision,
    ADD COLUMN idempotency_key text;

CREATE INDEX underway_jobs_by_batch ON underway_jobs (batch_id, status) WHERE batch_id IS NOT NULL;
CREATE INDEX underway_jobs_limited ON underway_jobs (limit_key)
    WHERE status = 'running' AND limit_key IS NOT NULL;
CREATE UNIQUE INDEX underway_jobs_idempotency ON underway_jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE underway_batches (
    id          text PRIMARY KEY,
    name        text,
    task        text NOT NULL,
    queue       text NOT NULL,
    owner       text,
    labels      jsonb NOT NULL DEFAULT '{}',
    total       integer NOT NULL,
    paused      boolean NOT NULL DEFAULT false,
    cancelled   boolean NOT NULL DEFAULT false,
    created_at  double precision NOT NULL,
    updated_at  double precision NOT NULL
);

CREATE TABLE underway_queues (
    name        text PRIMARY KEY,
    paused      boolean NOT NULL DEFAULT false,
    concurrency integer,
    updated_at  double precision NOT NULL
);

-- When jobs with a rate limit started, per limit key (kept for the longest window in use).
CREATE TABLE underway_starts (
    limit_key   text NOT NULL,
    at          double precision NOT NULL,
    rate_count  integer NOT NULL,
    rate_per    double precision NOT NULL
);
CREATE INDEX underway_starts_by_key ON underway_starts (limit_key, at);
