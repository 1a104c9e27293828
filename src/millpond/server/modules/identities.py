"""Identities: who calls a reducer, as its ``ctx.sender`` sees it.

An identity is 32 bytes, shown as 64 lowercase hex digits (as SpacetimeDB shows one).
It is not secret: subscribers see it in reducer events.

- A millpond user's identity is derived from the server secret and the user's id, so it
  is the same for all of the user's keys, on every replica, and no one can compute another
  user's identity without the secret.
- An **anonymous identity** is random, made for a client without an account that asks
  a public database with a module for one (``POST …/identities``, or a realtime socket
  opened without a key). It comes with a token that the client keeps and presents again
  (``Authorization: Bearer mpt_…``) to be the same identity after reconnects and restarts::

      mpt_<database id>.<identity>.<nonce>.<signature>

  The nonce is 192 random bits; the signature an HMAC-SHA256 of the rest under the server
  secret, so a forged or altered token is refused before any lookup. Only the token's
  SHA-256 is stored. A token is bound to its database, reaches only the endpoints marked
  ``anonymous_allowed`` (reducer calls, the module's schema) and the realtime socket, and
  reads as a stranger does (``read`` on a public database). The owner lists and revokes
  identities and turns anonymous access off (``databases.anonymous_access``); every change
  is NOTIFYed, so caches and live sockets on every replica honour it at once.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Literal

from ...models.modules import AnonymousIdentity, IdentityCreated, ModuleSettings
from ..accounts.service import Principal
from ..config import Settings
from ..databases.service import Access, resolve
from ..errors import ServiceError, not_found
from ..recheck import Reason, Verdict
from ..store import Store

TOKEN_PREFIX = "mpt_"
_TOKEN = re.compile(
    r"mpt_([1-9][0-9]{0,18})\.([0-9a-f]{64})\.([A-Za-z0-9_-]{32})\.([A-Za-z0-9_-]{43})"
)
_IDENTITY = re.compile(r"[0-9a-f]{64}")
_LAST_USED_RESOLUTION = timedelta(minutes=1)
_RATE_WINDOW_S = 60.0

LOOKUP = Principal(user_id=0, username="", is_admin=False, key_id="", scope="read")
"""Who an anonymous visitor is while it has no identity yet: it sees public databases."""


def user_identity(secret: bytes, user_id: int) -> str:
    return hmac.new(
        secret, f"millpond identity: user {user_id}".encode(), hashlib.sha256
    ).hexdigest()


def is_identity(text: str) -> bool:
    return _IDENTITY.fullmatch(text) is not None


# -- tokens --------------------------------------------------------------------------------


def _signature(secret: bytes, body: str) -> str:
    digest = hmac.new(secret, f"millpond identity token: {body}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def new_token(secret: bytes, database_id: int) -> tuple[str, str]:
    """A new anonymous identity of database ``database_id`` and its token."""
    identity = secrets.token_hex(32)
    body = f"{database_id}.{identity}.{secrets.token_urlsafe(24)}"
    return identity, f"{TOKEN_PREFIX}{body}.{_signature(secret, body)}"


def read_token(secret: bytes, token: str) -> tuple[int, str] | None:
    """``(database id, identity)`` of a well-formed token signed with ``secret``, or None."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    body = token[len(TOKEN_PREFIX) : match.start(4) - 1]
    if not hmac.compare_digest(_signature(secret, body), match.group(4)):
        return None
    return int(match.group(1)), match.group(2)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


Refusal = Literal["unknown", "revoked", "disabled", "private", "gone"]

REFUSALS: dict[Refusal, tuple[int, str, str]] = {
    "unknown": (401, "unauthorized", "unknown identity token"),
    "revoked": (401, "identity_revoked", "this anonymous identity was revoked by the owner"),
    "disabled": (
        403,
        "anonymous_disabled",
        "the database's owner has turned anonymous access off: use a millpond API key",
    ),
    "private": (404, "database_not_found", "the database of this identity token is private"),
    "gone": (404, "database_not_found", "the database of this identity token was deleted"),
}


def refusal_error(refusal: Refusal) -> ServiceError:
    status, code, message = REFUSALS[refusal]
    return ServiceError(status, code, message)


_TOKEN_SQL = """
SELECT a.identity, a.database_id, a.revoked_at IS NOT NULL AS revoked, a.last_used_at,
       d.is_private, d.anonymous_access, d.state
FROM anonymous_identities a JOIN databases d ON d.id = a.database_id
WHERE a.token_hash = %s
"""


async def authenticate_token(store: Store, secret: bytes, token: str) -> Principal | Refusal:
    """The anonymous principal of a valid ``mpt_`` token, else why it is refused."""
    read = read_token(secret, token)
    if read is None:
        return "unknown"
    digest = token_hash(token)
    row = await store.cache.get_or_load(
        ("identity", digest), lambda: store.fetchone(_TOKEN_SQL, (digest,))
    )
    if row is None or (row["database_id"], row["identity"]) != read:
        return "unknown"
    if row["state"] != "ready":
        return "gone"
    if row["revoked"]:
        return "revoked"
    if row["is_private"]:
        return "private"
    if not row["anonymous_access"]:
        return "disabled"
    now = datetime.now(UTC)
    last_used = row["last_used_at"]
    if last_used is None or now - last_used > _LAST_USED_RESOLUTION:
        row["last_used_at"] = now
        await store.execute(
            "UPDATE anonymous_identities SET last_used_at = now() WHERE token_hash = %s",
            (digest,),
        )
    return Principal(
        user_id=0,
        username="",
        is_admin=False,
        key_id="",
        scope="write",  # may call reducers; reads as a stranger (databases.service._role_of)
        identity=row["identity"],
        database_id=row["database_id"],
    )


def require_bound(principal: Principal, access: Access) -> None:
    """An end user's token works on its own database only."""
    if principal.end_user and principal.database_id != access.id:
        raise ServiceError(
            403,
            "identity_other_database",
            f"this identity token belongs to another database, not {access.full_name}",
        )


def sender_of(secret: bytes, principal: Principal) -> str:
    """The identity a reducer called by ``principal`` sees as ``ctx.sender``."""
    return principal.identity or user_identity(secret, principal.user_id)


# -- the service ---------------------------------------------------------------------------


class Identities:
    """Anonymous identities of module databases: create, list, revoke, allow or not."""

    def __init__(self, store: Store, secret: bytes, settings: Settings) -> None:
        self.store = store
        self.secret = secret
        self.settings = settings
        self._windows: dict[int, collections.deque[float]] = {}

    async def create(self, full_name: str) -> IdentityCreated:
        access = await resolve(self.store, LOOKUP, full_name)
        await self.check_open(access)
        self._count(access)
        identity, token = new_token(self.secret, access.id)
        await self.store.execute(
            "INSERT INTO anonymous_identities (identity, database_id, token_hash)"
            " VALUES (%s, %s, %s)",
            (identity, access.id, token_hash(token)),
        )
        return IdentityCreated(identity=identity, token=token, database=access.full_name)

    async def check_open(self, access: Access) -> None:
        """404/409/403 unless ``access`` names a public database with a module that takes
        anonymous identities."""
        row = await self.store.fetchone(
            "SELECT d.anonymous_access, EXISTS (SELECT FROM module_versions v"
            " WHERE v.database_id = d.id AND v.state = 'ready') AS has_module"
            " FROM databases d WHERE d.id = %s",
            (access.id,),
        )
        if row is None or access.is_private:
            raise not_found("database_not_found", f"no database {access.full_name!r}")
        if not row["has_module"]:
            raise ServiceError(
                409,
                "module_not_found",
                f"{access.full_name} has no module: anonymous identities are for the"
                " databases of modules (publish one with `millpond publish`)",
            )
        if not row["anonymous_access"]:
            raise refusal_error("disabled")

    def _count(self, access: Access) -> None:
        now = time.monotonic()
        made = self._windows.setdefault(access.id, collections.deque())
        while made and made[0] <= now - _RATE_WINDOW_S:
            made.popleft()
        limit = self.settings.module_anonymous_identities_per_minute
        if len(made) >= limit:
            error = ServiceError(
                429,
                "rate_limited",
                f"{access.full_name} has made {limit} anonymous identities in the last minute"
                " (module_anonymous_identities_per_minute): retry later, and keep the token"
                " a client was given instead of asking for a new one",
                {"limit": limit},
            )
            error.headers = {"Retry-After": str(int(made[0] + _RATE_WINDOW_S - now) + 1)}  # type: ignore[attr-defined]
            raise error
        made.append(now)
        if len(self._windows) > 10_000:  # forget quiet databases
            for key in [k for k, v in self._windows.items() if not v][:1000]:
                del self._windows[key]

    async def list(
        self, principal: Principal, full_name: str, limit: int, revoked: bool
    ) -> list[AnonymousIdentity]:
        access = await resolve(self.store, principal, full_name, need="admin")
        rows = await self.store.fetchall(
            "SELECT identity, created_at, last_used_at, revoked_at FROM anonymous_identities"
            " WHERE database_id = %s AND (%s OR revoked_at IS NULL)"
            " ORDER BY created_at DESC, identity LIMIT %s",
            (access.id, revoked, limit),
        )
        return [AnonymousIdentity.model_validate(row) for row in rows]

    async def revoke(self, principal: Principal, full_name: str, identity: str) -> None:
        access = await resolve(self.store, principal, full_name, need="admin")
        found = is_identity(identity) and await self.store.execute(
            "UPDATE anonymous_identities SET revoked_at = now()"
            " WHERE identity = %s AND database_id = %s AND revoked_at IS NULL",
            (identity, access.id),
        )
        if not found:
            raise not_found(
                "identity_not_found",
                f"{access.full_name} has no anonymous identity {identity!r} that is not"
                " revoked (list them with `millpond identities list`)",
            )
        self.store.changed()

    async def settings_of(self, principal: Principal, full_name: str) -> ModuleSettings:
        access = await resolve(self.store, principal, full_name, need="admin")
        return await self._settings(access)

    async def update_settings(
        self, principal: Principal, full_name: str, anonymous_access: bool | None
    ) -> ModuleSettings:
        access = await resolve(self.store, principal, full_name, need="admin")
        if anonymous_access is not None:
            await self.store.execute(
                "UPDATE databases SET anonymous_access = %s WHERE id = %s",
                (anonymous_access, access.id),
            )
            self.store.changed()
        return await self._settings(access)

    async def _settings(self, access: Access) -> ModuleSettings:
        row = await self.store.fetchone(
            "SELECT anonymous_access FROM databases WHERE id = %s", (access.id,)
        )
        if row is None:
            raise not_found("database_not_found", f"{access.full_name} was deleted")
        return ModuleSettings(anonymous_access=row["anonymous_access"])


async def identity_verdict(store: Store, secret: bytes, token: str) -> Verdict | None:
    """None while an anonymous identity's token is still good (for live sockets)."""
    who = await authenticate_token(store, secret, token)
    if isinstance(who, Principal):
        return None
    message = REFUSALS[who][2]
    reasons: dict[Refusal, Reason] = {
        "unknown": "unauthorized",
        "revoked": "key_revoked",
        "disabled": "access_revoked",
        "private": "access_revoked",
        "gone": "database_not_found",
    }
    return Verdict(reasons[who], message)
