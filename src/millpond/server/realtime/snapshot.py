"""Snapshot visibility: was a replicated transaction already visible to the snapshot a
subscription's initial rows were read in?

``pg_current_snapshot()`` gives ``xmin:xmax:xip``. A committed transaction is visible
to it iff it committed before the snapshot was taken: ``xid < xmin``, or
``xmin <= xid < xmax`` and not in ``xip``. pgoutput reports 32-bit xids, so the
comparison is made modulo 2**32 the way Postgres compares xids (valid across
wraparound as long as the xids are within 2**31 of each other, which Postgres ensures).
"""

from __future__ import annotations

from dataclasses import dataclass

_MASK = 0xFFFFFFFF


def _precedes(a: int, b: int) -> bool:
    """``a`` is older than ``b`` (32-bit xid arithmetic)."""
    return ((a - b) & _MASK) > 0x7FFFFFFF


def newer_xid(a: int, b: int) -> bool:
    """``a`` was assigned after ``b``."""
    return _precedes(b & _MASK, a & _MASK)


@dataclass(frozen=True)
class Snapshot:
    xmin: int
    xmax: int
    xip: frozenset[int]
    lsn: int
    """WAL insert position read after the snapshot was taken: every transaction visible
    to the snapshot committed at or before it."""
    committed_unseen: bool = False
    """A transaction the snapshot lists as running had already committed (Postgres
    said so when the snapshot was taken): the snapshot cannot be used."""

    @classmethod
    def parse(cls, text: str, lsn: int, committed_unseen: bool = False) -> Snapshot:
        xmin, xmax, xip = text.split(":")
        return cls(
            int(xmin) & _MASK,
            int(xmax) & _MASK,
            frozenset(int(x) & _MASK for x in xip.split(",") if x),
            lsn,
            committed_unseen,
        )

    def sees(self, xid: int) -> bool:
        xid &= _MASK
        if _precedes(xid, self.xmin):
            return True
        if not _precedes(xid, self.xmax):
            return False
        return xid not in self.xip
