-- Modules (server/modules): every published version of a database's module, kept so it
-- can be listed, shown and rolled back to; the one that runs is the newest ``ready`` one
-- (a rollback publishes an old version's files again, as a new version). ``definition``
-- is the ModuleDef JSON a worker extracted from ``files``; ``plan`` the migration's diff
-- text. A version is ``pending`` while its migration runs in the tenant database: that
-- transaction also sets the database's comment to ``millpond module version N``, so a
-- pending row left by a crash is settled by reading the comment (applied: ready; not:
-- deleted).
CREATE TABLE module_versions (
    database_id   bigint NOT NULL REFERENCES databases (id) ON DELETE CASCADE,
    version       integer NOT NULL,
    files         jsonb NOT NULL,
    entry         text NOT NULL,
    definition    jsonb NOT NULL,
    plan          text NOT NULL DEFAULT '',
    published_by  bigint REFERENCES users (id) ON DELETE SET NULL,
    published_at  timestamptz NOT NULL DEFAULT now(),
    rolled_back_from integer,
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'ready')),
    PRIMARY KEY (database_id, version)
);

-- The module's log lines (ctx.log, print) and reducer failures with their tracebacks,
-- for ``millpond logs``; purged past ``module_log_retention_s`` and beyond
-- ``module_log_max_lines`` per database.
CREATE TABLE module_logs (
    id           bigserial PRIMARY KEY,
    database_id  bigint NOT NULL REFERENCES databases (id) ON DELETE CASCADE,
    version      integer NOT NULL,
    ts           timestamptz NOT NULL DEFAULT now(),
    level        text NOT NULL,
    message      text NOT NULL,
    reducer      text,
    request_id   text,
    traceback    text
);
CREATE INDEX module_logs_database ON module_logs (database_id, id);
CREATE INDEX module_logs_ts ON module_logs (ts);
