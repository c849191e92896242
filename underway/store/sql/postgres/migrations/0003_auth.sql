-- 0003: API keys, signing secrets, and listing by owner; idempotency keys are unique per owner.

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

-- Listing an owner's jobs and batches, newest first (jobs without an owner are not indexed).
CREATE INDEX underway_jobs_by_owner ON underway_jobs (owner, id) WHERE owner IS NOT NULL;
CREATE INDEX underway_batches_by_owner ON underway_batches (owner, id) WHERE owner IS NOT NULL;

-- Another owner's job with the same key is another job. No owner counts as the owner ''.
DROP INDEX underway_jobs_idempotency;
CREATE UNIQUE INDEX underway_jobs_idempotency ON underway_jobs ((COALESCE(owner, '')), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
