-- Anonymous identities (server/modules/identities.py): a client without an account that
-- connects to a public database with a module gets an identity and a token. Only the
-- token's SHA-256 is kept; the token also carries an HMAC signature of the server secret.
-- A revoked identity's row stays (revoked_at) so its token is told apart from an unknown
-- one; the database's owner turns anonymous access off with databases.anonymous_access.
ALTER TABLE databases ADD COLUMN anonymous_access boolean NOT NULL DEFAULT true;

CREATE TABLE anonymous_identities (
    identity     text PRIMARY KEY CHECK (identity ~ '^[0-9a-f]{64}$'),
    database_id  bigint NOT NULL REFERENCES databases (id) ON DELETE CASCADE,
    token_hash   bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX anonymous_identities_database ON anonymous_identities (database_id, created_at);

-- a revocation reaches every replica's caches and live sockets at once
CREATE TRIGGER anonymous_identities_auth_delete AFTER DELETE OR TRUNCATE ON anonymous_identities
    FOR EACH STATEMENT EXECUTE FUNCTION millpond_notify_auth();
CREATE TRIGGER anonymous_identities_auth_update AFTER UPDATE ON anonymous_identities
    FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at)
    EXECUTE FUNCTION millpond_notify_auth();

-- Login providers a database's module accepts tokens of (server/modules/issuers.py):
-- an end user with such a token is the identity sha256(issuer, subject).
CREATE TABLE module_token_issuers (
    database_id     bigint NOT NULL REFERENCES databases (id) ON DELETE CASCADE,
    issuer          text NOT NULL,
    audiences       text[] NOT NULL,
    jwks_uri        text,
    jwks            jsonb,
    required_claims jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (database_id, issuer)
);
CREATE TRIGGER module_token_issuers_auth_change
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON module_token_issuers
    FOR EACH STATEMENT EXECUTE FUNCTION millpond_notify_auth();

-- The servers running modules (server/modules/lifecycle.py): each says it is alive here;
-- the realtime connections of one not heard from for module_replica_timeout_s get their
-- client_disconnected from another.
CREATE TABLE module_replicas (
    id         text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()
);
