-- Passwords for the web console (server/accounts/passwords.py, logins.py). A user may have
-- a password: its scrypt hash (``scrypt$n=…,r=…,p=…$<salt>$<key>``), never the password.
-- NULL: no password (the user logs in with an API key only).
ALTER TABLE users ADD COLUMN password_hash text;

-- A console session made by a password login has no key (``key_id`` NULL): it acts as its
-- user with scope ``write``, and lives while the user has a password. Setting or
-- resetting a password ends all of the user's sessions (``revoked_at``); deleting the
-- user deletes them.
ALTER TABLE console_sessions ALTER COLUMN key_id DROP NOT NULL;

-- The password login throttle: failed logins per username (lower case, whether or not
-- such a user exists). ``failures`` counts those since ``first_at``; at the limit,
-- ``locked_until`` is set and password logins for that username are refused until then.
-- A success deletes the row, so does an admin's reset; stale rows go on the next failure.
CREATE TABLE login_failures (
    username      text PRIMARY KEY,
    failures      integer NOT NULL,
    first_at      timestamptz NOT NULL,
    locked_until  timestamptz
);
