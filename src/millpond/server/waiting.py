"""Waiting with a timeout without losing a cancellation.

On Python 3.11, ``asyncio.wait_for`` returns the result instead of raising
``CancelledError`` when the awaited thing completes in the same loop iteration as the
cancellation: a loop that waits that way (a replication stream woken by every readable
socket) can swallow the cancel meant to stop it, and whoever awaits its end waits for
ever. These wait on a plain future with a timer, so a cancel always ends them.
"""

from __future__ import annotations

import asyncio


async def wait_readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` became readable within ``timeout`` s."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[bool] = loop.create_future()

    def settle(value: bool) -> None:
        if not ready.done():
            ready.set_result(value)

    loop.add_reader(fd, settle, True)
    timer = loop.call_later(timeout, settle, False)
    try:
        return await ready
    finally:
        timer.cancel()
        loop.remove_reader(fd)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Whether ``event`` was set within ``timeout`` s (``asyncio.timeout`` tells its own
    expiry from a cancellation, unlike 3.11's ``wait_for``)."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
