"""Live sessions re-checker: long-lived connections (gateway connections, realtime and
flags-stream sockets) keep honouring authorization after they were opened.

A :class:`Rechecker` holds the live sessions of one kind, each with the group it shares a
check with (the same key and target) and its key's expiry. It checks them again:

- whenever a change channel it watches moves (``store.invalidation``: keys, users,
  service accounts, collaborators, databases; the flags channel for environments) —
  every change is NOTIFYed to every replica, and the replica that made it bumps its own
  at once, so a session is closed within about a second on every replica;
- at its key's ``expires_at`` (a session registered with an expiry is checked then);
- every ``every_s`` seconds anyway (every ``offline_every_s`` while a listener is down,
  since changes may then go unheard).

A check runs once per group (bounded concurrency); when it returns a :class:`Verdict`,
every session of the group is ended with it. The watcher task runs only while there are
sessions. :func:`key_verdict` and :func:`database_verdict` are the checks the gateway and
realtime share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Literal, TypeVar

from .accounts.service import KEY_PREFIX, Principal, authenticate, canonical_key, hash_key
from .databases.service import resolve
from .errors import ServiceError
from .store import Store
from .store.notifications import Invalidation

_log = logging.getLogger("millpond.recheck")

T = TypeVar("T", bound=Hashable)

Reason = Literal[
    "unauthorized",
    "key_revoked",
    "key_expired",
    "access_revoked",
    "access_changed",
    "database_not_found",
    "environment_not_found",
    "environment_forbidden",
]

_RANK = {"ro": 1, "rw": 2, "owner": 3}
_EXPIRY_RETRY_S = 1.0  # an expiry Postgres does not agree with yet: look again after this


@dataclass(frozen=True)
class Verdict:
    """Why a session must end: a stable ``reason`` and a sentence for people."""

    reason: Reason
    message: str


class Rechecker(Generic[T]):
    def __init__(
        self,
        name: str,
        invalidations: Sequence[Invalidation],
        verdict: Callable[[T], Awaitable[Verdict | None]],
        end: Callable[[T, Verdict], None],
        *,
        every_s: float = 30.0,
        offline_every_s: float = 2.0,
        tick_s: float = 0.25,
        concurrency: int = 8,
    ) -> None:
        self.name = name
        self.invalidations = tuple(invalidations)
        self.verdict = verdict
        self.end = end
        self.every_s = every_s
        self.offline_every_s = offline_every_s
        self.tick_s = tick_s
        self.concurrency = concurrency
        self._groups: dict[T, Hashable] = {}
        self._expiry: dict[T, float] = {}  # wall-clock seconds
        self._due: set[T] = set()
        self._seen = self.mark()
        self._last = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._groups)

    def mark(self) -> tuple[int, ...]:
        """The change channels' position: take it before authenticating a session and
        give it to :meth:`add`, so a change made meanwhile is not missed."""
        return tuple(inv.generation for inv in self.invalidations)

    def add(
        self,
        item: T,
        group: Hashable,
        expires_at: datetime | None = None,
        since: tuple[int, ...] | None = None,
    ) -> None:
        self._groups[item] = group
        if expires_at is not None:
            self._expiry[item] = expires_at.timestamp()
        if since is not None and since != self.mark():
            self._due.add(item)
        if self._task is None or self._task.done():
            self._seen, self._last = self.mark(), time.monotonic()
            self._task = asyncio.get_running_loop().create_task(
                self._watch(), name=f"recheck-{self.name}"
            )

    def discard(self, item: T) -> None:
        self._groups.pop(item, None)
        self._expiry.pop(item, None)
        self._due.discard(item)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def recheck(self, items: Iterable[T] | None = None) -> None:
        """Check ``items`` (default: every session) again; end those no longer allowed."""
        groups: dict[Hashable, list[T]] = {}
        for item in list(self._groups) if items is None else items:
            group = self._groups.get(item)
            if group is not None:
                groups.setdefault(group, []).append(item)
        limit = asyncio.Semaphore(self.concurrency)

        async def check(members: list[T]) -> None:
            async with limit:
                verdict = await self.verdict(members[0])
            if verdict is None:
                return
            for item in members:
                if item in self._groups:
                    self.discard(item)
                    self.end(item, verdict)

        await asyncio.gather(*(check(members) for members in groups.values()))

    async def _watch(self) -> None:
        while self._groups:
            await asyncio.sleep(self.tick_s)
            items = self._pending()
            if items is None or items:
                try:
                    await self.recheck(items)
                except Exception as exc:
                    _log.warning("%s: could not recheck sessions (%s)", self.name, exc)

    def _pending(self) -> list[T] | None:
        """What to check on this tick: None for everything, else the due sessions."""
        now = time.monotonic()
        live = all(inv.live for inv in self.invalidations)
        every = self.every_s if live else self.offline_every_s
        mark = self.mark()
        if mark != self._seen or now - self._last >= every:
            self._seen, self._last = mark, now
            self._due.clear()
            self._push_expired(time.time())
            return None
        due = self._due | self._push_expired(time.time())
        self._due = set()
        return list(due)

    def _push_expired(self, wall: float) -> set[T]:
        expired = {item for item, at in self._expiry.items() if at <= wall}
        for item in expired:
            self._expiry[item] = wall + _EXPIRY_RETRY_S
        return expired


# -- the shared checks ------------------------------------------------------------------


async def why_invalid(store: Store, api_key: str) -> Verdict:
    """Why ``api_key`` does not authenticate (it did not, just now)."""
    if not canonical_key(api_key).startswith(KEY_PREFIX):
        return Verdict(
            "unauthorized",
            "password authentication failed: the password must be a millpond API key",
        )
    row = await store.fetchone(
        "SELECT revoked_at IS NOT NULL AS revoked,"
        " expires_at IS NOT NULL AND expires_at <= now() AS expired"
        " FROM api_keys WHERE secret_hash = %s",
        (hash_key(api_key),),
    )
    if row is None:
        return Verdict("unauthorized", "password authentication failed: unknown API key")
    if row["revoked"]:
        return Verdict("key_revoked", "API key revoked")
    if row["expired"]:
        return Verdict("key_expired", "API key expired")
    return Verdict("unauthorized", "API key not valid")


async def key_verdict(store: Store, api_key: str) -> Principal | Verdict:
    """The key's principal if it is still valid, else why not."""
    principal = await authenticate(store, api_key)
    if principal is None:
        return await why_invalid(store, api_key)
    return principal


async def database_verdict(
    store: Store, api_key: str, database: str, database_id: int, sql_role: str
) -> Verdict | None:
    """None while ``api_key`` still reaches ``database`` (the same one, ``database_id``)
    with at least ``sql_role``; else why not."""
    checked = await key_verdict(store, api_key)
    if isinstance(checked, Verdict):
        return checked
    return await access_verdict(store, checked, database, database_id, sql_role)


async def access_verdict(
    store: Store, principal: Principal, database: str, database_id: int, sql_role: str
) -> Verdict | None:
    """None while ``principal`` (still valid: its caller checked) reaches ``database``
    (the same one, ``database_id``) with at least ``sql_role``; else why not."""
    try:
        access = await resolve(store, principal, database)
    except ServiceError as exc:
        if exc.status >= 500:
            raise
        return await _gone_or_revoked(store, database, database_id)
    if access.id != database_id:
        return Verdict("database_not_found", f'database "{database}" was deleted')
    if _RANK[access.sql_role] < _RANK[sql_role]:
        return Verdict(
            "access_changed",
            f'your access to database "{database}" changed to {access.role}; reconnect',
        )
    return None


async def _gone_or_revoked(store: Store, database: str, database_id: int) -> Verdict:
    row = await store.fetchone("SELECT state FROM databases WHERE id = %s", (database_id,))
    if row is None or row["state"] != "ready":
        return Verdict("database_not_found", f'database "{database}" was deleted')
    return Verdict("access_revoked", f'you can no longer read database "{database}"')


CLOSE_CODES: dict[Reason, int] = {
    "unauthorized": 4001,
    "key_revoked": 4001,
    "key_expired": 4001,
    "access_revoked": 4003,
    "environment_forbidden": 4003,
    "database_not_found": 4004,
    "environment_not_found": 4004,
    "access_changed": 4013,
}
"""The WebSocket close code of each reason (docs/realtime-protocol.md): 4001/4003/4004
are final (the SDK stops), 4013 means reconnect (with the new rights)."""
