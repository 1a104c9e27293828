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
_FIRST_NORMAL_XID = 3
_RANGE_SCANNED = 1 << 16
"""How many xids past its ``xmax`` :meth:`Snapshot.misses` looks at one by one (past
that, it says the snapshot misses one: the caller reads a newer one)."""


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
    full_xmin: int = 0
    full_xmax: int = 0
    """``xmin`` and ``xmax`` as Postgres gave them, 64 bits (epoch included), which never
    wrap: how far apart two snapshots are however long ago one was taken (0: unknown)."""

    @classmethod
    def parse(cls, text: str, lsn: int, committed_unseen: bool = False) -> Snapshot:
        xmin, xmax, xip = text.split(":")
        return cls(
            int(xmin) & _MASK,
            int(xmax) & _MASK,
            frozenset(int(x) & _MASK for x in xip.split(",") if x),
            lsn,
            committed_unseen,
            int(xmin),
            int(xmax),
        )

    def sees(self, xid: int) -> bool:
        xid &= _MASK
        if _precedes(xid, self.xmin):
            return True
        if not _precedes(xid, self.xmax):
            return False
        return xid not in self.xip

    def misses(self, earlier: Snapshot) -> int | None:
        """A transaction ``earlier`` sees that this snapshot does not (None: it sees
        every one): listed as running here, or at or past this ``xmax``. Everything
        ``earlier`` saw is older than its ``xmax``; this one sees everything older than
        its ``xmin``: when one is past the other (in 64 bits), nothing is looked at (the
        32-bit comparisons below would be wrong 2**31 xids later)."""
        if self.full_xmin and earlier.full_xmax and earlier.full_xmax <= self.full_xmin:
            return None
        for xid in sorted(self.xip):
            if earlier.sees(xid):
                return xid
        xid = self.xmax
        for _ in range(_RANGE_SCANNED):
            if not _precedes(xid, earlier.xmax):
                return None
            if earlier.sees(xid):
                return xid
            xid = (xid + 1) & _MASK
            if xid < _FIRST_NORMAL_XID:  # wraparound skips the special xids
                xid = _FIRST_NORMAL_XID
        return xid
