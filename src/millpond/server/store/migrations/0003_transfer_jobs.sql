-- Import and export jobs. Any replica claims a RECEIVED job with
-- SELECT … FOR UPDATE SKIP LOCKED and, while it runs it, holds a session advisory lock
-- on the job's lock_key: a PROCESSING job whose lock is free lost its worker (a crash)
-- and is retried once, then FAILED. Queued jobs are announced on 'millpond_transfer'.

CREATE TABLE transfer_jobs (
    id                  text PRIMARY KEY,
    lock_key            bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    kind                text NOT NULL CHECK (kind IN ('import', 'export')),
    state               text NOT NULL DEFAULT 'RECEIVED'
                        CHECK (state IN ('RECEIVED', 'PROCESSING', 'DONE', 'FAILED')),
    user_id             bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_scope           text NOT NULL CHECK (key_scope IN ('read', 'write')),
    service_account_id  bigint,
    database_id         bigint NOT NULL REFERENCES databases (id) ON DELETE CASCADE,
    params              jsonb NOT NULL,
    -- the replica whose disk holds the job's files (NULL: any replica may run it)
    node_id             text,
    file_path           text,
    file_name           text,
    bytes_total         bigint,
    bytes_done          bigint NOT NULL DEFAULT 0,
    rows_done           bigint NOT NULL DEFAULT 0,
    attempts            integer NOT NULL DEFAULT 0,
    worker_id           text,
    heartbeat_at        timestamptz,
    -- the user-database transaction that commits an import, recorded just before its
    -- COMMIT: after a crash, pg_xact_status() tells whether the data went in
    commit_xid          text,
    result              jsonb,
    error_id            text,
    error_type          text,
    error_details       jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    expires_at          timestamptz
);
CREATE INDEX transfer_jobs_queue ON transfer_jobs (created_at)
    WHERE state IN ('RECEIVED', 'PROCESSING');
CREATE INDEX transfer_jobs_user ON transfer_jobs (user_id, created_at);
CREATE INDEX transfer_jobs_expiry ON transfer_jobs (expires_at)
    WHERE kind = 'export' AND file_path IS NOT NULL;

CREATE FUNCTION millpond_notify_transfer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('millpond_transfer', NEW.kind);
    RETURN NULL;
END $$;

CREATE TRIGGER transfer_jobs_queued AFTER INSERT OR UPDATE OF state ON transfer_jobs
    FOR EACH ROW WHEN (NEW.state = 'RECEIVED') EXECUTE FUNCTION millpond_notify_transfer();
