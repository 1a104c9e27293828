"""``AsyncLiveFlags``: local flag evaluation for the async client (see :mod:`._flags_live`).

One task on the client's event loop owns an :class:`AsyncRealtime`: it connects,
subscribes to the environment's rulesets, then turns each :class:`Watch` into
subscriptions. Callbacks run on the loop, so the mirror changes between awaits only.
It starts at the first check made inside a running loop. After ``fork()`` a child forgets
the parent's stream and starts its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref

from ._base import ClientConfig
from ._flags_live import LiveBase, Watch, attach
from ._flags_live_sync import stream_url
from ._realtime_async import AsyncRealtime

_log = logging.getLogger("millpond.flags")

_live: weakref.WeakSet[AsyncLiveFlags] = weakref.WeakSet()


class AsyncLiveFlags(LiveBase):
    """Implements the async client's ``LocalFlags`` from the live stream."""

    _rt: AsyncRealtime | None

    def __init__(self, config: ClientConfig) -> None:
        self._config = config
        self._queue: asyncio.Queue[Watch | None] | None = None
        self._task: asyncio.Task[None] | None = None
        super().__init__()
        _live.add(self)

    def start(self) -> None:
        """Start the stream on the running loop (once; again after a fork)."""
        if self._task is not None or self._closed or self.failed is not None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # not in a loop: nothing to run the stream on (checks go to the server)
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="millpond-flags")

    async def wait_ready(self, timeout: float = 10.0) -> bool:
        self.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self.mirror.ready and self.failed is None:
                    await asyncio.sleep(0.01)
        return self.mirror.ready

    async def aclose(self) -> None:
        self._closed = True
        if self._queue is not None:
            self._queue.put_nowait(None)
        if self._rt is not None:
            await self._rt.aclose()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self.mirror.reset()

    def _after_fork(self) -> None:
        self._queue = None
        self._rt = None
        self._task = None
        self.mirror.reset()

    def _enqueue(self, watch: Watch) -> None:
        if self._queue is not None:
            self._queue.put_nowait(watch)

    async def _run(self) -> None:
        url = stream_url(self._config)
        rt = AsyncRealtime(self._config, "flags/stream", _url=url)
        mirror = self.mirror
        attach(rt, mirror, self._failed)
        self._rt = rt
        try:
            await rt.connect()
            await rt.subscribe([mirror.ruleset_query()])
            mirror.load_rulesets(rt.table("flag_rulesets").iter())
        except Exception as exc:
            self._failed(exc)
            return
        assert self._queue is not None
        while (watch := await self._queue.get()) is not None:
            try:
                await rt.subscribe(mirror.queries(watch))
                mirror.watched(watch)
            except Exception as exc:
                mirror.watch_failed(watch)
                _log.warning("cannot watch %s for local flag checks: %s", watch, exc)
                if rt.closed:
                    return


def _reset_after_fork() -> None:
    for live in list(_live):
        live._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)
