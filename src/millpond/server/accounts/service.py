"""Users, service accounts and API keys.

Keys look like ``mp_<40 random base62 characters>`` (238 bits). Only their SHA-256 is
stored — the key is random and long, so a fast hash is enough and lookups stay O(1).
A key belongs to a user, or to a service account (and through it to a user), and has a
scope: ``read`` or ``write``.

bit.io's SDK accepts only keys that are ``v2_`` and word characters: ``v2_<random part>``
is another spelling of the key ``mp_<random part>`` (the same secret, the same key, the
same strength); :func:`canonical_key` turns either into the ``mp_`` form before it is
hashed or compared.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from ...models import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    KeyRevoke,
    Me,
    ServiceAccount,
    User,
    UserCreate,
    UserCreated,
)
from ..budget import check_count
from ..config import Settings
from ..errors import ServiceError, conflict, forbidden, invalid, not_found
from ..store import Store

KEY_PREFIX = "mp_"
BITIO_KEY_PREFIX = "v2_"
_ALPHABET = string.ascii_letters + string.digits
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,38}")  # used with fullmatch
_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's user (and service account, if the key is one's)."""

    user_id: int
    username: str
    is_admin: bool
    key_id: str
    scope: Literal["read", "write"]
    service_account_id: int | None = None
    environment_id: str | None = None
    """Set for a key bound to one flags environment: it may only call /v1/flags."""
    expires_at: datetime | None = None
    """When the key expires (live sockets are closed then)."""
    identity: str | None = None
    """Set for an end user who is no millpond user (server/modules/identities.py): an
    anonymous identity's token (``mpt_…``) or a token of an issuer the database's owner
    trusts (``issuer``; server/modules/issuers.py). No user (``user_id`` 0), bound to
    ``database_id``, reaching only the endpoints marked ``anonymous_allowed`` (deps.py)
    and the realtime socket."""
    database_id: int | None = None
    issuer: str | None = None
    claims: Mapping[str, Any] | None = None
    """The issuer's token's claims (``ctx.sender_auth``)."""

    @property
    def can_write(self) -> bool:
        return self.scope == "write"

    @property
    def end_user(self) -> bool:
        """Not a millpond user: an anonymous identity, or an issuer's token."""
        return self.identity is not None

    @property
    def anonymous(self) -> bool:
        return self.identity is not None and self.issuer is None


def canonical_key(secret: str) -> str:
    """The ``mp_`` spelling of a key given in either spelling (``mp_…`` or ``v2_…``)."""
    if secret.startswith(BITIO_KEY_PREFIX):
        return KEY_PREFIX + secret[len(BITIO_KEY_PREFIX) :]
    return secret


def bitio_spelling(secret: str) -> str:
    """The ``v2_`` spelling of an ``mp_`` key, for bit.io's SDK."""
    return BITIO_KEY_PREFIX + canonical_key(secret)[len(KEY_PREFIX) :]


def hash_key(secret: str) -> bytes:
    return hashlib.sha256(canonical_key(secret).encode()).digest()


def new_secret() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(40))


def is_username(username: str) -> bool:
    return _USERNAME.fullmatch(username) is not None


def check_username(username: str) -> None:
    if not is_username(username):
        raise invalid(
            "invalid_name",
            "usernames are 1-39 letters, digits, '_' or '-', starting with a letter or digit",
            {"field": "username"},
        )


def require_unbound(principal: Principal) -> None:
    """Keys bound to a flags environment reach only the flags API (and /v1/me)."""
    if principal.environment_id is not None:
        raise forbidden(
            "this API key is bound to a flags environment: it can only call /v1/flags",
            "environment_key",
        )


def require_write(principal: Principal) -> None:
    if not principal.can_write:
        raise forbidden("this API key is read-only", "read_only_key")


def require_admin(principal: Principal) -> None:
    if not principal.is_admin or principal.service_account_id is not None:
        raise forbidden("this action needs an admin user's key", "admin_required")


def require_user_key(principal: Principal) -> None:
    if principal.service_account_id is not None:
        raise forbidden("service-account keys cannot manage service accounts")


_PRINCIPAL_SQL = """
SELECT k.id AS key_id, k.scope, k.service_account_id, k.last_used_at, k.expires_at,
       k.environment_id,
       u.id AS user_id, u.username, u.is_admin
FROM api_keys k JOIN users u ON u.id = k.user_id
WHERE k.secret_hash = %s AND k.revoked_at IS NULL
  AND (k.expires_at IS NULL OR k.expires_at > now())
"""


async def authenticate(store: Store, secret: str) -> Principal | None:
    """The principal of a valid key, or None (unknown, revoked or expired)."""
    if not canonical_key(secret).startswith(KEY_PREFIX):
        return None
    digest = hash_key(secret)
    row = await store.cache.get_or_load(
        ("key", digest), lambda: store.fetchone(_PRINCIPAL_SQL, (digest,))
    )
    if row is None:
        return None
    now = datetime.now(UTC)
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return None
    last_used = row["last_used_at"]
    if last_used is None or now - last_used > _LAST_USED_RESOLUTION:
        row["last_used_at"] = now
        await store.execute(
            "UPDATE api_keys SET last_used_at = now() WHERE id = %s", (row["key_id"],)
        )
    return principal_from_row(row)


def principal_from_row(row: Mapping[str, Any]) -> Principal:
    """The caller a key's row (joined with its user) stands for."""
    return Principal(
        user_id=row["user_id"],
        username=row["username"],
        # a service account never inherits its owner's server-admin powers
        is_admin=row["is_admin"] and row["service_account_id"] is None,
        key_id=row["key_id"],
        scope=row["scope"],
        service_account_id=row["service_account_id"],
        environment_id=row["environment_id"],
        expires_at=row.get("expires_at"),
    )


# -- keys ------------------------------------------------------------------------------

_ACTIVE_KEYS_SQL = (
    "SELECT count(*) FROM api_keys WHERE user_id = %s AND revoked_at IS NULL"
    " AND (expires_at IS NULL OR expires_at > now())"
)
_KEY_COLUMNS = (
    "id, name, prefix, scope, created_at, expires_at, last_used_at, service_account_id,"
    " environment_id"
)


async def insert_key(
    conn: AsyncConnection[DictRow],
    user_id: int,
    body: ApiKeyCreate,
    service_account_id: int | None = None,
    environment_id: str | None = None,
    max_keys: int | None = None,
) -> ApiKeyCreated:
    """Create a key on ``conn`` (inside the caller's transaction); the secret is in the
    result and nowhere else. ``max_keys``: refuse (``limit_exceeded``) when the user
    already has that many active keys, its service accounts' and environments' included."""
    if max_keys is not None:
        await check_count(
            conn, "account_max_api_keys", "active API keys", max_keys, _ACTIVE_KEYS_SQL, user_id
        )
    secret = new_secret()
    expires_at = (
        datetime.now(UTC) + timedelta(seconds=body.expires_in_seconds)
        if body.expires_in_seconds
        else None
    )
    cur = await conn.execute(
        "INSERT INTO api_keys (id, user_id, service_account_id, name, prefix, secret_hash,"
        " scope, expires_at, environment_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        f" RETURNING {_KEY_COLUMNS}",
        (
            "key_" + secrets.token_hex(8),
            user_id,
            service_account_id,
            body.name,
            secret[:10],
            hash_key(secret),
            body.scope,
            expires_at,
            environment_id,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return ApiKeyCreated(**row, secret=secret)


def key_limit(settings: Settings, principal: Principal) -> int | None:
    """The ``max_keys`` of keys ``principal`` makes (None: admins, when exempt)."""
    if principal.is_admin and settings.account_limits_exempt_admins:
        return None
    return settings.account_max_api_keys


async def create_key(
    store: Store, principal: Principal, body: ApiKeyCreate, max_keys: int | None = None
) -> ApiKeyCreated:
    require_write(principal)
    async with store.transaction() as conn:
        return await insert_key(
            conn, principal.user_id, body, principal.service_account_id, max_keys=max_keys
        )


def _owner_filter(principal: Principal) -> tuple[str, tuple[Any, ...]]:
    if principal.service_account_id is None:
        return "user_id = %s AND service_account_id IS NULL", (principal.user_id,)
    return "service_account_id = %s", (principal.service_account_id,)


async def list_keys(store: Store, principal: Principal) -> list[ApiKey]:
    where, params = _owner_filter(principal)
    rows = await store.fetchall(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE {where} AND revoked_at IS NULL"
        " ORDER BY created_at, id",
        params,
    )
    return [ApiKey(**r) for r in rows]


async def revoke_key(store: Store, principal: Principal, key_id: str) -> None:
    require_write(principal)
    if "\x00" in key_id:  # no such id (and not valid text)
        raise not_found("key_not_found", f"no active key {key_id!r} of yours")
    where, params = _owner_filter(principal)
    touched = await store.execute(
        f"UPDATE api_keys SET revoked_at = now() WHERE {where} AND id = %s AND revoked_at IS NULL",
        (*params, key_id),
    )
    store.changed()
    if not touched:
        raise not_found("key_not_found", f"no active key {key_id!r} of yours")


async def revoke_keys(store: Store, principal: Principal, body: KeyRevoke) -> int:
    """Revoke one key (by id or by the key itself) or all keys of the caller's principal."""
    require_write(principal)
    where, params = _owner_filter(principal)
    return await _revoke(store, where, params, body)


async def _revoke(store: Store, where: str, params: tuple[Any, ...], body: KeyRevoke) -> int:
    if body.key_id is not None and body.api_key is not None:
        raise invalid("validation_error", "give key_id or api_key, not both")
    if body.key_id is not None:
        where, params = where + " AND id = %s", (*params, body.key_id)
    elif body.api_key is not None:
        where, params = where + " AND secret_hash = %s", (*params, hash_key(body.api_key))
    count = await store.execute(
        f"UPDATE api_keys SET revoked_at = now() WHERE {where} AND revoked_at IS NULL", params
    )
    store.changed()
    if count == 0 and (body.key_id is not None or body.api_key is not None):
        raise not_found("key_not_found", "no such active key")
    return count


# -- users -----------------------------------------------------------------------------

_USER_COLUMNS = "id, username, is_admin, created_at"


async def create_user(store: Store, principal: Principal | None, body: UserCreate) -> UserCreated:
    if principal is not None:
        require_admin(principal)
        require_write(principal)
    check_username(body.username)
    async with store.transaction() as conn:
        cur = await conn.execute(
            f"INSERT INTO users (username, is_admin) VALUES (%s, %s)"
            f" ON CONFLICT DO NOTHING RETURNING {_USER_COLUMNS}",
            (body.username, body.is_admin),
        )
        row = await cur.fetchone()
        if row is None:
            raise conflict("user_exists", f"user {body.username!r} already exists")
        key = await insert_key(conn, row["id"], ApiKeyCreate(name="initial"))
    return UserCreated(user=User(**row), api_key=key)


async def list_users(store: Store, principal: Principal) -> list[User]:
    require_admin(principal)
    rows = await store.fetchall(f"SELECT {_USER_COLUMNS} FROM users ORDER BY id")
    return [User(**r) for r in rows]


async def find_user(store: Store, username: str) -> DictRow:
    if not is_username(username):  # cannot exist (and may not even be valid text)
        raise not_found("user_not_found", f"no user {username!r}")
    row = await store.fetchone(
        f"SELECT {_USER_COLUMNS} FROM users WHERE lower(username) = lower(%s)", (username,)
    )
    if row is None:
        raise not_found("user_not_found", f"no user {username!r}")
    return row


async def get_user(store: Store, principal: Principal, username: str) -> User:
    if principal.username.lower() != username.lower():
        require_admin(principal)
    return User(**await find_user(store, username))


async def delete_user(
    store: Store, principal: Principal, username: str, delete_databases: bool
) -> tuple[int, list[str]]:
    """Start deleting a user: their databases are marked ``deleting`` (start-up cleanup
    finishes them after a crash). Returns the user's id and those databases' Postgres
    names; the caller drops them, then calls :func:`remove_user`."""
    require_admin(principal)
    require_write(principal)
    user = await find_user(store, username)
    if user["id"] == principal.user_id:
        raise ServiceError(409, "cannot_delete_self", "an admin cannot delete their own user")
    async with store.transaction() as conn:
        owned = await (
            await conn.execute(
                "SELECT pg_name FROM databases WHERE owner_id = %s FOR UPDATE", (user["id"],)
            )
        ).fetchall()
        if owned and not delete_databases:
            raise conflict(
                "user_owns_databases",
                f"{username} owns {len(owned)} database(s);"
                " pass delete_databases=true to drop them too",
            )
        await conn.execute(
            "UPDATE databases SET state = 'deleting' WHERE owner_id = %s", (user["id"],)
        )
    store.changed()
    return user["id"], [r["pg_name"] for r in owned]


async def delete_user_and_databases(
    store: Store,
    principal: Principal,
    username: str,
    delete_databases: bool,
    drop: Callable[[str], Awaitable[None]],
) -> None:
    """Delete a user all the way: :func:`delete_user`, ``drop`` each of their databases
    (by Postgres name), then :func:`remove_user` (the API's and the console's path)."""
    user_id, owned = await delete_user(store, principal, username, delete_databases)
    for pg_name in owned:
        await drop(pg_name)
    await remove_user(store, user_id)


async def remove_user(store: Store, user_id: int) -> None:
    """Finish :func:`delete_user` once the user's databases are gone."""
    await store.execute("DELETE FROM users WHERE id = %s", (user_id,))
    store.changed()


async def me(store: Store, principal: Principal) -> Me:
    user = await find_user(store, principal.username)
    key_row = await store.fetchone(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = %s", (principal.key_id,)
    )
    sa = None
    if principal.service_account_id is not None:
        sa = await _get_service_account(store, principal.user_id, principal.service_account_id)
    has_password = await store.fetchone(
        "SELECT password_hash IS NOT NULL AS set FROM users WHERE id = %s", (user["id"],)
    )
    return Me(
        user=User(**user),
        service_account=sa,
        key=ApiKey(**(key_row or {})),
        has_password=has_password is not None and bool(has_password["set"]),
    )


async def bootstrap_admin(store: Store) -> UserCreated | None:
    """Create the first admin user ``admin`` if there are no users; return it with its key."""
    async with store.transaction() as conn:
        await conn.execute("LOCK TABLE users IN EXCLUSIVE MODE")
        if await (await conn.execute("SELECT 1 FROM users LIMIT 1")).fetchone():
            return None
        row = await (
            await conn.execute(
                f"INSERT INTO users (username, is_admin) VALUES ('admin', true)"
                f" RETURNING {_USER_COLUMNS}"
            )
        ).fetchone()
        assert row is not None
        key = await insert_key(conn, row["id"], ApiKeyCreate(name="bootstrap"))
    return UserCreated(user=User(**row), api_key=key)


# -- service accounts ------------------------------------------------------------------

_SA_SELECT = """
SELECT s.id, s.name, u.username AS owner, s.created_at,
       (SELECT count(*) FROM api_keys k
        WHERE k.service_account_id = s.id AND k.revoked_at IS NULL) AS key_count
FROM service_accounts s JOIN users u ON u.id = s.owner_id
"""


async def _get_service_account(store: Store, owner_id: int, sa_id: int) -> ServiceAccount:
    row = await store.fetchone(
        _SA_SELECT + " WHERE s.id = %s AND s.owner_id = %s", (sa_id, owner_id)
    )
    if row is None:
        raise not_found("service_account_not_found", f"no service account {sa_id} of yours")
    return ServiceAccount(**row)


async def create_service_account(store: Store, principal: Principal, name: str) -> ServiceAccount:
    require_user_key(principal)
    require_write(principal)
    row = await store.fetchone(
        "INSERT INTO service_accounts (owner_id, name) VALUES (%s, %s)"
        " ON CONFLICT DO NOTHING RETURNING id",
        (principal.user_id, name),
    )
    if row is None:
        raise conflict("service_account_exists", f"you already have a service account {name!r}")
    return await _get_service_account(store, principal.user_id, row["id"])


async def list_service_accounts(store: Store, principal: Principal) -> list[ServiceAccount]:
    require_user_key(principal)
    rows = await store.fetchall(
        _SA_SELECT + " WHERE s.owner_id = %s ORDER BY s.id", (principal.user_id,)
    )
    return [ServiceAccount(**r) for r in rows]


async def get_service_account(store: Store, principal: Principal, sa_id: int) -> ServiceAccount:
    require_user_key(principal)
    return await _get_service_account(store, principal.user_id, sa_id)


async def delete_service_account(store: Store, principal: Principal, sa_id: int) -> None:
    require_user_key(principal)
    require_write(principal)
    await _get_service_account(store, principal.user_id, sa_id)
    await store.execute("DELETE FROM service_accounts WHERE id = %s", (sa_id,))
    store.changed()


async def create_service_account_key(
    store: Store,
    principal: Principal,
    sa_id: int,
    body: ApiKeyCreate,
    max_keys: int | None = None,
) -> ApiKeyCreated:
    require_user_key(principal)
    require_write(principal)
    await _get_service_account(store, principal.user_id, sa_id)
    async with store.transaction() as conn:
        return await insert_key(conn, principal.user_id, body, sa_id, max_keys=max_keys)


async def list_service_account_keys(store: Store, principal: Principal, sa_id: int) -> list[ApiKey]:
    require_user_key(principal)
    await _get_service_account(store, principal.user_id, sa_id)
    rows = await store.fetchall(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE service_account_id = %s"
        " AND revoked_at IS NULL ORDER BY created_at, id",
        (sa_id,),
    )
    return [ApiKey(**r) for r in rows]


async def revoke_service_account_keys(
    store: Store, principal: Principal, sa_id: int, body: KeyRevoke
) -> int:
    require_user_key(principal)
    require_write(principal)
    await _get_service_account(store, principal.user_id, sa_id)
    return await _revoke(store, "service_account_id = %s", (sa_id,), body)
