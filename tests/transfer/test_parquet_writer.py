"""The Parquet export's writer thread (``exporter._Behind``): items are written in order,
at most a few behind the reader, the last one before the block ends; a failed write is
raised in the caller's thread and nothing after it is written."""

from __future__ import annotations

import threading

import pytest

from _waiting import wait_until
from millpond.server.transfer.exporter import _BEHIND, _Behind


def test_items_are_written_in_order_and_all_before_the_block_ends() -> None:
    written: list[int] = []
    with _Behind(written.append) as write:
        for i in range(100):
            write(i)
    assert written == list(range(100))


def test_the_writer_is_at_most_a_few_items_behind() -> None:
    release = threading.Event()
    started = threading.Event()

    def slow(item: int) -> None:
        started.set()
        release.wait(10)

    queued: list[int] = []
    done = threading.Event()
    behind = _Behind(slow)

    def produce() -> None:
        with behind as write:
            for i in range(_BEHIND + 3):
                write(i)
                queued.append(i)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    assert started.wait(10)
    # one item in the write, _BEHIND waiting: the producer is held at the next one
    wait_until(lambda: behind._queue.full() and len(queued) == _BEHIND + 1)
    assert not done.is_set()
    release.set()
    producer.join(10)
    assert done.is_set() and len(queued) == _BEHIND + 3


def test_a_failed_write_is_raised_to_the_caller_and_stops_the_writing() -> None:
    written: list[int] = []

    def write_or_fail(item: int) -> None:
        if item == 3:
            raise ValueError("cannot encode item 3")
        written.append(item)

    with pytest.raises(ValueError, match="item 3"), _Behind(write_or_fail) as write:
        for i in range(50):
            write(i)
    assert written == [0, 1, 2]


def test_an_error_of_the_caller_wins_over_none_and_the_thread_ends() -> None:
    with pytest.raises(KeyError), _Behind(lambda item: None) as write:
        write(1)
        raise KeyError("the reader failed")
    assert not any(t.name == "parquet-writer" for t in threading.enumerate())
