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
    last_seq            INTEGER NOT NULL DEFAULT 0
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
