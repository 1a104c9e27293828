"""What a reducer sees: its context (:class:`ReducerContext`), the table handles on
``ctx.db``, and :class:`SenderError`, the exception that fails a call with a message for
its caller. The worker (``millpond.server.modules``) provides the implementation; these
protocols are the contract modules are written against (and type-checked with)."""

from __future__ import annotations

import datetime
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from ._types import Identity, Timestamp

Row = TypeVar("Row")


class SenderError(Exception):
    """Raise it in a reducer to fail the call: the transaction rolls back and the caller
    gets the message (HTTP 422 ``reducer_failed``). Any other exception also rolls back,
    and is reported as a bug in the module (with its traceback in the module's logs)."""


class TableHandle(Protocol[Row]):
    """``ctx.db.<table>``: typed access to one table of the module."""

    def insert(self, row: Row) -> Row:
        """Insert ``row``; return it as stored (``auto_inc`` columns and defaults
        filled). A duplicate key raises :class:`UniqueViolation`... as any SQL error: it
        fails the call unless caught."""
        ...

    def update(self, row: Row) -> Row:
        """Replace the row with ``row``'s primary key; ``LookupError`` if there is none."""
        ...

    def delete(self, row: Row) -> bool:
        """Delete the row with ``row``'s primary key; whether there was one."""
        ...

    def find(self, *key: Any) -> Row | None:
        """The row with this primary key (all its columns, in order), or None."""
        ...

    def filter_by(self, **columns: Any) -> list[Row]:
        """The rows whose columns equal these values (use an index for speed)."""
        ...

    def count(self) -> int: ...

    def __iter__(self) -> Iterator[Row]: ...


class Database(Protocol):
    """``ctx.db``: one attribute per table, named like the table (``ctx.db.message``)."""

    def __getattr__(self, name: str) -> TableHandle[Any]: ...


class ReducerContext(Protocol):
    sender: Identity
    """The caller's identity."""
    connection_id: str | None
    """The caller's realtime connection, or None for an HTTP call."""
    sender_auth: dict[str, Any] | None
    """The claims of the caller's token when it came from a login provider the database
    trusts (``iss``, ``sub``, ``email``…); None for millpond users and anonymous
    identities."""
    timestamp: Timestamp
    """When the call started; the same on every retry of the call."""
    rng: random.Random
    """Seeded per call (the same on every retry)."""
    db: Database
    log: logging.Logger
    """Lines go to the module's log (``millpond logs owner/db``)."""

    due: Timestamp | None
    """When a scheduled run was due (its intended time, not when it started); None for
    other calls."""

    def schedule(
        self,
        reducer: str | Callable[..., Any],
        *,
        at: Timestamp | None = None,
        in_: datetime.timedelta | None = None,
        every: datetime.timedelta | None = None,
        **columns: Any,
    ) -> Any:
        """Schedule a scheduled reducer (or its name): insert a row into its schedule
        table, due once ``at`` a time or ``in_`` a delay, or ``every`` interval, with
        ``columns`` for the row's other columns; the row as stored."""
        ...

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """Run any SQL in the call's transaction, with parameters (``%s`` or
        ``%(name)s``); the rows as dicts (none for statements without a result)."""
        ...
