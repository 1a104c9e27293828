"""Who may touch which environment.

An environment belongs to one account (its owner). The owner's keys (user or service
account) reach all of its environments — write keys change them, read keys check and list;
a server admin's user key reaches every environment (by id). A key *bound* to an
environment (``api_keys.environment_id``, made by ``POST …/environments/{env}/keys``)
reaches that environment only, and cannot manage environments or keys.

``{env}`` in a URL is an environment id (``env_…``) or the name of one of the caller's
account's environments. An environment the caller cannot reach does not exist for them
(404 ``environment_not_found``); another environment of the same account, with a key bound
to a different one, is 403 ``environment_forbidden``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..accounts.service import Principal, require_write
from ..errors import ServiceError, forbidden, not_found
from ..store import Store
from ..store.cache import GenerationCache
from .schemas import ENVIRONMENT_ID_PREFIX, ENVIRONMENT_NAME_PATTERN

_ENV_ID = re.compile(r"env_[0-9a-f]{16}")
_ENV_NAME = re.compile(ENVIRONMENT_NAME_PATTERN)
_ENV_COLUMNS = "id, owner_id, name, environment_type, created_at, updated_at"
_MAX_BINDINGS = 100_000


@dataclass(frozen=True, slots=True)
class Env:
    """A resolved environment the caller may reach."""

    id: str
    owner_id: int
    name: str


def environment_not_found(ref: str) -> ServiceError:
    return not_found("environment_not_found", f"no environment {ref!r} visible to this key")


def require_unbound(who: Principal, bound: str | None) -> None:
    if bound is not None:
        raise forbidden(
            "a key bound to an environment cannot manage environments or keys",
            "environment_forbidden",
        )


class Access:
    """Resolves ``{env}`` for a caller. Environments are cached (invalidated with the
    flags cache: renames and deletions notify ``millpond_flags``); a key's binding never
    changes once the key exists, so it is remembered for as long as the process lives."""

    def __init__(self, store: Store, cache: GenerationCache) -> None:
        self.store = store
        self.cache = cache
        self._bindings: dict[str, str | None] = {}

    async def binding(self, who: Principal) -> str | None:
        """The environment the caller's key is bound to, or None."""
        try:
            return self._bindings[who.key_id]
        except KeyError:
            pass
        row = await self.store.fetchone(
            "SELECT environment_id FROM api_keys WHERE id = %s", (who.key_id,)
        )
        bound = row["environment_id"] if row is not None else None
        if len(self._bindings) >= _MAX_BINDINGS:
            self._bindings.clear()
        self._bindings[who.key_id] = bound
        return bound

    async def _row(self, who: Principal, ref: str) -> dict[str, Any] | None:
        if _ENV_ID.fullmatch(ref):
            key: tuple[str, ...] = ("env-id", ref)
            query = f"SELECT {_ENV_COLUMNS} FROM flag_environments WHERE id = %s"
            params: tuple[Any, ...] = (ref,)
        elif _ENV_NAME.fullmatch(ref) and not ref.lower().startswith(ENVIRONMENT_ID_PREFIX):
            key = ("env-name", str(who.user_id), ref.lower())
            query = (
                f"SELECT {_ENV_COLUMNS} FROM flag_environments"
                " WHERE owner_id = %s AND lower(name) = lower(%s)"
            )
            params = (who.user_id, ref)
        else:  # cannot exist (and may not even be valid text)
            return None

        async def load() -> dict[str, Any] | None:
            row = await self.store.fetchone(query, params)
            return dict(row) if row is not None else None

        found: dict[str, Any] | None = await self.cache.get_or_load(key, load)
        return found

    async def resolve(self, who: Principal, ref: str, *, write: bool = False) -> Env:
        """The environment ``ref`` names, if the caller may reach it (and write to it)."""
        row = await self._row(who, ref)
        if row is None or (row["owner_id"] != who.user_id and not who.is_admin):
            raise environment_not_found(ref)
        bound = await self.binding(who)
        if bound is not None and bound != row["id"]:
            raise forbidden(
                f"this key is bound to another environment than {ref!r}", "environment_forbidden"
            )
        if write:
            require_write(who)
        return Env(row["id"], row["owner_id"], row["name"])
