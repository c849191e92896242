-- Batches, queue controls, per-key limits and idempotency keys.

ALTER TABLE jobs ADD COLUMN batch_id TEXT;
ALTER TABLE jobs ADD COLUMN limit_key TEXT;
ALTER TABLE jobs ADD COLUMN limit_concurrency INTEGER;
ALTER TABLE jobs ADD COLUMN rate_count INTEGER;
ALTER TABLE jobs ADD COLUMN rate_per REAL;
ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;

CREATE INDEX jobs_by_batch ON jobs (batch_id, status) WHERE batch_id IS NOT NULL;
CREATE INDEX jobs_limited ON jobs (limit_key) WHERE status = 'running' AND limit_key IS NOT NULL;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE batches (
    id          TEXT PRIMARY KEY,
    name        TEXT,
    task        TEXT NOT NULL,
    queue       TEXT NOT NULL,
    owner       TEXT,
    labels      TEXT NOT NULL DEFAULT '{}',
    total       INTEGER NOT NULL,
    paused      INTEGER NOT NULL DEFAULT 0,
    cancelled   INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
) STRICT;

CREATE TABLE queues (
    name        TEXT PRIMARY KEY,
    paused      INTEGER NOT NULL DEFAULT 0,
    concurrency INTEGER,
    updated_at  REAL NOT NULL
) STRICT;

-- When jobs with a rate limit started, per limit key (kept for the longest window in use).
CREATE TABLE starts (
    limit_key   TEXT NOT NULL,
    at          REAL NOT NULL,
    rate_count  INTEGER NOT NULL,
    rate_per    REAL NOT NULL
) STRICT;
CREATE INDEX starts_by_key ON starts (limit_key, at);
