"""``Realtime``: the sync realtime client, a thin wrapper over :class:`AsyncRealtime`.

The threading model differs from the async client's, so this one is written by hand
rather than generated: the async driver runs on an event loop in a background thread
(``millpond-realtime``); blocking calls (``connect``, ``subscribe``, ``unsubscribe``,
``close``) submit to it and wait. Where the cache is updated and callbacks run:

- ``callbacks="update"`` (default): the driver queues what it receives, and the caller's
  thread applies it to the cache and runs the callbacks in :meth:`Realtime.update` (and
  in ``subscribe``/``unsubscribe``, so the cache reflects them when they return). The
  cache changes only in those calls, on that thread: no locking needed.
- ``callbacks="thread"``: the background thread applies each message and runs the
  callbacks at once. Reads from other threads see consistent snapshots (the cache
  takes a lock); callbacks must not block on the client (``subscribe`` from one raises).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

from ..backoff import Backoff
from ..models.modules import CallResult
from ._base import ClientConfig
from ._realtime_async import AsyncRealtime, CallbackMode
from ._realtime_core import (
    CallbackHandle,
    ConnectInfo,
    DisconnectInfo,
    Event,
    Input,
    RealtimeError,
    ScheduledCall,
    Tables,
    TableView,
)

T = TypeVar("T")


class Realtime:
    """A realtime connection to one database: subscriptions, the client cache, callbacks.

    Get one with ``rt = mp.realtime("owner/db")`` (connected). Then::

        rt.subscribe(["SELECT * FROM msgs WHERE room = 7"])
        rt.db.msgs.on_insert(lambda row: print(row.body))
        while running:
            rt.update(timeout=0.1)   # apply what arrived, run the callbacks, here
        rt.close()                   # or: with mp.realtime(...) as rt: ...

    With ``callbacks="thread"`` there is no ``update()`` to call: callbacks run on the
    client's thread as messages arrive. Otherwise as :class:`AsyncRealtime`: automatic
    reconnects with reconciliation, fatal close codes, the same callbacks and cache.
    """

    def __init__(
        self,
        config: ClientConfig,
        db: str,
        *,
        callbacks: CallbackMode | None = None,
        reconnect_backoff: Backoff | None = None,
        heartbeat_interval: float | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        _url: str | None = None,
    ) -> None:
        mode = callbacks or "update"
        if mode not in ("update", "thread"):
            raise ValueError(f"callbacks must be 'update' or 'thread', not {callbacks!r}")
        self.callbacks: CallbackMode = mode
        self._inbox: queue.SimpleQueue[Input] = queue.SimpleQueue()
        self._async = AsyncRealtime(
            config,
            db,
            reconnect_backoff=reconnect_backoff,
            heartbeat_interval=heartbeat_interval,
            timeout=timeout,
            max_retries=max_retries,
            _deliver=self._inbox.put if mode == "update" else None,
            _url=_url,
        )
        self._cache = self._async._cache
        self.database = db
        self.url = self._async.url
        self.db: Tables = self._async.db
        """The cache's tables as attributes: ``rt.db.msgs`` is ``rt.table("msgs")``."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncRealtime", type(self).__name__, 1)

    # -- the background loop ---------------------------------------------------------------

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RealtimeError("the realtime client is closed", code="closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=self._main, args=(loop,), name="millpond-realtime", daemon=True
                )
                self._loop, self._thread = loop, thread
                thread.start()
            return self._loop

    @staticmethod
    def _main(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the background loop and wait for it."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "a blocking realtime call from a callback on the realtime thread "
                "(callbacks='thread') would wait for itself; use callbacks='update', or "
                "make the call from another thread"
            )
        try:
            loop = self._start()
        except BaseException:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    # -- state -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the connection is up (``hello`` received)."""
        return self._async.connected

    @property
    def closed(self) -> bool:
        """Closed by ``close()``, or stopped for good by a fatal error."""
        return self._closed or self._async.closed

    @property
    def identity(self) -> str | None:
        """The connection's identity (the ``ctx.sender`` of its reducer calls), once
        connected."""
        return self._async.identity

    @property
    def connection_id(self) -> str | None:
        """The server's id of the current connection."""
        return self._async.connection_id

    @property
    def last_lsn(self) -> str | None:
        """The lsn of the last transaction applied to the cache."""
        return self._cache.last_lsn

    @property
    def queries(self) -> dict[str, str]:
        """The subscribed queries: query id → SQL, as subscribed."""
        return self._async.queries

    # -- cache and callbacks ------------------------------------------------------------------

    def table(self, name: str) -> TableView:
        """The cached table ``name`` (``schema.table`` outside ``public``) and its
        callbacks; usable before any subscription covers it."""
        return self._async.table(name)

    def on_subscription_applied(self, callback: Callable[[Event], Any]) -> CallbackHandle:
        """``callback(event)`` once a subscription's rows are in the cache (``event.kind``
        ``"subscribe"``), and after each reconnect's reconciliation (``"resubscribe"``)."""
        return self._async.on_subscription_applied(callback)

    def on_transaction(self, callback: Callable[[Event], Any]) -> CallbackHandle:
        """``callback(event)`` after each transaction's changes are in the cache and its
        row callbacks have run."""
        return self._async.on_transaction(callback)

    def on_reducer(self, reducer: str, callback: Callable[[Event], Any]) -> CallbackHandle:
        """``callback(event)`` for each transaction the reducer ``reducer`` made that
        changed rows of this client's queries (``event.reducer``: the call), after the
        row callbacks and before ``on_transaction``."""
        return self._async.on_reducer(reducer, callback)

    def on_connect(self, callback: Callable[[ConnectInfo], Any]) -> CallbackHandle:
        """``callback(info)`` on each (re)connection, before resubscribing."""
        return self._async.on_connect(callback)

    def on_disconnect(self, callback: Callable[[DisconnectInfo], Any]) -> CallbackHandle:
        """``callback(info)`` when a connection ends (``info.reconnecting`` says whether
        the client will try again)."""
        return self._async.on_disconnect(callback)

    def on_error(self, callback: Callable[[BaseException], Any]) -> CallbackHandle:
        """``callback(error)`` for connection errors, queries dropped because they could
        not be resubscribed, and exceptions raised by other callbacks."""
        return self._async.on_error(callback)

    def schedule(self, delay: float, callback: Callable[..., Any], *args: Any) -> ScheduledCall:
        """Run ``callback(*args)`` in ``delay`` seconds, where callbacks run (in
        ``update()``, or on the client's thread); ``.cancel()`` the result to call it off."""
        loop = self._start()
        call = ScheduledCall(callback, args)

        def cancel() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nothing to cancel
                loop.call_soon_threadsafe(self._async._cancel_timer, call)

        call._on_cancel = cancel
        loop.call_soon_threadsafe(self._async._schedule, call, delay)
        return call

    def update(self, timeout: float = 0.0) -> int:
        """Apply what arrived to the cache and run its callbacks, on this thread; waits
        up to ``timeout`` seconds for something if nothing is there. Returns how many
        messages (and other events) were processed. With ``callbacks="thread"``: 0."""
        try:
            item = self._inbox.get(timeout=timeout) if timeout > 0 else self._inbox.get_nowait()
        except queue.Empty:
            if timeout <= 0:
                # let the connection's thread have the GIL: in the loop ``while …:
                # rt.update()`` it would otherwise wait for a whole switch interval (5 ms)
                # to hand over each message
                time.sleep(0)
            return 0
        done = 0
        more = self._inbox.qsize()  # what is there now, not what keeps coming
        while True:
            self._cache.process(item)
            done += 1
            if done > more:
                return done
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return done

    # -- requests ------------------------------------------------------------------------------

    def connect(self) -> Self:
        """Connect, if not done yet, and wait for the server's ``hello``; on failure the
        client is closed and the error raised (see :meth:`AsyncRealtime.connect`)."""
        try:
            self._call(self._async.connect())
        except BaseException:
            self.close()
            raise
        return self

    def subscribe(self, queries: str | Iterable[str], *, timeout: float | None = None) -> list[str]:
        """Subscribe to ``queries``; returns their query ids once their rows are in the
        cache (in ``"update"`` mode it runs ``update()`` first). Raises
        :class:`SubscriptionError` if the server refuses them."""
        ids = self._call(self._async.subscribe(queries, timeout=timeout))
        if self.callbacks == "update":
            self.update()
        return ids

    def call(
        self, reducer: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> CallResult:
        """Call a reducer on this connection; the outcome once it committed (rows it
        changed that this connection subscribed to are in the cache first; in
        ``"update"`` mode it runs ``update()`` first). :class:`ReducerError` if it did
        not commit; :class:`RealtimeError` ``call_outcome_unknown`` if the connection was
        lost before the outcome arrived."""
        result = self._call(self._async.call(reducer, *args, timeout=timeout, **kwargs))
        if self.callbacks == "update":
            self.update()
        return result

    def unsubscribe(self, queries: str | Iterable[str], *, timeout: float | None = None) -> None:
        """Unsubscribe from queries given by id or SQL text; the cache then drops the
        rows no remaining query matches."""
        self._call(self._async.unsubscribe(queries, timeout=timeout))
        if self.callbacks == "update":
            self.update()

    def close(self) -> None:
        """Close the connection and stop the background thread. The cache stays
        readable; in ``"update"`` mode, ``update()`` still runs what was queued."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if threading.current_thread() is thread:  # from a callback: finish in the background
            loop.create_task(self._shutdown(loop))
            return
        asyncio.run_coroutine_threadsafe(self._async.aclose(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    async def _shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        await self._async.aclose()
        loop.stop()

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
