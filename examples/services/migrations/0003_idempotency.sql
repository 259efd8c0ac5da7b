-- Idempotency keys of enrollments: a request retried with the same `Idempotency-Key` (by the same
-- caller) gets the answer of the first one instead of enrolling a second face. The row is written
-- in the enrollment's own transaction, so a key is taken exactly when its face is enrolled. Kept
-- 24 hours, and erased with its subject.
CREATE TABLE idempotency (
    principal   text NOT NULL,
    key         text NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 255),
    -- SHA-256 of what the request asked (subject, query, content type, body): the same key for
    -- a different request is refused
    fingerprint bytea NOT NULL,
    subject     text NOT NULL,
    status      integer NOT NULL,
    answer      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);
CREATE INDEX idempotency_created ON idempotency (created_at);
CREATE INDEX idempotency_subject ON idempotency (subject);
