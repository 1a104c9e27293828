"""Snapshot visibility, as the hub positions transactions against a subscribe's
snapshot: ``sees`` (one xid) and ``misses`` (what an earlier snapshot saw that a later
one does not: a new hub's slot snapshot against a subscribe's)."""

from __future__ import annotations

import pytest

from millpond.server.realtime.snapshot import Snapshot, newer_xid


def snap(text: str) -> Snapshot:
    return Snapshot.parse(text, lsn=0)


@pytest.mark.parametrize(
    ("text", "xid", "seen"),
    [
        ("100:105:101,103", 99, True),  # before xmin
        ("100:105:101,103", 100, True),
        ("100:105:101,103", 101, False),  # running
        ("100:105:101,103", 102, True),
        ("100:105:101,103", 105, False),  # at xmax: not yet
        ("100:105:", 200, False),
        # across wraparound: 4294967290 precedes 5
        ("4294967290:5:4294967295", 4294967291, True),
        ("4294967290:5:4294967295", 4294967295, False),
        ("4294967290:5:4294967295", 4, True),
        ("4294967290:5:4294967295", 5, False),
    ],
)
def test_sees(text: str, xid: int, seen: bool) -> None:
    assert snap(text).sees(xid) is seen


def test_a_later_snapshot_that_sees_everything_misses_nothing() -> None:
    assert snap("110:120:115").misses(snap("100:110:104")) is None
    assert snap("100:110:104").misses(snap("100:110:104")) is None


def test_still_running_in_both_is_not_missed() -> None:
    # 104 had not committed for the earlier snapshot either: the stream will bring it
    assert snap("104:112:104,111").misses(snap("100:110:104")) is None


def test_running_here_but_seen_before_is_missed() -> None:
    assert snap("100:112:103,111").misses(snap("100:110:104")) == 103


def test_past_this_xmax_but_seen_before_is_missed() -> None:
    # committed before the earlier snapshot, not yet completed when this one was taken
    assert snap("106:106:").misses(snap("100:108:104")) == 106
    assert snap("106:106:").misses(snap("100:108:104,106")) == 107
    assert snap("106:106:").misses(snap("100:108:104,106,107")) is None


def test_missed_across_wraparound() -> None:
    # 64-bit xids as Postgres gives them: 4294967301 is 5 in the next epoch
    earlier = snap("4294967290:4294967301:")
    assert snap("4294967294:4294967294:").misses(earlier) == 4294967294
    assert snap("4294967299:4294967299:").misses(snap("4294967290:4294967301:4294967299")) == 4
    assert snap("4294967301:4294967301:").misses(earlier) is None


def test_an_earlier_snapshot_of_long_ago_is_never_missed() -> None:
    """2**32 xids later the 32-bit xids repeat: 103 looks like one the earlier snapshot
    saw. In 64 bits the later snapshot's xmin is past everything it saw."""
    later = 1 << 32
    assert snap(f"{later + 100}:{later + 110}:{later + 103}").misses(snap("100:110:")) is None
    assert snap("100:110:103").misses(snap("100:110:")) == 103


def test_a_range_too_long_to_scan_counts_as_missed() -> None:
    # none of the 70,000 xids past this xmax was seen, but it stops looking at 65,536
    end = 100 + 70_000
    far = snap(f"100:{end}:" + ",".join(str(x) for x in range(100, end)))
    assert snap("100:100:").misses(far) == 100 + (1 << 16)
    assert snap(f"{end}:{end}:").misses(far) is None


def test_newer_xid() -> None:
    assert newer_xid(5, 4294967290)
    assert not newer_xid(4294967290, 5)
    assert newer_xid(101, 100)
