-- Named statements of the SQLite store. Each block starts with "-- name: <name>".

-- name: insert_job
INSERT INTO jobs (id, queue, task, args, status, priority, run_at, max_attempts, timeout, owner,
                  labels, created_at, updated_at, last_seq)
VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, 1);

-- name: insert_event
INSERT INTO events (job_id, seq, type, at, data) VALUES (?, ?, ?, ?, ?);

-- name: claim_candidates_any
-- INDEXED BY: without statistics the planner may pick jobs_by_status and sort every queued job.
SELECT id FROM jobs INDEXED BY jobs_claim_any
WHERE status = 'queued' AND run_at <= :now
ORDER BY priority DESC, run_at, id
LIMIT :limit;

-- name: claim_candidates_queue
SELECT id, priority, run_at FROM jobs INDEXED BY jobs_claim_queue
WHERE status = 'queued' AND queue = ? AND run_at <= ?
ORDER BY priority DESC, run_at, id
LIMIT ?;

-- name: next_run_at_any
SELECT min(run_at) FROM jobs INDEXED BY jobs_due WHERE status = 'queued';

-- name: next_run_at_queues
SELECT run_at FROM jobs INDEXED BY jobs_due
WHERE status = 'queued' AND queue IN (SELECT value FROM json_each(?))
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
UPDATE jobs
SET last_seq = last_seq + :events, updated_at = :now,
    progress = coalesce(:progress, progress),
    checkpoint = CASE WHEN :set_checkpoint THEN :checkpoint ELSE checkpoint END
WHERE id = :id AND attempt = :attempt AND status IN ('running', 'waiting')
RETURNING last_seq;

-- name: fenced_move
-- {sources}: the statuses the target may be reached from, filled in from the transition table
-- (a literal list: json_each here tripled the cost of the statement).
UPDATE jobs
SET status = :status, last_seq = last_seq + :events, updated_at = :now,
    progress = coalesce(:progress, progress),
    checkpoint = CASE WHEN :set_checkpoint THEN :checkpoint ELSE checkpoint END,
    result = :result, prompt = :prompt,
    error = CASE WHEN :status = 'succeeded' THEN NULL ELSE coalesce(:error, error) END,
    run_at = coalesce(:run_at, run_at),
    max_attempts = max_attempts + :hand_back,
    lease_until = CASE WHEN :status IN ('running', 'waiting') THEN lease_until END,
    worker_id = CASE WHEN :status IN ('running', 'waiting') THEN worker_id END,
    finished_at = CASE WHEN :status IN ('succeeded', 'failed', 'cancelled') THEN :now END,
    cancel_requested = CASE WHEN :status = 'queued' THEN 0 ELSE cancel_requested END,
    cancel_requested_at = CASE WHEN :status = 'queued' THEN NULL ELSE cancel_requested_at END
WHERE id = :id AND attempt = :attempt AND status IN ({sources})
RETURNING last_seq, attempt, cancel_requested;

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
SET status = 'queued', run_at = :now, updated_at = :now, max_attempts = :max_attempts,
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

-- name: feed
SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?;

-- name: feed_position
SELECT coalesce(max(id), 0) FROM events;

-- name: expired_leases
SELECT id, attempt, max_attempts, cancel_requested FROM jobs
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
WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at >= ?
GROUP BY queue, status;
