-- API keys, signing secrets, and listing by owner; idempotency keys are unique per owner.

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

-- Listing an owner's jobs and batches, newest first (jobs without an owner are not indexed).
CREATE INDEX jobs_by_owner ON jobs (owner, id) WHERE owner IS NOT NULL;
CREATE INDEX batches_by_owner ON batches (owner, id) WHERE owner IS NOT NULL;

-- Another owner's job with the same key is another job. No owner counts as the owner ''.
DROP INDEX jobs_idempotency;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (COALESCE(owner, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
