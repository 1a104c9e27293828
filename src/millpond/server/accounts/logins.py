"""Users' passwords: set by the user, reset by an admin, checked at a console login.

A password is 10 to 1024 characters; only its scrypt hash is stored (``passwords.py``,
``users.password_hash``, migration 0009) and neither is ever logged or returned. Setting
or resetting a password ends all of the user's console sessions, in the same
transaction; the password sessions a login opens check, under a lock on the user's row,
that the password they verified is still the user's, so no session outlives a change.

The throttle: after :data:`MAX_FAILURES` failed password checks for one username within
:data:`WINDOW_S`, password checks for it are refused (429 ``too_many_attempts``) for
:data:`LOCK_S`. The count is in the control database (table ``login_failures``), so it
holds across replicas and restarts; it is kept for any well-formed username, whether or
not such a user exists (no user enumeration), and a success or an admin's reset clears
it. A failed login takes the time of one scrypt verification either way: an unknown user,
or one without a password, is checked against a dummy hash.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass

from ...models import PasswordReset, PasswordSet
from ..errors import ServiceError, forbidden, invalid
from ..limits import invalid_text_error
from ..store import Store
from . import passwords
from .service import (
    Principal,
    find_user,
    is_username,
    require_admin,
    require_user_key,
    require_write,
)

MIN_LENGTH = 10
MAX_LENGTH = 1024
MAX_FAILURES = 10
WINDOW_S = 15 * 60
LOCK_S = 15 * 60


@dataclass(frozen=True)
class Login:
    """A user whose password just verified, and the hash it verified against."""

    user_id: int
    username: str
    is_admin: bool
    password_hash: str


def check_password(password: str) -> None:
    """422 ``invalid_password`` unless 10 to 1024 characters; 400 ``invalid_text`` for a
    lone surrogate (no browser could send it)."""
    try:
        password.encode()
    except UnicodeEncodeError:
        raise invalid_text_error() from None
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise invalid(
            "invalid_password",
            f"a password is {MIN_LENGTH} to {MAX_LENGTH} characters",
            {"field": "password", "min_length": MIN_LENGTH, "max_length": MAX_LENGTH},
        )


def too_many_attempts() -> ServiceError:
    return ServiceError(
        429,
        "too_many_attempts",
        "too many wrong passwords for this user: password logins are paused for"
        f" {LOCK_S // 60} minutes",
    )


VERIFYING_AT_ONCE = 2
"""Password checks a server runs at once (each ~40 ms of a core and 16 MiB): a flood of
logins (many usernames, each under the throttle) waits its turn instead of taking every
core and the thread pool from the rest of the server."""
_verifying: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)
"""One semaphore per event loop (a semaphore belongs to the loop it first waited on)."""


async def _verify(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored``; with no hash, as slow as a real check."""
    loop = asyncio.get_running_loop()
    turn = _verifying.setdefault(loop, asyncio.Semaphore(VERIFYING_AT_ONCE))
    async with turn:
        matches = await asyncio.to_thread(
            passwords.verify, password[: MAX_LENGTH + 1], stored or passwords.dummy_hash()
        )
    return matches and stored is not None


async def _hash(password: str) -> str:
    return await asyncio.to_thread(passwords.hash_password, password)


# -- the throttle ------------------------------------------------------------------------


async def _locked(store: Store, username: str) -> bool:
    row = await store.fetchone(
        "SELECT 1 FROM login_failures WHERE username = lower(%s) AND locked_until > now()",
        (username,),
    )
    return row is not None


_FAILED_SQL = """
INSERT INTO login_failures AS f (username, failures, first_at)
VALUES (lower(%(name)s), 1, now())
ON CONFLICT (username) DO UPDATE SET
    failures = CASE WHEN f.first_at > now() - %(window)s::interval
                    THEN f.failures + 1 ELSE 1 END,
    first_at = CASE WHEN f.first_at > now() - %(window)s::interval
                    THEN f.first_at ELSE now() END,
    locked_until = CASE WHEN f.first_at > now() - %(window)s::interval
                             AND f.failures + 1 >= %(most)s
                        THEN now() + %(lock)s::interval END
"""


async def _failed(store: Store, username: str) -> None:
    """Count a wrong password for ``username`` (and drop other stale counts)."""
    window = f"{WINDOW_S} seconds"
    async with store.transaction() as conn:
        await conn.execute(
            "DELETE FROM login_failures WHERE first_at < now() - %s::interval"
            " AND (locked_until IS NULL OR locked_until < now())",
            (window,),
        )
        await conn.execute(
            _FAILED_SQL,
            {"name": username, "window": window, "lock": f"{LOCK_S} seconds", "most": MAX_FAILURES},
        )


async def _forget_failures(store: Store, username: str) -> None:
    await store.execute("DELETE FROM login_failures WHERE username = lower(%s)", (username,))


# -- logging in --------------------------------------------------------------------------


async def check_login(store: Store, username: str, password: str) -> Login | None:
    """The user whose password this is, or None (unknown user, no password, wrong
    password: the caller says the same in each case). 429 while the username is locked."""
    well_formed = is_username(username)
    if well_formed and await _locked(store, username):
        raise too_many_attempts()
    row = None
    if well_formed:
        row = await store.fetchone(
            "SELECT id, username, is_admin, password_hash FROM users"
            " WHERE lower(username) = lower(%s)",
            (username,),
        )
    stored = row["password_hash"] if row is not None else None
    matches = await _verify(password, stored)  # always: an unknown user costs the same
    if row is None or not matches:
        if well_formed:
            await _failed(store, username)
        return None
    await _forget_failures(store, username)
    return Login(row["id"], row["username"], row["is_admin"], row["password_hash"])


# -- setting and resetting -----------------------------------------------------------------

_END_SESSIONS_SQL = (
    "UPDATE console_sessions SET revoked_at = now() WHERE user_id = %s AND revoked_at IS NULL"
)


async def _store_hash(store: Store, user_id: int, password: str, expected: str | None) -> bool:
    """Set the user's password unless it changed since it was read as ``expected``; end
    all the user's console sessions. Whether it was set."""
    new_hash = await _hash(password)
    async with store.transaction() as conn:
        cur = await conn.execute(
            "UPDATE users SET password_hash = %s"
            " WHERE id = %s AND password_hash IS NOT DISTINCT FROM %s",
            (new_hash, user_id, expected),
        )
        if cur.rowcount == 0:
            return False
        await conn.execute(_END_SESSIONS_SQL, (user_id,))
    store.changed()
    return True


async def set_own_password(store: Store, who: Principal, body: PasswordSet) -> None:
    """The caller's user's new password; the current one is needed if there is one."""
    require_user_key(who)
    require_write(who)
    check_password(body.password)
    row = await store.fetchone("SELECT password_hash FROM users WHERE id = %s", (who.user_id,))
    current = row["password_hash"] if row is not None else None
    if current is not None:
        await _check_current(store, who.username, current, body.current_password)
    if not await _store_hash(store, who.user_id, body.password, current):
        raise ServiceError(
            409, "password_changed", "the password changed meanwhile: try again with the new one"
        )


async def _check_current(store: Store, username: str, stored: str, given: str | None) -> None:
    if not given:
        raise invalid(
            "current_password_required",
            "you have a password: give it as current_password to change it",
            {"field": "current_password"},
        )
    if await _locked(store, username):
        raise too_many_attempts()
    if not await _verify(given, stored):
        await _failed(store, username)
        raise forbidden("current_password is wrong", "wrong_password")
    await _forget_failures(store, username)


async def reset_password(store: Store, who: Principal, username: str, body: PasswordReset) -> None:
    """An admin sets a user's password (no current one needed); the user's console
    sessions end and the login throttle for the username is lifted."""
    require_admin(who)
    require_write(who)
    user = await find_user(store, username)
    check_password(body.password)
    new_hash = await _hash(body.password)
    async with store.transaction() as conn:
        await conn.execute(
            "UPDATE users SET password_hash = %s WHERE id = %s", (new_hash, user["id"])
        )
        await conn.execute(_END_SESSIONS_SQL, (user["id"],))
    store.changed()
    await _forget_failures(store, user["username"])
