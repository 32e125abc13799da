-- Jobs: work accepted with 202 Accepted and done by the worker. The row is
-- the source of truth; RabbitMQ only carries the id.
CREATE TABLE jobs (
    id              uuid        PRIMARY KEY,
    kind            text        NOT NULL CHECK (char_length(kind) BETWEEN 1 AND 100),
    input           jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead_lettered')),
    -- Deliveries that reached the worker (retries and redeliveries included).
    attempts        integer     NOT NULL DEFAULT 0,
    result          jsonb,
    error           jsonb,
    -- The API key that submitted the job: only it sees the job, and its
    -- idempotency keys are its own.
    owner           uuid        NOT NULL REFERENCES api_keys (id),
    idempotency_key text        CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    -- SHA-256 of the canonical request, to tell a retry from a reuse.
    request_hash    bytea       NOT NULL CHECK (octet_length(request_hash) = 32),
    -- W3C trace context of the submitting request, carried to the worker.
    traceparent     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    UNIQUE (owner, idempotency_key)
);

-- The transactional outbox: written in the transaction that creates the
-- job, deleted by the relay once RabbitMQ has confirmed the message.
CREATE TABLE job_outbox (
    job_id          uuid        PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    -- Failed publish attempts, for the backoff.
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_outbox_due ON job_outbox (next_attempt_at);

-- One row per job effect the worker committed, written in the same
-- transaction as the effect itself. Deliberately without a unique key: the
-- worker's guard (the job row's lock and status) is what keeps effects
-- single, and this table is where a broken guard would show.
CREATE TABLE job_effects (
    job_id     uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt    integer     NOT NULL,
    worker     text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_effects_job ON job_effects (job_id);
