-- Named statements of the PostgreSQL store. Each block starts with "-- name: <name>".
-- Parameters are psycopg's %(name)s; JSON values arrive as text and are cast.

-- name: insert_jobs
INSERT INTO underway_jobs (id, queue, task, args, status, priority, run_at, max_attempts, timeout,
                           owner, labels, created_at, updated_at, last_seq)
SELECT id, queue, task, args::json, 'queued', priority, run_at, max_attempts, timeout, owner,
       labels::jsonb, %(now)s, %(now)s, 1
FROM unnest(%(ids)s::text[], %(queues)s::text[], %(tasks)s::text[], %(args)s::text[],
            %(priorities)s::integer[], %(run_ats)s::double precision[], %(max_attempts)s::integer[],
            %(timeouts)s::double precision[], %(owners)s::text[], %(labels)s::text[])
     AS new (id, queue, task, args, priority, run_at, max_attempts, timeout, owner, labels);

-- name: insert_events
INSERT INTO underway_events (job_id, seq, type, at, data)
SELECT job_id, seq, type, %(now)s, data::json
FROM unnest(%(job_ids)s::text[], %(seqs)s::integer[], %(types)s::text[], %(data)s::text[])
     AS new (job_id, seq, type, data);

-- name: feed_lock
-- Held from here to the commit: event ids are handed out in commit order (see the schema).
SELECT pg_advisory_xact_lock(%(key)s);

-- name: notify
SELECT pg_notify(%(channel)s, %(payload)s);

-- name: claim_any
-- The candidates are chosen and locked in a materialized CTE, so the planner cannot run the
-- LIMIT more than once; SKIP LOCKED lets concurrent claims pass each other.
WITH chosen AS MATERIALIZED (
    SELECT id FROM underway_jobs
    WHERE status = 'queued' AND run_at <= %(now)s
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE underway_jobs AS j
SET status = 'running', attempt = j.attempt + 1, lease_until = %(lease_until)s,
    worker_id = %(worker_id)s, started_at = %(now)s, updated_at = %(now)s, last_seq = j.last_seq + 1
FROM chosen
WHERE j.id = chosen.id
RETURNING j.*;

-- name: claim_queues
-- The best due jobs of each queue (each an index range scan), then the best of those.
WITH locked AS MATERIALIZED (
    SELECT c.id, c.priority, c.run_at
    FROM unnest(%(queues)s::text[]) AS q (name)
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at FROM underway_jobs
        WHERE status = 'queued' AND queue = q.name AND run_at <= %(now)s
        ORDER BY priority DESC, run_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS c
), chosen AS MATERIALIZED (
    SELECT id FROM locked ORDER BY priority DESC, run_at, id LIMIT %(limit)s
)
UPDATE underway_jobs AS j
SET status = 'running', attempt = j.attempt + 1, lease_until = %(lease_until)s,
    worker_id = %(worker_id)s, started_at = %(now)s, updated_at = %(now)s, last_seq = j.last_seq + 1
FROM chosen
WHERE j.id = chosen.id
RETURNING j.*;

-- name: next_run_at_any
SELECT min(run_at) FROM underway_jobs WHERE status = 'queued';

-- name: next_run_at_queues
SELECT min(first.run_at)
FROM unnest(%(queues)s::text[]) AS q (name)
CROSS JOIN LATERAL (
    SELECT run_at FROM underway_jobs
    WHERE status = 'queued' AND queue = q.name
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
    result = NULL, error = NULL, prompt = NULL, finished_at = NULL, lease_until = NULL,
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

-- name: feed
SELECT * FROM underway_events WHERE id > %(after)s ORDER BY id LIMIT %(limit)s;

-- name: feed_position
SELECT coalesce(max(id), 0) AS position FROM underway_events;

-- name: expired_leases
SELECT id, attempt, max_attempts, cancel_requested FROM underway_jobs
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
