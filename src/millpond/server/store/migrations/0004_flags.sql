-- Feature flags and entitlements (server/flags).
--
-- Everything belongs to an environment, and an environment to one account (its owner).
-- Every configuration change runs in one transaction that first bumps its environment's
-- version (UPDATE … RETURNING: the row lock makes versions commit in order within an
-- environment, which delta sync needs) and writes an audit entry. flag_rulesets holds each
-- flag's whole FlagRuleset JSON (flag, rules, feature, plan entitlements) and the version
-- of its last change, maintained in the same transaction as every change to any part of
-- it: checks compile from it, an SDK can mirror it (SELECT * FROM flag_rulesets WHERE
-- environment_id = …), and every change of it is announced on 'millpond_flags' so each
-- replica drops its compiled rulesets at once.

CREATE TABLE flag_environments (
    id                text PRIMARY KEY,
    owner_id          bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name              text NOT NULL,
    environment_type  text NOT NULL
                      CHECK (environment_type IN ('development', 'staging', 'production')),
    version           bigint NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX flag_environments_owner_name_key ON flag_environments (owner_id, lower(name));

-- A key bound to an environment may only touch that environment's flags.
ALTER TABLE api_keys
    ADD COLUMN environment_id text REFERENCES flag_environments (id) ON DELETE CASCADE;
CREATE INDEX api_keys_environment ON api_keys (environment_id) WHERE environment_id IS NOT NULL;

CREATE TABLE flag_features (
    environment_id      text NOT NULL REFERENCES flag_environments (id) ON DELETE CASCADE,
    id                  text NOT NULL,
    name                text NOT NULL DEFAULT '',
    description         text NOT NULL DEFAULT '',
    feature_type        text NOT NULL CHECK (feature_type IN ('boolean', 'event', 'trait')),
    event_name          text,
    metric_aggregation  text NOT NULL DEFAULT 'count' CHECK (metric_aggregation IN ('count', 'sum')),
    trait_key           text,
    version             bigint NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment_id, id)
);

CREATE TABLE flags (
    id              text PRIMARY KEY,
    environment_id  text NOT NULL REFERENCES flag_environments (id) ON DELETE CASCADE,
    key             text NOT NULL,
    name            text NOT NULL DEFAULT '',
    description     text NOT NULL DEFAULT '',
    flag_type       text NOT NULL DEFAULT 'boolean' CHECK (flag_type IN ('boolean')),
    default_value   boolean NOT NULL DEFAULT false,
    feature_id      text,
    version         bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    UNIQUE (environment_id, key),
    FOREIGN KEY (environment_id, feature_id) REFERENCES flag_features (environment_id, id)
);
CREATE INDEX flags_feature ON flags (environment_id, feature_id) WHERE feature_id IS NOT NULL;
CREATE INDEX flags_version ON flags (environment_id, version);

-- A rule with its conditions and condition groups, as the Rule JSON (ids assigned).
CREATE TABLE flag_rules (
    flag_id         text NOT NULL REFERENCES flags (id) ON DELETE CASCADE,
    id              text NOT NULL,
    environment_id  text NOT NULL,
    position        integer NOT NULL,
    rule            jsonb NOT NULL,
    version         bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flag_id, id)
);
CREATE INDEX flag_rules_position ON flag_rules (flag_id, position);

CREATE TABLE flag_rulesets (
    environment_id  text NOT NULL REFERENCES flag_environments (id) ON DELETE CASCADE,
    flag_key        text NOT NULL,
    flag_id         text NOT NULL REFERENCES flags (id) ON DELETE CASCADE,
    version         bigint NOT NULL,
    deleted_at      timestamptz,
    ruleset         jsonb NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment_id, flag_key)
);
CREATE INDEX flag_rulesets_version ON flag_rulesets (environment_id, version);

CREATE TABLE flag_plans (
    environment_id  text NOT NULL REFERENCES flag_environments (id) ON DELETE CASCADE,
    id              text NOT NULL,
    name            text NOT NULL DEFAULT '',
    description     text NOT NULL DEFAULT '',
    version         bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment_id, id)
);

CREATE TABLE flag_entitlements (
    id               text PRIMARY KEY,
    environment_id   text NOT NULL,
    plan_id          text NOT NULL,
    feature_id       text NOT NULL,
    value_type       text NOT NULL CHECK (value_type IN ('boolean', 'numeric', 'unlimited', 'trait')),
    value_bool       boolean,
    value_numeric    bigint CHECK (value_numeric >= 0),
    value_trait_key  text,
    metric_period    text NOT NULL DEFAULT 'all_time'
                     CHECK (metric_period IN ('all_time', 'current_day', 'current_week', 'current_month')),
    version          bigint NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (environment_id, plan_id, feature_id),
    FOREIGN KEY (environment_id, plan_id) REFERENCES flag_plans (environment_id, id)
        ON DELETE CASCADE,
    FOREIGN KEY (environment_id, feature_id) REFERENCES flag_features (environment_id, id)
        ON DELETE CASCADE
);
CREATE INDEX flag_entitlements_feature ON flag_entitlements (environment_id, feature_id);

-- Companies and users: addressed by any of their keys (one row per key, unique per
-- environment), the keys also kept on the row as JSON for reads.
CREATE TABLE flag_companies (
    id              text PRIMARY KEY,
    environment_id  text NOT NULL REFERENCES flag_environments (id) ON DELETE CASCADE,
    keys            jsonb NOT NULL DEFAULT '{}',
    name            text,
    traits          jsonb NOT NULL DEFAULT '{}',
    plan_id         text,
    version         bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz,
    FOREIGN KEY (environment_id, plan_id) REFERENCES flag_plans (environment_id, id)
);
CREATE INDEX flag_companies_environment ON flag_companies (environment_id, id);
CREATE INDEX flag_companies_plan ON flag_companies (environment_id, plan_id)
    WHERE plan_id IS NOT NULL;

CREATE TABLE flag_company_keys (
    environment_id  text NOT NULL,
    name            text NOT NULL,
    value           text NOT NULL,
    company_id      text NOT NULL REFERENCES flag_companies (id) ON DELETE CASCADE,
    PRIMARY KEY (environment_id, name, value),
    UNIQUE (company_id, name)
);

CREATE TABLE flag_users (
    id              text PRIMARY KEY,
    environment_id  text NOT NULL REFERENCES flag_environments (id) ON DELETE CASCADE,
    keys            jsonb NOT NULL DEFAULT '{}',
    name            text,
    traits          jsonb NOT NULL DEFAULT '{}',
    version         bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz
);
CREATE INDEX flag_users_environment ON flag_users (environment_id, id);

CREATE TABLE flag_user_keys (
    environment_id  text NOT NULL,
    name            text NOT NULL,
    value           text NOT NULL,
    user_id         text NOT NULL REFERENCES flag_users (id) ON DELETE CASCADE,
    PRIMARY KEY (environment_id, name, value),
    UNIQUE (user_id, name)
);

CREATE TABLE flag_memberships (
    environment_id  text NOT NULL,
    user_id         text NOT NULL REFERENCES flag_users (id) ON DELETE CASCADE,
    company_id      text NOT NULL REFERENCES flag_companies (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, company_id)
);
CREATE INDEX flag_memberships_company ON flag_memberships (company_id);

CREATE TABLE flag_company_overrides (
    id               text PRIMARY KEY,
    environment_id   text NOT NULL,
    company_id       text NOT NULL REFERENCES flag_companies (id) ON DELETE CASCADE,
    feature_id       text NOT NULL,
    value_type       text NOT NULL CHECK (value_type IN ('boolean', 'numeric', 'unlimited', 'trait')),
    value_bool       boolean,
    value_numeric    bigint CHECK (value_numeric >= 0),
    value_trait_key  text,
    metric_period    text NOT NULL DEFAULT 'all_time'
                     CHECK (metric_period IN ('all_time', 'current_day', 'current_week', 'current_month')),
    expires_at       timestamptz,
    version          bigint NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (company_id, feature_id),
    FOREIGN KEY (environment_id, feature_id) REFERENCES flag_features (environment_id, id)
        ON DELETE CASCADE
);
CREATE INDEX flag_company_overrides_feature ON flag_company_overrides (environment_id, feature_id);

-- Identify and track events, stored before they are acknowledged. A repeated idempotency
-- key (per environment) is ignored: INSERT … ON CONFLICT DO NOTHING.
CREATE TABLE flag_events (
    id               text PRIMARY KEY,
    seq              bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    environment_id   text NOT NULL REFERENCES flag_environments (id) ON DELETE CASCADE,
    idempotency_key  text,
    event_type       text NOT NULL CHECK (event_type IN ('identify', 'track')),
    event            text,
    quantity         bigint,
    -- resolved in the same transaction (no foreign key: events outlive their entities)
    company_id       text,
    user_id          text,
    body             jsonb NOT NULL,
    sent_at          timestamptz,
    received_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (environment_id, idempotency_key)
);
CREATE INDEX flag_events_environment ON flag_events (environment_id, seq);

-- Usage counters, updated in the transaction that stores the track events: one row per
-- (entity, event, period, start of the period's bucket in UTC; all_time: 1970-01-01), so a
-- metric condition reads one row.
CREATE TABLE flag_metrics (
    environment_id  text NOT NULL REFERENCES flag_environments (id) ON DELETE CASCADE,
    entity_id       text NOT NULL,
    entity_type     text NOT NULL CHECK (entity_type IN ('company', 'user')),
    event           text NOT NULL,
    period          text NOT NULL
                    CHECK (period IN ('all_time', 'current_day', 'current_week', 'current_month')),
    bucket_start    timestamptz NOT NULL,
    count           bigint NOT NULL,
    quantity        numeric NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment_id, entity_id, event, period, bucket_start)
);

-- Flag checks, recorded when asked (?record=true or MILLPOND_FLAGS_RECORD_CHECKS).
CREATE TABLE flag_checks (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    environment_id  text NOT NULL REFERENCES flag_environments (id) ON DELETE CASCADE,
    flag_key        text NOT NULL,
    flag_id         text,
    value           boolean NOT NULL,
    reason          text NOT NULL,
    rule_id         text,
    rule_type       text,
    company_id      text,
    user_id         text,
    company_keys    jsonb,
    user_keys       jsonb,
    key_id          text,
    checked_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX flag_checks_environment ON flag_checks (environment_id, id);
CREATE INDEX flag_checks_flag ON flag_checks (environment_id, flag_key, id);

CREATE TABLE flag_audit (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    environment_id  text NOT NULL REFERENCES flag_environments (id) ON DELETE CASCADE,
    version         bigint NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    key_id          text,
    user_id         bigint,
    username        text NOT NULL,
    entity          text NOT NULL,
    entity_id       text NOT NULL,
    action          text NOT NULL,
    before          jsonb,
    after           jsonb
);
CREATE INDEX flag_audit_environment ON flag_audit (environment_id, id);
CREATE INDEX flag_audit_entity ON flag_audit (environment_id, entity, entity_id, id);

-- Compiled rulesets and resolved environments are cached per replica: drop them on every
-- change, whichever replica (or other writer) made it.
CREATE FUNCTION millpond_notify_flags() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('millpond_flags', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER flag_rulesets_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON flag_rulesets
    FOR EACH STATEMENT EXECUTE FUNCTION millpond_notify_flags();
CREATE TRIGGER flag_environments_change
    AFTER UPDATE OF name, owner_id OR DELETE OR TRUNCATE ON flag_environments
    FOR EACH STATEMENT EXECUTE FUNCTION millpond_notify_flags();
