-- The whole current schema, for a fresh database. Keep it equal to the migrations applied in order (a test checks).

CREATE TABLE jobs (
    id                  TEXT PRIMARY KEY,
    queue               TEXT NOT NULL,
    task                TEXT NOT NULL,
    args                TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN
                            ('queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled')),
    priority            INTEGER NOT NULL DEFAULT 0,
    run_at              REAL NOT NULL,
    attempt             INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL DEFAULT 1,
    timeout             REAL,
    lease_until         REAL,
    worker_id           TEXT,
    owner               TEXT,
    labels              TEXT NOT NULL DEFAULT '{}',
    progress            TEXT,
    prompt              TEXT,
    answers             TEXT NOT NULL DEFAULT '{}',
    checkpoint          TEXT,
    result              TEXT,
    error               TEXT,
    cancel_requested    INTEGER NOT NULL DEFAULT 0,
    cancel_requested_at REAL,
    created_at          REAL NOT NULL,
    updated_at          REAL NOT NULL,
    started_at          REAL,
    finished_at         REAL,
    last_seq            INTEGER NOT NULL DEFAULT 0,
    -- Added by 0003 (ALTER TABLE appends columns, so they come last here too).
    batch_id            TEXT,
    limit_key           TEXT,
    limit_concurrency   INTEGER,
    rate_count          INTEGER,
    rate_per            REAL,
    idempotency_key     TEXT,
    -- Added by 0005.
    crashes             INTEGER NOT NULL DEFAULT 0,
    crash_retries       INTEGER NOT NULL DEFAULT 2
) STRICT;

-- Claiming: the oldest job of the highest priority, in one queue or in any.
CREATE INDEX jobs_claim_queue ON jobs (queue, priority DESC, run_at, id) WHERE status = 'queued';
CREATE INDEX jobs_claim_any ON jobs (priority DESC, run_at, id) WHERE status = 'queued';
-- When the next delayed or retried job becomes due.
CREATE INDEX jobs_due ON jobs (run_at) WHERE status = 'queued';
-- Sweeping expired leases and enforcing the cancel grace.
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE status IN ('running', 'waiting');
CREATE INDEX jobs_cancelling ON jobs (worker_id) WHERE cancel_requested = 1;
-- Pruning finished jobs.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE status IN ('succeeded', 'failed', 'cancelled');
-- Listing, newest first, by status or queue.
CREATE INDEX jobs_by_status ON jobs (status, id);
CREATE INDEX jobs_by_queue ON jobs (queue, id);

-- id is the feed position: SQLite commits one writer at a time, so ids follow commit order.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    job_id  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    type    TEXT NOT NULL,
    at      REAL NOT NULL,
    data    TEXT NOT NULL,
    UNIQUE (job_id, seq)
) STRICT;

CREATE TABLE workers (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    queues      TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    running     INTEGER NOT NULL DEFAULT 0,
    started_at  REAL NOT NULL,
    last_seen   REAL NOT NULL
) STRICT;

-- Batches, queue controls, per-key limits and idempotency keys.
CREATE INDEX jobs_by_batch ON jobs (batch_id, status) WHERE batch_id IS NOT NULL;
CREATE INDEX jobs_limited ON jobs (limit_key) WHERE status = 'running' AND limit_key IS NOT NULL;
-- Unique per owner (added by 0004): no owner counts as the owner ''.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (COALESCE(owner, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;

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

-- API keys, signing secrets, and listing by owner (jobs without an owner are not indexed).
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    digest      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    revoked_at  REAL
) STRICT;

CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  REAL NOT NULL
) STRICT;

CREATE INDEX jobs_by_owner ON jobs (owner, id) WHERE owner IS NOT NULL;
CREATE INDEX batches_by_owner ON batches (owner, id) WHERE owner IS NOT NULL;
