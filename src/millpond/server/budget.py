"""Per-account budgets: no tenant can take the Postgres connections (or the cheap-to-create,
costly-to-hold things) every other tenant needs.

**Connections.** Two counts, both exact:

* *tenant connections* — every real Postgres connection the server holds on a tenant's
  behalf (pooled HTTP query connections, busy or idle, gateway sessions and streamed
  exports). Their sum never exceeds ``capacity``: Postgres' ``max_connections`` minus
  its own reserved slots minus the ``reserved_connections`` setting, kept for the
  server's own pools (control database, jobs, privileged sessions). An idle pooled
  connection belongs to nobody and is closed on demand (``reclaimers``) when a new one
  needs its place.
* *account connections* — the connections an account holds at this moment: its gateway
  sessions, its HTTP queries in progress (each on a pooled connection) and its streamed
  exports (``transfer/stream.py``), at most ``account_limit``. The account is the
  caller's user; a service account's keys count for the user that owns it. The limit is
  capped at half the capacity, so one account always leaves room for the others.

Both counts are per server replica (documented in docs/configuration.md).

This module does the accounting and the waiting; it opens no connection itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ServiceError

Reclaim = Callable[[int], Awaitable[int]]
"""Close up to ``n`` idle tenant connections; return how many were closed."""

Scope = Literal["account", "server"]
_WAIT_STEP_S = 0.05
_BUSY_MEMORY_S = 30.0  # how long a refusal for lack of server capacity explains a timeout


class BudgetExceeded(Exception):
    """A connection was refused: the account's budget or the server's capacity is used up."""

    def __init__(self, scope: Scope, limit: int, current: int, account: str | None = None):
        self.scope = scope
        self.limit = limit
        self.current = current
        self.account = account
        super().__init__(self.text)

    @property
    def setting(self) -> str:
        return "account_max_connections" if self.scope == "account" else "reserved_connections"

    @property
    def text(self) -> str:
        if self.scope == "account":
            who = f"account {self.account!r}" if self.account else "this account"
            return (
                f"connection budget exceeded: {who} holds {self.current} of its {self.limit}"
                " Postgres connections (account_max_connections; gateway sessions, HTTP"
                " queries and streamed exports in progress, per server): close some or wait"
                " for them to finish"
            )
        return (
            f"connection budget exceeded: all {self.limit} Postgres connections the server"
            " gives tenants are in use (max_connections minus reserved_connections); retry later"
        )

    def service_error(self) -> ServiceError:
        status = 429 if self.scope == "account" else 503
        details = {
            "budget": self.setting,
            "scope": self.scope,
            "limit": self.limit,
            "current": self.current,
        }
        return ServiceError(status, "connection_budget_exceeded", self.text, details)


@dataclass
class ConnectionBudget:
    account_limit: int = 1_000_000
    capacity: int = 1_000_000

    def __post_init__(self) -> None:
        self.held: dict[int, int] = {}
        self.open = 0
        self.reclaimers: list[Reclaim] = []
        self._server_busy_at = -_BUSY_MEMORY_S

    @property
    def per_account(self) -> int:
        """The account limit, capped so one account leaves half the capacity to others."""
        return max(1, min(self.account_limit, self.capacity // 2))

    # -- accounts (pure accounting) -------------------------------------------------------

    def try_hold(self, account: int, exempt: bool = False) -> bool:
        current = self.held.get(account, 0)
        if not exempt and current >= self.per_account:
            return False
        self.held[account] = current + 1
        return True

    def hold(self, account: int, name: str | None = None, exempt: bool = False) -> None:
        if not self.try_hold(account, exempt):
            raise BudgetExceeded("account", self.per_account, self.held[account], name)

    def unhold(self, account: int) -> None:
        current = self.held.get(account, 0) - 1
        if current > 0:
            self.held[account] = current
        else:
            self.held.pop(account, None)

    async def wait_hold(
        self, account: int, timeout: float, name: str | None = None, exempt: bool = False
    ) -> None:
        """Hold a connection for ``account``, waiting up to ``timeout`` s for one of its
        own to be given back."""
        deadline = time.monotonic() + timeout
        while not self.try_hold(account, exempt):
            if time.monotonic() >= deadline:
                raise BudgetExceeded("account", self.per_account, self.held[account], name)
            await asyncio.sleep(_WAIT_STEP_S)

    # -- real tenant connections -----------------------------------------------------------

    def try_open(self) -> bool:
        if self.open >= self.capacity:
            return False
        self.open += 1
        return True

    def closed(self) -> None:
        self.open = max(0, self.open - 1)

    @property
    def server_busy(self) -> bool:
        """A connection was refused for lack of server capacity in the last half minute."""
        return time.monotonic() - self._server_busy_at < _BUSY_MEMORY_S

    async def make_room(self) -> bool:
        """Whether a new tenant connection fits, after closing idle ones if it must."""
        if self.open < self.capacity:
            return True
        for reclaim in self.reclaimers:
            if await reclaim(1) and self.open < self.capacity:
                return True
        return self.open < self.capacity

    def server_full(self) -> BudgetExceeded:
        return BudgetExceeded("server", self.capacity, self.open)

    async def open_connection(self) -> None:
        """Count a new real tenant connection, closing an idle one to make room if the
        capacity is used up; :class:`BudgetExceeded` (scope ``server``) if none is idle."""
        while not self.try_open():
            if not await self.make_room():
                self._server_busy_at = time.monotonic()
                raise self.server_full()

    async def session(
        self, account: int, name: str | None = None, exempt: bool = False
    ) -> Callable[[], None]:
        """Count a long-lived session (a gateway session, a streamed export, a backup):
        one of ``account``'s connections and one real tenant connection. Returns what
        gives both back (the first time it is called); :class:`BudgetExceeded` with
        nothing counted when either does not fit."""
        self.hold(account, name, exempt)
        try:
            await self.open_connection()
        except BaseException:
            self.unhold(account)
            raise
        closed = self.closer()
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                self.unhold(account)
                closed()

        return release

    def closer(self) -> Callable[[], None]:
        """A function that gives one counted connection back, the first time it is called."""
        done = False

        def close() -> None:
            nonlocal done
            if not done:
                done = True
                self.closed()

        return close


def capacity_of(settings: dict[str, Any], reserved: int) -> int:
    """Tenant connections a Postgres server takes: ``max_connections`` minus the slots
    it keeps for superusers (and, from PostgreSQL 16, for ``pg_use_reserved_connections``)
    minus the server's own ``reserved``; at least 1."""
    total = int(settings["max_connections"])
    kept = int(settings.get("superuser_reserved_connections") or 0)
    kept += int(settings.get("reserved_connections") or 0)
    return max(1, total - kept - reserved)


CAPACITY_SQL = (
    "SELECT current_setting('max_connections') AS max_connections,"
    " current_setting('superuser_reserved_connections') AS superuser_reserved_connections,"
    " current_setting('reserved_connections', true) AS reserved_connections,"
    " current_setting('max_wal_senders') AS max_wal_senders,"
    " current_setting('max_replication_slots') AS max_replication_slots"
)


def streams_of(settings: dict[str, Any], wanted: int) -> int:
    """User databases a replica may stream at once: ``wanted``, within Postgres' WAL
    senders and replication slots, one kept for the control database's (flags) stream."""
    senders = min(int(settings["max_wal_senders"]), int(settings["max_replication_slots"]))
    return max(1, min(wanted, senders - 1))


# -- per-account limits on things cheap to create and costly to hold ------------------------


def limit_exceeded(setting: str, what: str, limit: int, current: int) -> ServiceError:
    return ServiceError(
        403,
        "limit_exceeded",
        f"an account may have at most {limit} {what} ({setting}); it has {current}."
        " Remove some, or ask an admin to raise the limit",
        {"limit": limit, "current": current, "setting": setting},
    )


LIMIT_LOCK_SPACE = 0x6C696D  # "lim": advisory-lock class of per-account limit checks


async def check_count(
    conn: Any, setting: str, what: str, limit: int, count_sql: str, account: int
) -> None:
    """Inside the caller's transaction on the control database: lock the account's
    counts (so concurrent creations cannot both pass) and refuse if ``count_sql``
    (one ``%s``: the account's user id) already reaches ``limit``."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s::int4, %s::int4)", (LIMIT_LOCK_SPACE, account)
    )
    cur = await conn.execute(count_sql, (account,))
    row = await cur.fetchone()
    current = int(next(iter(row.values())) if isinstance(row, dict) else row[0])
    if current >= limit:
        raise limit_exceeded(setting, what, limit, current)


class Tally:
    """Live things per account on this replica (open realtime connections)."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def try_take(self, account: int, limit: int) -> bool:
        current = self.counts.get(account, 0)
        if current >= limit:
            return False
        self.counts[account] = current + 1
        return True

    def give(self, account: int) -> None:
        current = self.counts.get(account, 0) - 1
        if current > 0:
            self.counts[account] = current
        else:
            self.counts.pop(account, None)
