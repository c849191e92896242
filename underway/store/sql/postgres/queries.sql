-- Named statements of the PostgreSQL store. Each block starts with "-- name: <name>".
-- Parameters are psycopg's %(name)s; JSON values arrive as text and are cast.

-- name: insert_jobs
INSERT INTO underway_jobs (id, queue, task, args, status, priority, run_at, max_attempts, timeout,
                           owner, labels, batch_id, limit_key, limit_concurrency, rate_count,
                           rate_per, idempotency_key, crash_retries, created_at, updated_at, last_seq)
SELECT id, queue, task, args::json, 'queued', priority, run_at, max_attempts, timeout, owner,
       labels::jsonb, batch_id, limit_key, limit_concurrency, rate_count, rate_per,
       idempotency_key, crash_retries, %(now)s, %(now)s, 1
FROM unnest(%(ids)s::text[], %(queues)s::text[], %(tasks)s::text[], %(args)s::text[],
            %(priorities)s::integer[], %(run_ats)s::double precision[], %(max_attempts)s::integer[],
            %(timeouts)s::double precision[], %(owners)s::text[], %(labels)s::text[],
            %(batch_ids)s::text[], %(limit_keys)s::text[], %(limit_concurrencies)s::integer[],
            %(rate_counts)s::integer[], %(rate_pers)s::double precision[],
            %(idempotency_keys)s::text[], %(crash_retries)s::integer[])
     AS new (id, queue, task, args, priority, run_at, max_attempts, timeout, owner, labels,
             batch_id, limit_key, limit_concurrency, rate_count, rate_per, idempotency_key,
             crash_retries)
ON CONFLICT ((COALESCE(owner, '')), idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: copy_jobs
-- Many jobs without idempotency keys (so nothing to conflict with): the rows of insert_jobs.
COPY underway_jobs (id, queue, task, args, status, priority, run_at, max_attempts, timeout, owner,
                    labels, batch_id, limit_key, limit_concurrency, rate_count, rate_per,
                    crash_retries, created_at, updated_at, last_seq)
FROM STDIN;

-- name: job_by_idempotency_keys
-- The jobs stored under these (owner, key) pairs, no owner being '' as in the unique index.
SELECT j.* FROM unnest(%(owners)s::text[], %(keys)s::text[]) AS k (owner, key)
JOIN underway_jobs AS j ON COALESCE(j.owner, '') = k.owner AND j.idempotency_key = k.key
WHERE j.idempotency_key IS NOT NULL;

-- name: insert_events
INSERT INTO underway_events (job_id, seq, type, at, data)
SELECT job_id, seq, type, %(now)s, data::json
FROM unnest(%(job_ids)s::text[], %(seqs)s::integer[], %(types)s::text[], %(data)s::text[])
     AS new (job_id, seq, type, data);

-- name: copy_events
-- Many events (from COPY_FROM on): the rows of insert_events.
COPY underway_events (job_id, seq, type, at, data) FROM STDIN;

-- name: feed_lock
-- Held from here to the commit: event ids are handed out in commit order (see the schema).
SELECT pg_advisory_xact_lock(%(key)s);

-- name: notify
SELECT pg_notify(%(channel)s, %(payload)s);

-- name: claim_candidates_any
-- Chosen and locked in a materialized CTE, so the planner cannot run the LIMIT more than once;
-- SKIP LOCKED lets concurrent claims pass each other. Paused queues and batches, and limit
-- keys at their limit, are passed over.
WITH chosen AS MATERIALIZED (
    SELECT id, priority, run_at, queue, limit_key, limit_concurrency, rate_count, rate_per
    FROM underway_jobs
    WHERE status = 'queued' AND run_at <= %(now)s
      AND queue <> ALL(%(skip_queues)s::text[])
      AND (batch_id IS NULL OR batch_id NOT IN (SELECT id FROM underway_batches WHERE paused))
      AND (limit_key IS NULL OR limit_key <> ALL(%(skip_keys)s::text[]))
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
SELECT * FROM chosen;

-- name: claim_candidates_queue
-- One queue: a range scan of its claim index, in order.
WITH chosen AS MATERIALIZED (
    SELECT id, priority, run_at, queue, limit_key, limit_concurrency, rate_count, rate_per
    FROM underway_jobs
    WHERE status = 'queued' AND queue = %(queue)s AND run_at <= %(now)s
      AND (batch_id IS NULL OR batch_id NOT IN (SELECT id FROM underway_batches WHERE paused))
      AND (limit_key IS NULL OR limit_key <> ALL(%(skip_keys)s::text[]))
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
SELECT * FROM chosen;

-- name: claim_candidates_queues
-- Several queues: one ordered scan that passes the other queues' jobs over. (Locking the best
-- of each queue and keeping the best of those would lock rows it then leaves, which concurrent
-- claims would skip until it commits.)
WITH chosen AS MATERIALIZED (
    SELECT id, priority, run_at, queue, limit_key, limit_concurrency, rate_count, rate_per
    FROM underway_jobs
    WHERE status = 'queued' AND queue = ANY(%(queues)s::text[]) AND run_at <= %(now)s
      AND (batch_id IS NULL OR batch_id NOT IN (SELECT id FROM underway_batches WHERE paused))
      AND (limit_key IS NULL OR limit_key <> ALL(%(skip_keys)s::text[]))
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
SELECT * FROM chosen;

-- name: claim
UPDATE underway_jobs
SET status = 'running', attempt = attempt + 1, lease_until = %(lease_until)s,
    worker_id = %(worker_id)s, started_at = %(now)s, updated_at = %(now)s, last_seq = last_seq + 1
WHERE id = ANY(%(ids)s::text[])
RETURNING *;

-- name: limit_lock
-- Claims that may start jobs of the same limit key (or limited queue) take turns from here to
-- their commit, so that two of them cannot both count a free slot.
SELECT pg_advisory_xact_lock(k) FROM unnest(%(keys)s::bigint[]) AS k ORDER BY k;

-- name: queue_controls
SELECT name, paused, concurrency FROM underway_queues WHERE paused OR concurrency IS NOT NULL;

-- name: running_by_key
SELECT limit_key, count(*) AS n, max(limit_concurrency) AS most FROM underway_jobs
WHERE status = 'running' AND limit_key IS NOT NULL
GROUP BY limit_key;

-- name: started_by_key
SELECT limit_key, count(*) AS n, max(rate_count) AS most FROM underway_starts
WHERE at > %(now)s - rate_per
GROUP BY limit_key;

-- name: running_by_queue
SELECT queue, count(*) AS n FROM underway_jobs WHERE status = 'running' GROUP BY queue;

-- name: insert_starts
INSERT INTO underway_starts (limit_key, at, rate_count, rate_per)
SELECT key, %(now)s, count, per
FROM unnest(%(keys)s::text[], %(counts)s::integer[], %(pers)s::double precision[]) AS s (key, count, per);

-- name: forget_starts
DELETE FROM underway_starts WHERE at < %(before)s;

-- name: next_run_at_any
-- Jobs of paused queues and batches do not count: nothing may start them.
SELECT min(run_at) FROM underway_jobs
WHERE status = 'queued'
  AND queue NOT IN (SELECT name FROM underway_queues WHERE paused)
  AND (batch_id IS NULL OR batch_id NOT IN (SELECT id FROM underway_batches WHERE paused));

-- name: next_run_at_queues
SELECT min(first.run_at)
FROM unnest(%(queues)s::text[]) AS q (name)
CROSS JOIN LATERAL (
    SELECT run_at FROM underway_jobs
    WHERE status = 'queued' AND queue = q.name
      AND queue NOT IN (SELECT name FROM underway_queues WHERE paused)
      AND (batch_id IS NULL OR batch_id NOT IN (SELECT id FROM underway_batches WHERE paused))
    ORDER BY run_at
    LIMIT 1
) AS first;

-- name: extend_leases
UPDATE underway_jobs AS j SET lease_until = %(lease_until)s
FROM unnest(%(ids)s::text[], %(attempts)s::integer[]) AS held (id, attempt)
WHERE j.id = held.id AND j.attempt = held.attempt AND j.status IN ('running', 'waiting')
RETURNING j.id, j.cancel_requested;

-- name: cancelling
SELECT id FROM underway_jobs
WHERE worker_id = %(worker_id)s AND cancel_requested AND status IN ('running', 'waiting');

-- name: upsert_worker
INSERT INTO underway_workers (id, host, pid, queues, concurrency, running, started_at, last_seen)
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s::json, %(concurrency)s, %(running)s, %(started_at)s,
        %(last_seen)s)
ON CONFLICT (id) DO UPDATE SET running = excluded.running, last_seen = excluded.last_seen;

-- name: remove_worker
DELETE FROM underway_workers WHERE id = %(id)s;

-- name: workers
SELECT * FROM underway_workers WHERE last_seen >= %(since)s ORDER BY started_at;

-- name: forget_workers
DELETE FROM underway_workers WHERE last_seen < %(before)s;

-- name: fenced_touch
UPDATE underway_jobs
SET last_seq = last_seq + %(events)s, updated_at = %(now)s,
    progress = coalesce(%(progress)s::json, progress),
    checkpoint = CASE WHEN %(set_checkpoint)s THEN %(checkpoint)s::json ELSE checkpoint END
WHERE id = %(id)s AND attempt = %(attempt)s AND status IN ('running', 'waiting')
RETURNING last_seq;

-- name: fenced_move
-- {sources}: the statuses the target may be reached from, filled in from the transition table.
UPDATE underway_jobs
SET status = %(status)s, last_seq = last_seq + %(events)s, updated_at = %(now)s,
    progress = coalesce(%(progress)s::json, progress),
    checkpoint = CASE WHEN %(set_checkpoint)s THEN %(checkpoint)s::json ELSE checkpoint END,
    result = %(result)s::json, prompt = %(prompt)s::json,
    error = CASE WHEN %(status)s = 'succeeded' THEN NULL ELSE coalesce(%(error)s::json, error) END,
    run_at = coalesce(%(run_at)s::double precision, run_at),
    max_attempts = max_attempts + %(hand_back)s,
    crashes = crashes + %(crash)s,
    lease_until = CASE WHEN %(status)s IN ('running', 'waiting') THEN lease_until END,
    worker_id = CASE WHEN %(status)s IN ('running', 'waiting') THEN worker_id END,
    finished_at = CASE WHEN %(status)s IN ('succeeded', 'failed', 'cancelled') THEN %(now)s::double precision END,
    cancel_requested = CASE WHEN %(status)s = 'queued' THEN false ELSE cancel_requested END,
    cancel_requested_at = CASE WHEN %(status)s = 'queued' THEN NULL ELSE cancel_requested_at END
WHERE id = %(id)s AND attempt = %(attempt)s AND status IN ({sources})
RETURNING last_seq;

-- name: cancel_requested
SELECT cancel_requested FROM underway_jobs WHERE id = %(id)s AND attempt = %(attempt)s;

-- name: get_job
SELECT * FROM underway_jobs WHERE id = %(id)s;

-- name: get_job_for_update
SELECT * FROM underway_jobs WHERE id = %(id)s FOR UPDATE;

-- name: cancel
-- {where}: the filter. One statement, so it is atomic against claims: a queued job a claim has
-- locked is seen again once the claim commits, now running, and is asked to stop instead.
UPDATE underway_jobs
SET status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
    finished_at = CASE WHEN status = 'queued' THEN %(now)s ELSE finished_at END,
    cancel_requested = status <> 'queued',
    cancel_requested_at = CASE WHEN status = 'queued' THEN NULL ELSE %(now)s END,
    updated_at = %(now)s, last_seq = last_seq + 1
WHERE {where}
  AND (status = 'queued' OR (status IN ('running', 'waiting') AND NOT cancel_requested))
RETURNING *;

-- name: answer
UPDATE underway_jobs
SET status = 'running', prompt = NULL, answers = %(answers)s::json, updated_at = %(now)s,
    last_seq = last_seq + 2
WHERE id = %(id)s AND status = 'waiting'
RETURNING *;

-- name: retry
UPDATE underway_jobs
SET status = 'queued', run_at = %(now)s, updated_at = %(now)s, max_attempts = %(max_attempts)s,
    crashes = 0, result = NULL, error = NULL, prompt = NULL, finished_at = NULL, lease_until = NULL,
    worker_id = NULL, cancel_requested = false, cancel_requested_at = NULL,
    last_seq = last_seq + 1
WHERE id = %(id)s AND status IN ('succeeded', 'failed', 'cancelled')
RETURNING *;

-- name: delete_job
DELETE FROM underway_jobs
WHERE id = %(id)s AND status IN ('succeeded', 'failed', 'cancelled')
RETURNING id;

-- name: delete_events
DELETE FROM underway_events WHERE job_id = ANY(%(ids)s::text[]);

-- name: events_after
SELECT * FROM underway_events
WHERE job_id = %(job_id)s AND seq > %(after)s
ORDER BY seq
LIMIT %(limit)s;

-- name: events_after_types
SELECT * FROM underway_events
WHERE job_id = %(job_id)s AND seq > %(after)s AND type = ANY(%(types)s::text[])
ORDER BY seq
LIMIT %(limit)s;

-- name: log_lines
SELECT count(*) AS n FROM underway_events WHERE job_id = %(job_id)s AND type = 'log';

-- name: feed
SELECT * FROM underway_events WHERE id > %(after)s ORDER BY id LIMIT %(limit)s;

-- name: feed_position
SELECT coalesce(max(id), 0) AS position FROM underway_events;

-- name: expired_leases
SELECT id, attempt, crashes, crash_retries, cancel_requested FROM underway_jobs
WHERE status IN ('running', 'waiting') AND lease_until < %(now)s
ORDER BY id;

-- name: overdue_cancels
SELECT id, attempt FROM underway_jobs
WHERE cancel_requested AND status IN ('running', 'waiting') AND cancel_requested_at < %(before)s
ORDER BY id;

-- name: prune
DELETE FROM underway_jobs
WHERE id IN (
    SELECT id FROM underway_jobs
    WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at < %(before)s
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id;

-- name: stats
SELECT queue, status, count(*) AS n FROM underway_jobs GROUP BY queue, status;

-- name: finished_since
SELECT queue, status, count(*) AS n, count(started_at) AS ran,
       coalesce(sum(finished_at - started_at), 0.0) AS busy,
       coalesce(max(finished_at - started_at), 0.0) AS longest
FROM underway_jobs
WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at >= %(since)s
GROUP BY queue, status;

-- name: finished_since_of_owner
SELECT queue, status, count(*) AS n, count(started_at) AS ran,
       coalesce(sum(finished_at - started_at), 0.0) AS busy,
       coalesce(max(finished_at - started_at), 0.0) AS longest
FROM underway_jobs
WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at >= %(since)s
  AND owner = %(owner)s
GROUP BY queue, status;

-- name: finished_stats
-- Per bucket (of "bucket" seconds from "since", "count" of them): jobs by final status, and the
-- nearest-rank percentiles of their latency (percentile_disc: the ceil(p * n)-th smallest).
SELECT bucket, succeeded, failed, cancelled, pct[1] AS p50, pct[2] AS p90, pct[3] AS p99
FROM (
    SELECT floor((finished_at - %(since)s) / %(bucket)s)::integer AS bucket,
           count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
           percentile_disc(ARRAY[0.5, 0.9, 0.99]::float8[])
               WITHIN GROUP (ORDER BY finished_at - created_at) AS pct
    FROM underway_jobs
    WHERE status IN ('succeeded', 'failed', 'cancelled')
      AND finished_at >= %(since)s AND finished_at < %(since)s + %(count)s * %(bucket)s
      AND (%(owner)s::text IS NULL OR owner = %(owner)s::text)
    GROUP BY 1
) AS per_bucket
ORDER BY bucket;

-- name: insert_batch
INSERT INTO underway_batches (id, name, task, queue, owner, labels, total, created_at, updated_at)
VALUES (%(id)s, %(name)s, %(task)s, %(queue)s, %(owner)s, %(labels)s::jsonb, %(total)s, %(now)s,
        %(now)s);

-- name: get_batch
SELECT * FROM underway_batches WHERE id = %(id)s;

-- name: batch_counts
SELECT status, count(*) AS n, min(started_at) AS started, max(finished_at) AS ended
FROM underway_jobs
WHERE batch_id = %(id)s
GROUP BY status;

-- name: list_batches
SELECT * FROM underway_batches WHERE id < %(before)s ORDER BY id DESC LIMIT %(limit)s;

-- name: list_batches_of_owner
SELECT * FROM underway_batches
WHERE owner = %(owner)s AND id < %(before)s
ORDER BY id DESC
LIMIT %(limit)s;

-- name: pause_batch
UPDATE underway_batches SET paused = %(paused)s, updated_at = %(now)s WHERE id = %(id)s RETURNING id;

-- name: cancel_batch
UPDATE underway_batches SET cancelled = true, paused = false, updated_at = %(now)s
WHERE id = %(id)s
RETURNING id;

-- name: reopen_batch
UPDATE underway_batches SET cancelled = false, updated_at = %(now)s WHERE id = %(id)s;

-- name: retry_extra
-- {where}: the filter.
UPDATE underway_jobs
SET status = 'queued', run_at = %(now)s, updated_at = %(now)s,
    max_attempts = attempt + %(extra)s, crashes = 0,
    result = NULL, error = NULL, prompt = NULL, finished_at = NULL, lease_until = NULL,
    worker_id = NULL, cancel_requested = false, cancel_requested_at = NULL,
    last_seq = last_seq + 1
WHERE {where} AND status IN ('succeeded', 'failed', 'cancelled')
RETURNING *;

-- name: oldest_due
SELECT queue, min(run_at) AS oldest FROM underway_jobs
WHERE status = 'queued' AND run_at <= %(now)s
GROUP BY queue;

-- name: stats_of_owner
SELECT queue, status, count(*) AS n FROM underway_jobs WHERE owner = %(owner)s GROUP BY queue, status;

-- name: oldest_due_of_owner
SELECT queue, min(run_at) AS oldest FROM underway_jobs
WHERE status = 'queued' AND run_at <= %(now)s AND owner = %(owner)s
GROUP BY queue;

-- name: all_queue_controls
SELECT name, paused, concurrency FROM underway_queues;

-- name: set_queue
INSERT INTO underway_queues (name, paused, concurrency, updated_at)
VALUES (%(name)s, coalesce(%(paused)s::boolean, false), %(concurrency)s::integer, %(now)s)
ON CONFLICT (name) DO UPDATE SET
    paused = coalesce(%(paused)s::boolean, underway_queues.paused),
    concurrency = CASE WHEN %(set_concurrency)s THEN %(concurrency)s::integer
                       ELSE underway_queues.concurrency END,
    updated_at = %(now)s;

-- name: prune_batches
DELETE FROM underway_batches
WHERE id IN (
    SELECT id FROM underway_batches AS b
    WHERE b.updated_at < %(before)s
      AND NOT EXISTS (SELECT 1 FROM underway_jobs AS j WHERE j.batch_id = b.id)
    LIMIT %(limit)s
);


-- name: insert_api_key
INSERT INTO underway_api_keys (id, owner, role, digest, created_at, revoked_at)
VALUES (%(id)s, %(owner)s, %(role)s, %(digest)s, %(created_at)s, %(revoked_at)s);

-- name: get_api_key
SELECT * FROM underway_api_keys WHERE id = %(id)s;

-- name: api_keys
SELECT * FROM underway_api_keys ORDER BY created_at, id;

-- name: revoke_api_key
-- A key revoked before keeps the time it was first revoked.
UPDATE underway_api_keys SET revoked_at = coalesce(revoked_at, %(at)s)
WHERE id = %(id)s
RETURNING *;

-- name: revoked_api_keys
-- Of these ids, those that are revoked or unknown.
SELECT k.id FROM unnest(%(ids)s::text[]) AS k (id)
WHERE NOT EXISTS (SELECT 1 FROM underway_api_keys AS a WHERE a.id = k.id AND a.revoked_at IS NULL);

-- name: has_api_keys
SELECT EXISTS (SELECT 1 FROM underway_api_keys WHERE revoked_at IS NULL) AS found;

-- name: get_secret
SELECT value FROM underway_secrets WHERE name = %(name)s;

-- name: add_secret
-- The first value stored under a name stays: a store that lost the race reads it back (a new
-- statement, so it sees the winner's row once the winner committed).
INSERT INTO underway_secrets (name, value, updated_at) VALUES (%(name)s, %(value)s, %(now)s)
ON CONFLICT (name) DO NOTHING;

-- name: set_secret
INSERT INTO underway_secrets (name, value, updated_at) VALUES (%(name)s, %(value)s, %(now)s)
ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at;
