"""A connection's send buffer, bounded in bytes.

The change stream never waits for a client: ``put`` is synchronous and never blocks.
When a client falls so far behind that its unsent messages exceed ``max_bytes`` (one
message alone may be larger), the outbox drops everything and marks itself
``overflowed``; the connection's writer then
closes the socket with ``slow_consumer``. Server memory per connection stays bounded.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Outbox:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.overflowed = False
        self.closed = False
        self.close_code = 1000
        self.close_reason = ""
        self._queue: deque[str] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self.finished = asyncio.Event()
        """Set once the outbox is closed or overflowed: the connection must end."""

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def put(self, message: str) -> bool:
        """Queue a message; False (and overflowed) if it does not fit."""
        if self.closed or self.overflowed:
            return False
        size = len(message)
        # one message may be larger than the whole buffer (a subscription's initial rows):
        # it is in memory already, and refusing it would refuse that subscription forever
        if self._queue and self._bytes + size > self.max_bytes:
            self.overflowed = True
            self._queue.clear()
            self._bytes = 0
            self._ready.set()
            self.finished.set()
            return False
        self._queue.append(message)
        self._bytes += size
        self._ready.set()
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Stop sending; the writer closes the socket with ``code`` and ``reason``."""
        if not self.closed:
            self.close_code, self.close_reason = code, reason
        self.closed = True
        self._ready.set()
        self.finished.set()

    async def get(self) -> str | None:
        """The next message; None once the outbox is closed or overflowed."""
        while not self._queue:
            if self.closed or self.overflowed:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self.overflowed:
            return None
        message = self._queue.popleft()
        self._bytes -= len(message)
        return message
