"""A small read-through cache whose entries die with every change notification.

Entries are valid only while the :class:`Invalidation` listener is live and its
generation has not moved since the entry was read from Postgres, and for at most
``ttl`` seconds. Only positive answers are cached (a key that exists, a database the
caller can reach): a miss always asks Postgres.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from .notifications import Invalidation


class GenerationCache:
    def __init__(
        self, invalidation: Invalidation | None, ttl: float = 30.0, max_entries: int = 10_000
    ) -> None:
        self.invalidation = invalidation
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[Hashable, tuple[Any, int, float]] = {}

    def _usable(self) -> bool:
        return self.invalidation is not None and self.invalidation.live

    async def get_or_load(self, key: Hashable, load: Callable[[], Awaitable[Any]]) -> Any:
        inv = self.invalidation
        if inv is None or not inv.live:
            return await load()
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and entry[1] == inv.generation and entry[2] > now:
            return entry[0]
        generation = inv.generation
        value = await load()
        if value is not None and inv.live and inv.generation == generation:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (value, generation, now + self.ttl)
        return value
