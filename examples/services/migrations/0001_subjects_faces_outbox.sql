-- Subjects, their faces (templates sealed under the deployment's key, never in the clear) and the
-- transactional outbox: an event row is written in the same transaction as the change it
-- announces, so no change is acknowledged without its event and no event is sent for a change
-- that was rolled back.
CREATE TABLE subjects (
    subject    text PRIMARY KEY CHECK (octet_length(subject) BETWEEN 1 AND 255),
    metadata   bytea NOT NULL DEFAULT '\x',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE faces (
    face_id        bigint PRIMARY KEY,
    subject        text NOT NULL REFERENCES subjects ON DELETE CASCADE,
    -- the portable template sealed (XChaCha20-Poly1305) with (subject, face_id) as associated data
    sealed         bytea NOT NULL,
    key_id         text NOT NULL,
    model_id       text NOT NULL,
    weights_sha256 text NOT NULL,
    preprocessing  integer NOT NULL,
    quality        jsonb,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE SEQUENCE faces_face_id_seq OWNED BY faces.face_id;
CREATE INDEX faces_subject ON faces (subject);

CREATE TABLE outbox (
    seq        bigserial PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('FaceEnrolled', 'FaceRemoved', 'SubjectRemoved', 'MetadataSet')),
    subject    text NOT NULL,
    face_id    bigint,
    -- FaceEnrolled: the sealed template, so that consumers need no second read
    payload    bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
