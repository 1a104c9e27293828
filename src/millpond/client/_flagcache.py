"""Caching of flag checks in the SDK, as the Schematic SDK does it: a list of
:class:`CacheProvider` consulted in order (``cache_providers=[LocalCache(...)]``; ``[]``
disables caching), plus the sans-I/O decisions every flag call shares (the cache key, the
answer when nothing else can answer).

The cache holds whole :class:`FlagCheck` results keyed by environment, flag and the
company's and user's keys, so ``check_flag`` and ``check_flag_details`` share entries. A
cached result can be up to ``ttl_ms`` old: use local evaluation
(``local_evaluation=True``) where a change must show at once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Protocol

from ..models.flags import FlagCheck

DEFAULT_MAX_ENTRIES = 1000
DEFAULT_TTL_MS = 5000


class CacheProvider(Protocol):
    """Where checks are cached: anything with ``get`` and ``set`` (a shared cache such as
    Redis can implement it)."""

    def get(self, key: str) -> FlagCheck | None: ...

    def set(self, key: str, value: FlagCheck, ttl_override: int | None = None) -> None: ...


class LocalCache:
    """An in-process LRU cache with a time to live, safe to share between threads."""

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl_ms: int = DEFAULT_TTL_MS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 0 or ttl_ms < 0:
            raise ValueError("max_entries and ttl_ms must be >= 0")
        self.max_entries = max_entries
        self.ttl_ms = ttl_ms
        self._clock = clock
        self._entries: OrderedDict[str, tuple[FlagCheck, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalCache(max_entries={self.max_entries}, ttl_ms={self.ttl_ms})"

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> FlagCheck | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() >= entry[1]:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def set(self, key: str, value: FlagCheck, ttl_override: int | None = None) -> None:
        if self.max_entries == 0:
            return
        ttl = self.ttl_ms if ttl_override is None else ttl_override
        with self._lock:
            self._entries[key] = (value, self._clock() + ttl / 1000)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def cache_key(
    environment: str | None,
    flag: str,
    company: Mapping[str, str] | None,
    user: Mapping[str, str] | None,
) -> str:
    """One string per (environment, flag, company keys, user keys), keys sorted."""

    def keys(entity: Mapping[str, str] | None) -> str:
        return "&".join(f"{k}={v}" for k, v in sorted((entity or {}).items()))

    return f"{environment or ''}\x1f{flag}\x1f{keys(company)}\x1f{keys(user)}"


def default_check(
    flag: str, defaults: Mapping[str, bool], error: BaseException | None = None
) -> FlagCheck:
    """The answer when neither cache, local evaluation nor the server can give one: the
    configured default (False without one), reason ``ERROR`` with what went wrong, or
    ``DEFAULT`` when offline."""
    return FlagCheck(
        flag=flag,
        value=bool(defaults.get(flag, False)),
        reason="ERROR" if error is not None else "DEFAULT",
        error=None if error is None else f"{type(error).__name__}: {error}",
    )
