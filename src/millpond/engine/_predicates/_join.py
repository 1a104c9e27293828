"""The state a semi-join subscription needs: which join keys the joined table's
matching rows currently cover."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ._bind import BoundSemiJoin, Row


class SemiJoinState:
    """For ``SELECT a.* FROM a JOIN b ON a.k = b.k WHERE p(b)``: counts, per key, the
    rows of ``b`` satisfying ``p``. A row of ``a`` matches while its key is counted.
    Feed it ``b``'s initial rows and every change to ``b``; when a key starts or stops
    being covered, the rows of ``a`` with that key enter or leave the result."""

    def __init__(self, join: BoundSemiJoin) -> None:
        self.join = join
        self._counts: Counter[Any] = Counter()

    def _contribution(self, row: Row | None) -> Any:
        if row is None or not self.join.right.matches(row):
            return None
        return self.join.right_key(row)

    def add(self, row: Row) -> bool:
        """Count an initial row of the joined table; True if its key became covered."""
        gained, _ = self.right_changed(None, row)
        return bool(gained)

    def right_changed(
        self, old: Row | None, new: Row | None
    ) -> tuple[frozenset[Any], frozenset[Any]]:
        """Apply a change to a joined-table row (insert: ``old`` None; delete: ``new``
        None). Returns the keys that became covered and those that stopped being."""
        before, after = self._contribution(old), self._contribution(new)
        if before == after:
            return frozenset(), frozenset()
        gained: frozenset[Any] = frozenset()
        lost: frozenset[Any] = frozenset()
        if before is not None:
            self._counts[before] -= 1
            if self._counts[before] == 0:
                del self._counts[before]
                lost = frozenset({before})
        if after is not None:
            self._counts[after] += 1
            if self._counts[after] == 1:
                gained = frozenset({after})
        return gained, lost

    def left_key(self, row: Row) -> Any:
        """A subscribed-table row's join key (None: it joins nothing)."""
        return self.join.left_key(row)

    def matches(self, row: Row) -> bool:
        """Whether a subscribed-table row is in the result now."""
        key = self.join.left_key(row)
        return key is not None and key in self._counts

    def covered(self) -> frozenset[Any]:
        """The join keys currently covered."""
        return frozenset(self._counts)
