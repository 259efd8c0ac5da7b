-- API keys: the secret is shown once at creation and stored only as an argon2id hash; a key has
-- scopes and its own rate. Revoked keys are kept (revoked_at) so that the audit trail of who
-- made what stays readable.
CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,
    hash        text NOT NULL,
    scopes      text[] NOT NULL,
    rate_per_s  double precision NOT NULL CHECK (rate_per_s > 0),
    burst       integer NOT NULL CHECK (burst > 0),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- subject metadata is sealed like the templates (empty = none)
COMMENT ON COLUMN subjects.metadata IS 'sealed under the deployment key, associated data = subject';
