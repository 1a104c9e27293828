"""``LiveFlags``: local flag evaluation for the sync client (see :mod:`._flags_live`).

A background thread (``millpond-flags``) owns the realtime client: it connects, subscribes
to the environment's rulesets, then turns each :class:`Watch` into subscriptions. The
realtime client runs its callbacks on its own thread (``callbacks="thread"``), so the
mirror stays current without anyone calling ``update()``; checks read it from any thread.

Fork-safe: a child process forgets the parent's stream (its threads do not exist there)
and starts its own at its first check, instead of serving a frozen snapshot.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import weakref
from urllib.parse import quote

from ._base import ClientConfig
from ._flags_live import LiveBase, Watch, attach
from ._realtime_sync import Realtime

_log = logging.getLogger("millpond.flags")

_live: weakref.WeakSet[LiveFlags] = weakref.WeakSet()


def stream_url(config: ClientConfig) -> str:
    """``http(s)://host/prefix`` → ``ws(s)://host/prefix/v1/flags/stream[?environment=…]``."""
    scheme, _, rest = config.base_url.partition("://")
    url = f"{'wss' if scheme == 'https' else 'ws'}://{rest.rstrip('/')}/v1/flags/stream"
    if config.environment:
        url += "?environment=" + quote(config.environment, safe="")
    return url


class LiveFlags(LiveBase):
    """Implements the client's ``LocalFlags`` from the live stream."""

    _rt: Realtime | None

    def __init__(self, config: ClientConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Watch | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        super().__init__()
        _live.add(self)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the stream in the background (once; again after a fork)."""
        if self._thread is not None or self._closed or self.failed is not None:
            return
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="millpond-flags", daemon=True
                )
                self._thread.start()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Start if needed and wait until the rulesets are loaded (tests, warm-up)."""
        self.start()
        deadline = time.monotonic() + timeout
        while not self.mirror.ready and self.failed is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.mirror.ready

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread, rt = self._thread, self._rt
        self._queue.put(None)
        if rt is not None:
            rt.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self.mirror.reset()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._queue = queue.SimpleQueue()
        self._rt = None  # the parent's: its thread is not here; never close its socket
        self._thread = None
        self.mirror.reset()

    # -- the background thread ----------------------------------------------------------------

    def _enqueue(self, watch: Watch) -> None:
        self._queue.put(watch)

    def _run(self) -> None:
        rt = Realtime(
            self._config, "flags/stream", callbacks="thread", _url=stream_url(self._config)
        )
        mirror = self.mirror
        attach(rt, mirror, self._failed)
        self._rt = rt
        try:
            rt.connect()
            rt.subscribe([mirror.ruleset_query()])
            mirror.load_rulesets(rt.table("flag_rulesets").iter())
        except Exception as exc:
            self._failed(exc)
            return
        while (watch := self._queue.get()) is not None:
            try:
                rt.subscribe(mirror.queries(watch))
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
