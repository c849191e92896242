-- Named statements of the SQLite store. Each block starts with "-- name: <name>".

-- name: insert_job
INSERT INTO jobs (id, queue, task, args, status, priority, run_at, max_attempts, timeout, owner,
                  labels, batch_id, limit_key, limit_concurrency, rate_count, rate_per,
                  idempotency_key, crash_retries, created_at, updated_at, last_seq)
VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?18, 1);

-- name: job_by_idempotency_key
-- The key is unique per owner, no owner counting as '' (the expression of jobs_idempotency).
SELECT * FROM jobs WHERE COALESCE(owner, '') = COALESCE(:owner, '') AND idempotency_key = :key;

-- name: insert_event
INSERT INTO events (job_id, seq, type, at, data) VALUES (?, ?, ?, ?, ?);

-- name: claim_candidates_any
-- INDEXED BY: without statistics the planner may pick jobs_by_status and sort every queued job.
-- Paused queues and batches, and limit keys already at their limit, are passed over.
SELECT id, priority, run_at, queue, limit_key, limit_concurrency, rate_count, rate_per
FROM jobs INDEXED BY jobs_claim_any
WHERE status = 'queued' AND run_at <= :now
  AND queue NOT IN (SELECT value FROM json_each(:skip_queues))
  AND (batch_id IS NULL OR batch_id NOT IN (SELECT id FROM batches WHERE paused = 1))
  AND (limit_key IS NULL OR limit_key NOT IN (SELECT value FROM json_each(:skip_keys)))
ORDER BY priority DESC, run_at, id
LIMIT :limit;

-- name: claim_candidates_queue
SELECT id, priority, run_at, queue, limit_key, limit_concurrency, rate_count, rate_per
FROM jobs INDEXED BY jobs_claim_queue
WHERE status = 'queued' AND queue = :queue AND run_at <= :now
  AND (batch_id IS NULL OR batch_id NOT IN (SELECT id FROM batches WHERE paused = 1))
  AND (limit_key IS NULL OR limit_key NOT IN (SELECT value FROM json_each(:skip_keys)))
ORDER BY priority DESC, run_at, id
LIMIT :limit;

-- name: queue_controls
SELECT name, paused, concurrency FROM queues WHERE paused = 1 OR concurrency IS NOT NULL;

-- name: running_by_key
SELECT limit_key, count(*) AS n, max(limit_concurrency) AS most FROM jobs INDEXED BY jobs_limited
WHERE status = 'running' AND limit_key IS NOT NULL
GROUP BY limit_key;

-- name: started_by_key
SELECT limit_key, count(*) AS n, max(rate_count) AS most FROM starts
WHERE at > :now - rate_per
GROUP BY limit_key;

-- name: running_by_queue
SELECT queue, count(*) AS n FROM jobs INDEXED BY jobs_by_status
WHERE status = 'running'
GROUP BY queue;

-- name: insert_start
INSERT INTO starts (limit_key, at, rate_count, rate_per) VALUES (?, ?, ?, ?);

-- name: forget_starts
DELETE FROM starts WHERE at < ?;

-- name: next_run_at_any
-- Jobs of paused queues and batches do not count: nothing may start them.
SELECT run_at FROM jobs INDEXED BY jobs_due
WHERE status = 'queued'
  AND queue NOT IN (SELECT name FROM queues WHERE paused = 1)
  AND (batch_id IS NULL OR batch_id NOT IN (SELECT id FROM batches WHERE paused = 1))
ORDER BY run_at
LIMIT 1;

-- name: next_run_at_queues
SELECT run_at FROM jobs INDEXED BY jobs_due
WHERE status = 'queued' AND queue IN (SELECT value FROM json_each(?))
  AND queue NOT IN (SELECT name FROM queues WHERE paused = 1)
  AND (batch_id IS NULL OR batch_id NOT IN (SELECT id FROM batches WHERE paused = 1))
ORDER BY run_at
LIMIT 1;

-- name: claim
UPDATE jobs
SET status = 'running', attempt = attempt + 1, lease_until = :lease_until, worker_id = :worker_id,
    started_at = :now, updated_at = :now, last_seq = last_seq + 1
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'queued'
RETURNING *;

-- name: extend_lease
UPDATE jobs SET lease_until = ?
WHERE id = ? AND attempt = ? AND status IN ('running', 'waiting')
RETURNING id, cancel_requested;

-- name: cancelling
SELECT id FROM jobs WHERE worker_id = ? AND cancel_requested = 1 AND status IN ('running', 'waiting');

-- name: upsert_worker
INSERT INTO workers (id, host, pid, queues, concurrency, running, started_at, last_seen)
VALUES (:id, :host, :pid, :queues, :concurrency, :running, :started_at, :last_seen)
ON CONFLICT (id) DO UPDATE SET running = excluded.running, last_seen = excluded.last_seen;

-- name: remove_worker
DELETE FROM workers WHERE id = ?;

-- name: workers
SELECT * FROM workers WHERE last_seen >= ? ORDER BY started_at;

-- name: forget_workers
DELETE FROM workers WHERE last_seen < ?;

-- name: fenced_touch
-- The fenced writes of many jobs at once. :writes is a JSON array with one array per job:
-- [id, attempt, events, progress, set_checkpoint, checkpoint, result, error, prompt, run_at,
--  hand_back, crash], JSON values (progress, checkpoint…) given as strings holding their JSON text.
-- A job named twice would be updated once: the caller writes such a job in two statements.
-- "+jobs.status": not by the status index (the planner's pick: every running job scanned per
-- write), but one primary key lookup per write.
UPDATE jobs
SET last_seq = jobs.last_seq + w.events, updated_at = :now,
    progress = coalesce(w.progress, jobs.progress),
    checkpoint = CASE WHEN w.set_checkpoint THEN w.checkpoint ELSE jobs.checkpoint END
FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS attempt,
             json_extract(value, '$[2]') AS events, json_extract(value, '$[3]') AS progress,
             json_extract(value, '$[4]') AS set_checkpoint, json_extract(value, '$[5]') AS checkpoint
      FROM json_each(:writes)) AS w
WHERE jobs.id = w.id AND jobs.attempt = w.attempt AND +jobs.status IN ('running', 'waiting')
RETURNING jobs.id, jobs.last_seq;

-- name: fenced_move
-- fenced_touch's writes, moving each job to :status.
-- {sources}: the statuses the target may be reached from, filled in from the transition table
-- (a literal list: json_each here tripled the cost of the statement).
UPDATE jobs
SET status = :status, last_seq = jobs.last_seq + w.events, updated_at = :now,
    progress = coalesce(w.progress, jobs.progress),
    checkpoint = CASE WHEN w.set_checkpoint THEN w.checkpoint ELSE jobs.checkpoint END,
    result = w.result, prompt = w.prompt,
    error = CASE WHEN :status = 'succeeded' THEN NULL ELSE coalesce(w.error, jobs.error) END,
    run_at = coalesce(w.run_at, jobs.run_at),
    max_attempts = jobs.max_attempts + w.hand_back,
    crashes = jobs.crashes + w.crash,
    lease_until = CASE WHEN :status IN ('running', 'waiting') THEN jobs.lease_until END,
    worker_id = CASE WHEN :status IN ('running', 'waiting') THEN jobs.worker_id END,
    finished_at = CASE WHEN :status IN ('succeeded', 'failed', 'cancelled') THEN :now END,
    cancel_requested = CASE WHEN :status = 'queued' THEN 0 ELSE jobs.cancel_requested END,
    cancel_requested_at = CASE WHEN :status = 'queued' THEN NULL ELSE jobs.cancel_requested_at END
FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS attempt,
             json_extract(value, '$[2]') AS events, json_extract(value, '$[3]') AS progress,
             json_extract(value, '$[4]') AS set_checkpoint, json_extract(value, '$[5]') AS checkpoint,
             json_extract(value, '$[6]') AS result, json_extract(value, '$[7]') AS error,
             json_extract(value, '$[8]') AS prompt, json_extract(value, '$[9]') AS run_at,
             json_extract(value, '$[10]') AS hand_back, json_extract(value, '$[11]') AS crash
      FROM json_each(:writes)) AS w
WHERE jobs.id = w.id AND jobs.attempt = w.attempt AND +jobs.status IN ({sources})
RETURNING jobs.id, jobs.last_seq;

-- name: cancel_requested
SELECT cancel_requested FROM jobs WHERE id = ? AND attempt = ?;

-- name: get_job
SELECT * FROM jobs WHERE id = ?;

-- name: cancel_queued
UPDATE jobs
SET status = 'cancelled', finished_at = :now, updated_at = :now, last_seq = last_seq + 1
WHERE id = :id AND status = 'queued'
RETURNING *;

-- name: request_cancel
UPDATE jobs
SET cancel_requested = 1, cancel_requested_at = :now, updated_at = :now, last_seq = last_seq + 1
WHERE id = :id AND status IN ('running', 'waiting') AND cancel_requested = 0
RETURNING *;

-- name: answer
UPDATE jobs
SET status = 'running', prompt = NULL, answers = :answers, updated_at = :now,
    last_seq = last_seq + 2
WHERE id = :id AND status = 'waiting' AND json_extract(prompt, '$.key') = :key
RETURNING *;

-- name: retry
UPDATE jobs
SET status = 'queued', run_at = :now, updated_at = :now, max_attempts = :max_attempts, crashes = 0,
    result = NULL, error = NULL, prompt = NULL, finished_at = NULL, lease_until = NULL,
    worker_id = NULL, cancel_requested = 0, cancel_requested_at = NULL,
    last_seq = last_seq + 1
WHERE id = :id AND status IN ('succeeded', 'failed', 'cancelled')
RETURNING *;

-- name: delete_job
DELETE FROM jobs WHERE id = ? AND status IN ('succeeded', 'failed', 'cancelled') RETURNING id;

-- name: delete_events
DELETE FROM events WHERE job_id = ?;

-- name: events_after
SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?;

-- name: events_after_types
SELECT * FROM events
WHERE job_id = ? AND seq > ? AND type IN (SELECT value FROM json_each(?))
ORDER BY seq LIMIT ?;

-- name: log_lines
SELECT count(*) FROM events WHERE job_id = ? AND type = 'log';

-- name: feed
SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?;

-- name: feed_position
SELECT coalesce(max(id), 0) FROM events;

-- name: expired_leases
SELECT id, attempt, crashes, crash_retries, cancel_requested FROM jobs
WHERE status IN ('running', 'waiting') AND lease_until < ?;

-- name: overdue_cancels
SELECT id, attempt FROM jobs
WHERE cancel_requested = 1 AND status IN ('running', 'waiting') AND cancel_requested_at < ?;

-- name: prunable
SELECT id FROM jobs
WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at < ?
LIMIT ?;

-- name: stats
SELECT queue, status, count(*) AS n FROM jobs GROUP BY queue, status;

-- name: finished_since
SELECT queue, status, count(*) AS n, count(started_at) AS ran,
       coalesce(sum(finished_at - started_at), 0.0) AS busy,
       coalesce(max(finished_at - started_at), 0.0) AS longest
FROM jobs INDEXED BY jobs_finished
WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at >= :since
GROUP BY queue, status;

-- name: finished_since_of_owner
SELECT queue, status, count(*) AS n, count(started_at) AS ran,
       coalesce(sum(finished_at - started_at), 0.0) AS busy,
       coalesce(max(finished_at - started_at), 0.0) AS longest
FROM jobs INDEXED BY jobs_finished
WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at >= :since AND owner = :owner
GROUP BY queue, status;

-- name: finished_stats
-- Per bucket of :bucket seconds from :since (:count of them): jobs by final status, and the
-- nearest-rank percentiles of their latency (the ceil(p * n)-th smallest: rn - 1 < p * n <= rn).
WITH ended AS (
    SELECT CAST((finished_at - :since) / :bucket AS INTEGER) AS bucket, status,
           finished_at - created_at AS latency
    FROM jobs INDEXED BY jobs_finished
    WHERE status IN ('succeeded', 'failed', 'cancelled')
      AND finished_at >= :since AND finished_at < :since + :count * :bucket
      AND (:owner IS NULL OR owner = :owner)
), ranked AS (
    SELECT bucket, status, latency,
           row_number() OVER (PARTITION BY bucket ORDER BY latency) AS rn,
           count(*) OVER (PARTITION BY bucket) AS n
    FROM ended
)
SELECT bucket,
       sum(status = 'succeeded') AS succeeded, sum(status = 'failed') AS failed,
       sum(status = 'cancelled') AS cancelled,
       max(CASE WHEN rn - 1 < 0.5 * n AND 0.5 * n <= rn THEN latency END) AS p50,
       max(CASE WHEN rn - 1 < 0.9 * n AND 0.9 * n <= rn THEN latency END) AS p90,
       max(CASE WHEN rn - 1 < 0.99 * n AND 0.99 * n <= rn THEN latency END) AS p99
FROM ranked
GROUP BY bucket
ORDER BY bucket;

-- name: insert_batch
INSERT INTO batches (id, name, task, queue, owner, labels, total, created_at, updated_at)
VALUES (:id, :name, :task, :queue, :owner, :labels, :total, :now, :now);

-- name: get_batch
SELECT * FROM batches WHERE id = ?;

-- name: batch_counts
SELECT status, count(*) AS n, min(started_at) AS started, max(finished_at) AS ended
FROM jobs INDEXED BY jobs_by_batch
WHERE batch_id = ?
GROUP BY status;

-- name: list_batches
SELECT * FROM batches WHERE id < :before ORDER BY id DESC LIMIT :limit;

-- name: list_batches_of_owner
SELECT * FROM batches WHERE owner = :owner AND id < :before ORDER BY id DESC LIMIT :limit;

-- name: pause_batch
UPDATE batches SET paused = :paused, updated_at = :now WHERE id = :id RETURNING *;

-- name: cancel_batch
UPDATE batches SET cancelled = 1, paused = 0, updated_at = :now WHERE id = :id RETURNING *;

-- name: reopen_batch
UPDATE batches SET cancelled = 0, updated_at = :now WHERE id = :id;

-- name: retry_extra
UPDATE jobs
SET status = 'queued', run_at = :now, updated_at = :now, max_attempts = attempt + :extra, crashes = 0,
    result = NULL, error = NULL, prompt = NULL, finished_at = NULL, lease_until = NULL,
    worker_id = NULL, cancel_requested = 0, cancel_requested_at = NULL,
    last_seq = last_seq + 1
WHERE id = :id AND status IN ('succeeded', 'failed', 'cancelled')
RETURNING *;

-- name: oldest_due
SELECT queue, min(run_at) AS oldest FROM jobs INDEXED BY jobs_due
WHERE status = 'queued' AND run_at <= ?
GROUP BY queue;

-- name: stats_of_owner
SELECT queue, status, count(*) AS n FROM jobs WHERE owner = ? GROUP BY queue, status;

-- name: oldest_due_of_owner
SELECT queue, min(run_at) AS oldest FROM jobs
WHERE status = 'queued' AND run_at <= :now AND owner = :owner
GROUP BY queue;

-- name: all_queue_controls
SELECT name, paused, concurrency FROM queues;

-- name: set_queue
INSERT INTO queues (name, paused, concurrency, updated_at)
VALUES (:name, coalesce(:paused, 0), :concurrency, :now)
ON CONFLICT (name) DO UPDATE SET
    paused = coalesce(:paused, paused),
    concurrency = CASE WHEN :set_concurrency THEN :concurrency ELSE concurrency END,
    updated_at = :now;

-- name: prune_batches
DELETE FROM batches
WHERE id IN (
    SELECT id FROM batches
    WHERE updated_at < :before
      AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.batch_id = batches.id)
    LIMIT :limit
);


-- name: insert_api_key
INSERT INTO api_keys (id, owner, role, digest, created_at, revoked_at)
VALUES (:id, :owner, :role, :digest, :created_at, :revoked_at);

-- name: get_api_key
SELECT * FROM api_keys WHERE id = ?;

-- name: api_keys
SELECT * FROM api_keys ORDER BY created_at, id;

-- name: revoke_api_key
-- A key revoked before keeps the time it was first revoked.
UPDATE api_keys SET revoked_at = coalesce(revoked_at, :at) WHERE id = :id RETURNING *;

-- name: revoked_api_keys
-- Of the ids in the JSON array, those that are revoked or unknown.
SELECT value AS id FROM json_each(?)
WHERE NOT EXISTS (SELECT 1 FROM api_keys WHERE api_keys.id = value AND revoked_at IS NULL);

-- name: has_api_keys
SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL);

-- name: get_secret
SELECT value FROM secrets WHERE name = ?;

-- name: add_secret
-- The first value stored under a name stays: a store that lost the race reads it back.
INSERT INTO secrets (name, value, updated_at) VALUES (:name, :value, :now)
ON CONFLICT (name) DO NOTHING;

-- name: set_secret
INSERT INTO secrets (name, value, updated_at) VALUES (:name, :value, :now)
ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at;
