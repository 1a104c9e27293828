-- Accounts, keys, databases, collaborators.

CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    username    text NOT NULL,
    is_admin    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

CREATE TABLE service_accounts (
    id          bigserial PRIMARY KEY,
    owner_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, name)
);

CREATE TABLE api_keys (
    id                  text PRIMARY KEY,
    user_id             bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service_account_id  bigint REFERENCES service_accounts (id) ON DELETE CASCADE,
    name                text,
    prefix              text NOT NULL,
    secret_hash         bytea NOT NULL UNIQUE,
    scope               text NOT NULL CHECK (scope IN ('read', 'write')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz,
    revoked_at          timestamptz,
    last_used_at        timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id) WHERE revoked_at IS NULL;

-- Databases may live on several Postgres clusters later; today there is one.
CREATE TABLE clusters (
    id          text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO clusters (id) VALUES ('default');

CREATE TABLE databases (
    id                   bigserial PRIMARY KEY,
    owner_id             bigint NOT NULL REFERENCES users (id),
    name                 text NOT NULL,
    pg_name              text NOT NULL UNIQUE,
    cluster_id           text NOT NULL DEFAULT 'default' REFERENCES clusters (id),
    is_private           boolean NOT NULL DEFAULT true,
    storage_limit_bytes  bigint CHECK (storage_limit_bytes > 0),
    state                text NOT NULL DEFAULT 'creating'
                         CHECK (state IN ('creating', 'ready', 'deleting')),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX databases_owner_name_key ON databases (owner_id, lower(name));

CREATE TABLE collaborators (
    database_id  bigint NOT NULL REFERENCES databases (id) ON DELETE CASCADE,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role         text NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (database_id, user_id)
);
CREATE INDEX collaborators_user ON collaborators (user_id);

-- Server-wide values, such as the secret role passwords are derived from.
CREATE TABLE server_state (
    key         text PRIMARY KEY,
    value       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
