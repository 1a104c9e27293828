-- Web console sessions (server/console/sessions.py). The cookie holds a random session id;
-- only its SHA-256 is stored. A session lives until ``expires_at`` (absolute: login time
-- plus ``console_session_ttl_s``), its ``revoked_at`` is set (logout, "sign out
-- everywhere"), or its key is revoked, expires or is deleted, or its user is deleted.
CREATE TABLE console_sessions (
    id_hash     bytea PRIMARY KEY,
    key_id      text NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    flash       text
);
CREATE INDEX console_sessions_key ON console_sessions (key_id) WHERE revoked_at IS NULL;
CREATE INDEX console_sessions_user ON console_sessions (user_id) WHERE revoked_at IS NULL;
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
