"""Fault-injection seams: named points in the realtime server and client where a test
can make the code pause or delay, to force one interleaving on purpose.

Production code calls :func:`hit` (in async code) or :func:`hit_sync` at a named point;
with no hook installed that is one dict lookup on an empty dict. A test installs a hook
with :func:`installed` (a context manager) or :func:`install`; the hook gets the point's
arguments and may be a coroutine function (awaited at an async point) or a plain one.

Points (``docs/realtime-protocol.md`` tells what each step guarantees):

- ``hub.before_snapshot(hub, client)``: a subscribe registered its queries and is about
  to read the initial rows.
- ``hub.after_snapshot(hub, client, snapshot)``: the rows are read (``snapshot``:
  :class:`~millpond.server.realtime.snapshot.Snapshot`), not yet released.
- ``hub.snapshot_retry(hub, client, snapshot, reason)``: that snapshot was unusable and
  is read again.
- ``hub.before_dispatch(hub, tx)``: a transaction came off the WAL stream and is about
  to be fanned out (async: a hook can hold the stream here).
- ``client.before_input(cache, item)``: the client cache is about to apply one input
  (a transaction, initial rows, a reconciliation step); sync, on the thread that applies.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

Hook = Callable[..., Any]

_hooks: dict[str, Hook] = {}


def install(point: str, hook: Hook) -> None:
    _hooks[point] = hook


def remove(point: str) -> None:
    _hooks.pop(point, None)


@contextlib.contextmanager
def installed(point: str, hook: Hook) -> Iterator[None]:
    install(point, hook)
    try:
        yield
    finally:
        remove(point)


async def hit(point: str, *args: Any) -> None:
    """An async point: run (and await) its hook, if one is installed."""
    if _hooks:
        hook = _hooks.get(point)
        if hook is not None:
            result = hook(*args)
            if inspect.isawaitable(result):
                await result


def hit_sync(point: str, *args: Any) -> None:
    """A sync point: run its hook, if one is installed."""
    if _hooks:
        hook = _hooks.get(point)
        if hook is not None:
            hook(*args)
