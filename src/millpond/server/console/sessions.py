"""Server-side web console sessions (table ``console_sessions``, migrations 0006, 0009).

The cookie holds a random session id (``mps_`` + 256 random bits); the table keeps only its
SHA-256, the id of the API key used to log in (never the key) — none for a password login
— and an absolute expiry (login time + ``console_session_ttl_s``). Every request re-checks
the session *and* its key, so a session ends on logout, on "sign out everywhere", at its
expiry, and as soon as its key is revoked, expires or is deleted, or its user is deleted.
A password session acts as its user with scope ``write`` (no key: ``key_id`` is ``""``)
while the user has a password; setting or resetting a password ends all the user's
sessions (``accounts/logins.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from ..accounts.service import Principal, principal_from_row
from ..store import Store

SESSION_PREFIX = "mps_"
MAX_SESSIONS_PER_KEY = 20
"""Logging in again and again with one key (or one user's password) keeps only its newest
sessions."""


@dataclass(frozen=True)
class ConsoleSession:
    """A live session: who it is, its CSRF token and its pending notice (if any)."""

    id_hash: bytes
    who: Principal
    csrf: str
    flash: str | None


def hash_session(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def session_csrf(session_id: str) -> str:
    """The forms' CSRF token: bound to the session, unguessable without its cookie."""
    return hmac.new(session_id.encode(), b"millpond-console-csrf", hashlib.sha256).hexdigest()


_LOAD_SQL = """
SELECT s.id_hash, s.flash,
       coalesce(k.id, '') AS key_id, coalesce(k.scope, 'write') AS scope,
       k.service_account_id, k.environment_id,
       u.id AS user_id, u.username, u.is_admin
FROM console_sessions s
JOIN users u ON u.id = s.user_id
LEFT JOIN api_keys k ON k.id = s.key_id
WHERE s.id_hash = %s AND s.revoked_at IS NULL AND s.expires_at > now()
  AND CASE WHEN s.key_id IS NULL THEN u.password_hash IS NOT NULL
           ELSE k.id IS NOT NULL AND k.revoked_at IS NULL
                AND (k.expires_at IS NULL OR k.expires_at > now()) END
"""


async def load_session(store: Store, session_id: str) -> ConsoleSession | None:
    """The live session of a cookie value, or None."""
    if not session_id.startswith(SESSION_PREFIX) or len(session_id) > 100:
        return None
    row = await store.fetchone(_LOAD_SQL, (hash_session(session_id),))
    if row is None:
        return None
    who = principal_from_row(row)
    return ConsoleSession(row["id_hash"], who, session_csrf(session_id), row["flash"])


async def open_session(store: Store, who: Principal, ttl_s: float) -> str:
    """Start a session for a just-authenticated key; return the cookie value."""
    session_id = SESSION_PREFIX + secrets.token_urlsafe(32)
    async with store.transaction() as conn:
        await _insert(conn, session_id, who.key_id, who.user_id, ttl_s)
    return session_id


async def open_password_session(
    store: Store, user_id: int, password_hash: str, ttl_s: float
) -> str | None:
    """Start a password session for a user whose password just verified against
    ``password_hash``; None if that is no longer the user's password. The user's row is
    locked (``FOR SHARE``) meanwhile, so a change either comes first (and there is no
    session) or after (and ends it)."""
    session_id = SESSION_PREFIX + secrets.token_urlsafe(32)
    async with store.transaction() as conn:
        cur = await conn.execute(
            "SELECT 1 FROM users WHERE id = %s AND password_hash = %s FOR SHARE",
            (user_id, password_hash),
        )
        if await cur.fetchone() is None:
            return None
        await _insert(conn, session_id, None, user_id, ttl_s)
    return session_id


async def _insert(
    conn: AsyncConnection[DictRow],
    session_id: str,
    key_id: str | None,
    user_id: int,
    ttl_s: float,
) -> None:
    """Insert a session; drop expired ones, and the oldest of its key's (or, without a
    key, of its user's password sessions) beyond :data:`MAX_SESSIONS_PER_KEY`."""
    await conn.execute(
        "DELETE FROM console_sessions WHERE expires_at < now()"
        " OR revoked_at < now() - interval '1 day'"
    )
    await conn.execute(
        "INSERT INTO console_sessions (id_hash, key_id, user_id, expires_at)"
        " VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
        (hash_session(session_id), key_id, user_id, ttl_s),
    )
    same_login = "user_id = %s AND key_id IS NULL" if key_id is None else "key_id = %s"
    owner = user_id if key_id is None else key_id
    await conn.execute(
        f"DELETE FROM console_sessions WHERE {same_login} AND id_hash NOT IN"
        f" (SELECT id_hash FROM console_sessions WHERE {same_login}"
        "  ORDER BY created_at DESC, id_hash LIMIT %s)",
        (owner, owner, MAX_SESSIONS_PER_KEY),
    )


async def end_session(store: Store, id_hash: bytes) -> None:
    await store.execute(
        "UPDATE console_sessions SET revoked_at = now() WHERE id_hash = %s AND revoked_at IS NULL",
        (id_hash,),
    )
    store.changed()  # its realtime inspector's socket is re-checked (and closed) at once


async def end_every_session(store: Store, who: Principal) -> int:
    """Sign out everywhere: a user's own key, or their password, ends all the user's
    sessions (whichever key or password made them); a service-account or
    environment-bound key ends only its own."""
    ending = "UPDATE console_sessions SET revoked_at = now() WHERE revoked_at IS NULL"
    if who.service_account_id is None and who.environment_id is None:
        ended = await store.execute(ending + " AND user_id = %s", (who.user_id,))
    else:
        ended = await store.execute(ending + " AND key_id = %s", (who.key_id,))
    store.changed()
    return ended


async def set_flash(store: Store, id_hash: bytes, text: str) -> None:
    """Keep a notice for the session's next page (the server's text, never the caller's)."""
    await store.execute(
        "UPDATE console_sessions SET flash = %s WHERE id_hash = %s", (text, id_hash)
    )


async def take_flash(store: Store, session: ConsoleSession) -> str | None:
    """The session's pending notice, shown once."""
    if session.flash is None:
        return None
    await store.execute(
        "UPDATE console_sessions SET flash = NULL WHERE id_hash = %s", (session.id_hash,)
    )
    return session.flash
