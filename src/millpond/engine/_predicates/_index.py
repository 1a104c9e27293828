"""Fan-out: which subscriptions a changed row may match, at a cost that grows with the
subscriptions that can match rather than with all of them."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from ._bind import BoundQuery, EqualityConstraint, Row
from ._types import Convert, natural_key

_Group = tuple[str, str]  # (column, type)


@dataclass
class _Table:
    by_value: dict[_Group, dict[Any, set[Hashable]]] = field(default_factory=dict)
    key_functions: dict[_Group, Convert | None] = field(default_factory=dict)
    scan: set[Hashable] = field(default_factory=set)
    size: int = 0


@dataclass(frozen=True, slots=True)
class _Entry:
    bound: BoundQuery
    constraint: EqualityConstraint | None


def _choose(equalities: tuple[EqualityConstraint, ...]) -> EqualityConstraint | None:
    """The most selective equality (fewest values) to index a query under."""
    return min(equalities, key=lambda e: len(e.keys), default=None)


class SubscriptionIndex:
    """Bound queries by table. A query whose top-level AND has ``column = constant``
    or ``column IN (constants)`` is filed under each constant's key (its most selective
    such conjunct); the rest are scanned. ``evaluations`` counts predicate evaluations
    made by :meth:`matching` (for tests and metrics)."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, _Entry] = {}
        self._tables: dict[str, _Table] = {}
        self.evaluations = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, sub_id: object) -> bool:
        return sub_id in self._entries

    def add(self, sub_id: Hashable, bound: BoundQuery) -> None:
        """File ``bound`` under ``sub_id`` (replacing what was filed under it)."""
        if bound.join is not None:
            raise ValueError(
                "a semi-join is matched through SemiJoinState; index its joined-table part "
                "(bound.join.right) instead"
            )
        self.remove(sub_id)
        constraint = _choose(bound.equalities)
        table = self._tables.setdefault(bound.table, _Table())
        table.size += 1
        self._entries[sub_id] = _Entry(bound, constraint)
        if constraint is None:
            table.scan.add(sub_id)
            return
        group = (constraint.column, constraint.type)
        table.key_functions[group] = natural_key(constraint.type)
        by_key = table.by_value.setdefault(group, {})
        for key in constraint.keys:
            by_key.setdefault(key, set()).add(sub_id)

    def remove(self, sub_id: Hashable) -> None:
        """Forget ``sub_id`` (no-op if unknown)."""
        entry = self._entries.pop(sub_id, None)
        if entry is None:
            return
        name = entry.bound.table
        table = self._tables[name]
        table.size -= 1
        table.scan.discard(sub_id)
        if entry.constraint is not None:
            self._unfile(table, sub_id, entry.constraint)
        if table.size == 0:
            del self._tables[name]

    def _unfile(self, table: _Table, sub_id: Hashable, constraint: EqualityConstraint) -> None:
        group = (constraint.column, constraint.type)
        by_key = table.by_value[group]
        for key in constraint.keys:
            ids = by_key[key]
            ids.discard(sub_id)
            if not ids:
                del by_key[key]
        if not by_key:
            del table.by_value[group]
            del table.key_functions[group]

    def has_table(self, table: str) -> bool:
        """Whether any query is on ``table`` (``schema.name``)."""
        return table in self._tables

    def tables(self) -> frozenset[str]:
        return frozenset(self._tables)

    def bound(self, sub_id: Hashable) -> BoundQuery:
        return self._entries[sub_id].bound

    def equality_columns(self, table: str) -> frozenset[str]:
        """Columns of ``table`` that some query is indexed on by equality."""
        entry = self._tables.get(table)
        return frozenset() if entry is None else frozenset(c for c, _ in entry.by_value)

    def candidates(self, table: str, row: Row) -> set[Hashable]:
        """The queries on ``table`` that ``row`` might match (a superset of those it
        does): the scanned ones, and those filed under the row's values."""
        entry = self._tables.get(table)
        if entry is None:
            return set()
        found = set(entry.scan)
        for group, by_key in entry.by_value.items():
            value = row[group[0]]
            if value is None:
                continue
            convert = entry.key_functions[group]
            ids = by_key.get(value if convert is None else convert(value))
            if ids:
                found |= ids
        return found

    def matching(self, table: str, row: Row) -> set[Hashable]:
        """The queries on ``table`` whose WHERE clause is TRUE for ``row``."""
        found: set[Hashable] = set()
        candidates = self.candidates(table, row)
        self.evaluations += len(candidates)
        for sub_id in candidates:
            if self._entries[sub_id].bound.matches(row):
                found.add(sub_id)
        return found
