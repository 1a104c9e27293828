-- Every change that can alter who may do what is announced on the channel
-- 'millpond_auth', so each replica drops its cached keys and database access at once.

CREATE FUNCTION millpond_notify_auth() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('millpond_auth', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER users_auth_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION millpond_notify_auth();
CREATE TRIGGER service_accounts_auth_change AFTER UPDATE OR DELETE OR TRUNCATE ON service_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION millpond_notify_auth();
CREATE TRIGGER databases_auth_change AFTER UPDATE OR DELETE OR TRUNCATE ON databases
    FOR EACH STATEMENT EXECUTE FUNCTION millpond_notify_auth();
CREATE TRIGGER collaborators_auth_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON collaborators
    FOR EACH STATEMENT EXECUTE FUNCTION millpond_notify_auth();
CREATE TRIGGER api_keys_auth_delete AFTER DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION millpond_notify_auth();
-- not on last_used_at bookkeeping
CREATE TRIGGER api_keys_auth_update AFTER UPDATE ON api_keys
    FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
          OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
          OR OLD.scope IS DISTINCT FROM NEW.scope
          OR OLD.user_id IS DISTINCT FROM NEW.user_id
          OR OLD.service_account_id IS DISTINCT FROM NEW.service_account_id)
    EXECUTE FUNCTION millpond_notify_auth();
