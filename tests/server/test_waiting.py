"""The waits that loops use never swallow a cancellation, even one that arrives in the
same loop iteration as what they wait for (3.11's ``asyncio.wait_for`` returns the result
then — checked: every time in this interleaving — and a stopping server waited for its
replication stream for ever)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from millpond.server.waiting import wait_event, wait_readable


async def _cancel_as_it_completes(waiting: asyncio.Task[bool], complete: object) -> None:
    await asyncio.sleep(0)  # the task is waiting now
    assert callable(complete)
    complete()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


def test_an_event_set_as_the_wait_is_cancelled_still_cancels() -> None:
    async def main() -> None:
        for _ in range(20):
            event = asyncio.Event()
            task = asyncio.create_task(wait_event(event, 10))
            await _cancel_as_it_completes(task, event.set)

    asyncio.run(main())


def test_a_socket_readable_as_the_wait_is_cancelled_still_cancels() -> None:
    async def main() -> None:
        a, b = socket.socketpair()
        with a, b:
            for _ in range(20):
                task = asyncio.create_task(wait_readable(a.fileno(), 10))
                await _cancel_as_it_completes(task, lambda: b.send(b"x"))
                a.recv(16)

    asyncio.run(main())


def test_timeouts_and_wakeups() -> None:
    async def main() -> None:
        event = asyncio.Event()
        assert await wait_event(event, 0.01) is False
        asyncio.get_running_loop().call_later(0.01, event.set)
        assert await wait_event(event, 10) is True
        a, b = socket.socketpair()
        with a, b:
            assert await wait_readable(a.fileno(), 0.01) is False
            b.send(b"x")
            assert await wait_readable(a.fileno(), 10) is True

    asyncio.run(main())
