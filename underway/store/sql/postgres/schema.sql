-- The whole current schema, for a fresh database. Keep it equal to the migrations applied in
-- order (a test checks). Tables live in the first schema of the connection's search_path.
-- JSON values are stored as json (text kept as written); labels as jsonb, to be filtered.

CREATE TABLE underway_jobs (
    id                  text PRIMARY KEY,
    queue               text NOT NULL,
    task                text NOT NULL,
    args                json NOT NULL,
    status              text NOT NULL CHECK (status IN
                            ('queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled')),
    priority            integer NOT NULL DEFAULT 0,
    run_at              double precision NOT NULL,
    attempt             integer NOT NULL DEFAULT 0,
    max_attempts        integer NOT NULL DEFAULT 1,
    timeout             double precision,
    lease_until         double precision,
    worker_id           text,
    owner               text,
    labels              jsonb NOT NULL DEFAULT '{}',
    progress            json,
    prompt              json,
    answers             json NOT NULL DEFAULT '{}',
    checkpoint          json,
    result              json,
    error               json,
    cancel_requested    boolean NOT NULL DEFAULT false,
    cancel_requested_at double precision,
    created_at          double precision NOT NULL,
    updated_at          double precision NOT NULL,
    started_at          double precision,
    finished_at         double precision,
    last_seq            integer NOT NULL DEFAULT 0,
    batch_id            text,
    limit_key           text,
    limit_concurrency   integer,
    rate_count          integer,
    rate_per            double precision,
    idempotency_key     text,
    crashes             integer NOT NULL DEFAULT 0,
    crash_retries       integer NOT NULL DEFAULT 2
) WITH (fillfactor = 80);

-- Claiming: the oldest job of the highest priority, in one queue or in any.
CREATE INDEX underway_jobs_claim_queue ON underway_jobs (queue, priority DESC, run_at, id)
    WHERE status = 'queued';
CREATE INDEX underway_jobs_claim_any ON underway_jobs (priority DESC, run_at, id)
    WHERE status = 'queued';
-- When the next delayed or retried job becomes due.
CREATE INDEX underway_jobs_due ON underway_jobs (queue, run_at) WHERE status = 'queued';
-- Sweeping expired leases and enforcing the cancel grace.
CREATE INDEX underway_jobs_leased ON underway_jobs (lease_until) WHERE status IN ('running', 'waiting');
CREATE INDEX underway_jobs_cancelling ON underway_jobs (worker_id) WHERE cancel_requested;
-- Pruning finished jobs, throughput.
CREATE INDEX underway_jobs_finished ON underway_jobs (finished_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled');
-- Listing, newest first, by status or queue.
CREATE INDEX underway_jobs_by_status ON underway_jobs (status, id);
CREATE INDEX underway_jobs_by_queue ON underway_jobs (queue, id);

-- id is the feed position. Every transaction that appends events takes the feed lock just
-- before it inserts them and holds it until it commits, so ids follow commit order.
CREATE TABLE underway_events (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id  text NOT NULL,
    seq     integer NOT NULL,
    type    text NOT NULL,
    at      double precision NOT NULL,
    data    json NOT NULL,
    UNIQUE (job_id, seq)
);

CREATE TABLE underway_workers (
    id          text PRIMARY KEY,
    host        text NOT NULL,
    pid         integer NOT NULL,
    queues      json NOT NULL,
    concurrency integer NOT NULL,
    running     integer NOT NULL DEFAULT 0,
    started_at  double precision NOT NULL,
    last_seen   double precision NOT NULL
);

-- Batches, queue controls, per-key limits and idempotency keys.
CREATE INDEX underway_jobs_by_batch ON underway_jobs (batch_id, status) WHERE batch_id IS NOT NULL;
CREATE INDEX underway_jobs_limited ON underway_jobs (limit_key)
    WHERE status = 'running' AND limit_key IS NOT NULL;
-- Unique per owner (since 0003): no owner counts as the owner ''.
CREATE UNIQUE INDEX underway_jobs_idempotency ON underway_jobs ((COALESCE(owner, '')), idempotency_key)
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

-- API keys, signing secrets, and listing by owner (jobs without an owner are not indexed).
CREATE TABLE underway_api_keys (
    id          text PRIMARY KEY,
    owner       text NOT NULL,
    role        text NOT NULL CHECK (role IN ('user', 'admin')),
    digest      text NOT NULL,
    created_at  double precision NOT NULL,
    revoked_at  double precision
);

CREATE TABLE underway_secrets (
    name        text PRIMARY KEY,
    value       text NOT NULL,
    updated_at  double precision NOT NULL
);

CREATE INDEX underway_jobs_by_owner ON underway_jobs (owner, id) WHERE owner IS NOT NULL;
CREATE INDEX underway_batches_by_owner ON underway_batches (owner, id) WHERE owner IS NOT NULL;
