"""The send buffer: bounded in bytes, except that one message alone may be larger (a
subscription's initial rows), and a backlog past the bound drops everything."""

from __future__ import annotations

import asyncio

from millpond.server.realtime.outbox import Outbox


def test_one_message_larger_than_the_buffer_still_goes_out() -> None:
    async def main() -> None:
        outbox = Outbox(max_bytes=10)
        assert outbox.put("x" * 50)  # alone: accepted
        assert not outbox.put("y")  # behind it: the backlog is past the bound
        assert outbox.overflowed and outbox.finished.is_set()
        assert await outbox.get() is None  # dropped, the connection ends

    asyncio.run(main())


def test_a_backlog_within_the_bound_is_kept_in_order() -> None:
    async def main() -> None:
        outbox = Outbox(max_bytes=10)
        assert outbox.put("abcd") and outbox.put("efgh")
        assert not outbox.overflowed and outbox.pending_bytes == 8
        assert [await outbox.get(), await outbox.get()] == ["abcd", "efgh"]
        assert outbox.put("x" * 50)  # drained: a big one fits again
        assert await outbox.get() == "x" * 50

    asyncio.run(main())
