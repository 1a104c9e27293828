"""The workers that send a client's identify/track events: a daemon thread for
``Millpond`` (:class:`EventWorker`), an asyncio task for ``AsyncMillpond``
(:class:`AsyncEventWorker`). Written by hand (a token rewrite cannot turn a task into a
thread); all the deciding is in :class:`~._events.EventQueue`, so each worker only asks
it what to do, sends, waits, and reports.

* Started lazily, at the first event; woken when an event arrives or a flush asks.
* ``flush(timeout)`` waits until everything buffered before the call has left the buffer,
  or the timeout passes; ``close()`` / ``aclose()`` flush (``close_timeout``), then drop what
  is left (counted). The sync clients still open at interpreter exit are flushed by an
  ``atexit`` hook that holds them weakly, so clients can still be garbage-collected (the
  thread holds its client only while sending). An event loop cannot be run at exit:
  ``await amp.aclose()`` (or ``async with``) flushes the async client.
* Fork: a child process forgets the parent's worker (its thread or task does not exist
  there) and the parent's buffer: events buffered before ``fork()`` are the parent's to
  send; the child starts its own worker at its first event, with counters from zero.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable

from ..models.flags import EventsAccepted
from ._events import Event, EventQueue, EventStats, Wait

_log = logging.getLogger("millpond.events")

_IDLE = 5.0
"""Longest sleep of an idle worker thread, after which it checks its client still exists."""

_sync_workers: weakref.WeakSet[EventWorker] = weakref.WeakSet()
_async_workers: weakref.WeakSet[AsyncEventWorker] = weakref.WeakSet()


def _settled_cleanly(queue: EventQueue, mark: int, before: EventStats) -> bool:
    after = queue.stats()
    return queue.settled(mark) and after.failed == before.failed and after.dropped == before.dropped


# -- sync: a thread ----------------------------------------------------------------------------


class EventWorker:
    """Sends a sync client's events from a daemon thread (``millpond-events``)."""

    def __init__(self, queue: EventQueue, send: Callable[[list[Event]], EventsAccepted]) -> None:
        self._queue = queue
        self._send = send
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        _sync_workers.add(self)
        weakref.finalize(self, _notify, self._cond)  # a collected client's thread ends now

    def stats(self) -> EventStats:
        with self._cond:
            return self._queue.stats()

    def push(self, event: Event) -> None:
        with self._cond:
            if not self._queue.push(event, time.monotonic()):
                return
            self._cond.notify_all()
        self._start()

    def flush(self, timeout: float | None) -> bool:
        """Wait until every event buffered before the call was sent (True), or dropped or
        refused, or ``timeout`` seconds passed (False). ``None``: no time limit."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            mark = self._queue.request_flush()
            before = self._queue.stats()
            if self._queue.settled(mark):
                return _settled_cleanly(self._queue, mark, before)
            self._cond.notify_all()
        threaded = self._start()
        ref = weakref.ref(self)
        with self._cond:
            while not self._queue.settled(mark):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if threaded:
                    self._cond.wait(remaining)
                else:  # no thread can be started (interpreter shutdown): send from here
                    self._cond.release()
                    try:
                        _step(ref, self._cond, remaining)
                    finally:
                        self._cond.acquire()
            return _settled_cleanly(self._queue, mark, before)

    def close(self) -> None:
        """Flush (at most ``close_timeout`` seconds), then drop what is left and stop."""
        timeout = self._queue.options.close_timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            idle = self._queue.idle
        if not idle:
            self.flush(timeout)
        with self._cond:
            self._queue.close()
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(deadline - time.monotonic(), 1.0))

    def _start(self) -> bool:
        """Make sure the thread runs; False if none can (closed, or interpreter exit)."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return True
            if self._queue.closed:
                return False
            thread = threading.Thread(
                target=_run,
                args=(weakref.ref(self), self._cond),
                name="millpond-events",
                daemon=True,
            )
            try:
                thread.start()
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                return False
            self._thread = thread
            return True

    def _after_fork(self) -> None:
        self._cond = threading.Condition()
        self._thread = None
        self._queue = self._queue.fresh()


def _notify(cond: threading.Condition) -> None:
    with cond:
        cond.notify_all()


def _run(ref: weakref.ref[EventWorker], cond: threading.Condition) -> None:
    while _step(ref, cond, None):
        pass


def _step(ref: weakref.ref[EventWorker], cond: threading.Condition, max_wait: float | None) -> bool:
    """One turn of the worker: send a batch, or wait. False: stop (client gone, or closed
    with nothing left). Holds the client only while sending."""
    with cond:
        worker = ref()
        if worker is None or worker._cond is not cond:
            return False
        queue = worker._queue
        action = queue.next_action(time.monotonic())
        if isinstance(action, Wait):
            if queue.closed and queue.idle:
                return False
            del worker
            waits = [w for w in (action.seconds, max_wait) if w is not None]
            cond.wait(min(waits, default=_IDLE))
            return True
        send = worker._send
        del worker
    try:
        answer = send(action.events)
    except Exception as exc:
        with cond:
            queue.failed(exc, time.monotonic())
            cond.notify_all()
    else:
        with cond:
            queue.sent(answer)
            cond.notify_all()
    return True


@atexit.register
def _flush_at_exit() -> None:
    for worker in list(_sync_workers):
        try:
            if not worker.stats().pending:
                continue
            if not worker.flush(worker._queue.options.close_timeout):
                _log.warning("at exit: events not all sent (%s)", worker.stats())
        except Exception:  # pragma: no cover - never fail the interpreter's exit
            _log.exception("at exit: flushing events failed")


# -- async: a task ---------------------------------------------------------------------------


class AsyncEventWorker:
    """Sends an async client's events from a task on the event loop of its first event."""

    def __init__(
        self, queue: EventQueue, send: Callable[[list[Event]], Awaitable[EventsAccepted]]
    ) -> None:
        self._queue = queue
        self._send = send
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        _async_workers.add(self)

    def stats(self) -> EventStats:
        return self._queue.stats()

    def push(self, event: Event) -> None:
        """Buffer ``event`` (call it from a coroutine: the task starts on its loop)."""
        if self._queue.push(event, time.monotonic()):
            self._start()
            self._wake.set()

    async def flush(self, timeout: float | None) -> bool:
        """Like ``EventWorker.flush``."""
        queue = self._queue
        mark = queue.request_flush()
        before = queue.stats()
        if queue.settled(mark):
            return _settled_cleanly(queue, mark, before)
        self._start()
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not queue.settled(mark):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)
        return _settled_cleanly(queue, mark, before)

    async def aclose(self) -> None:
        """Flush (at most ``close_timeout`` seconds), then drop what is left and stop."""
        timeout = self._queue.options.close_timeout
        if not self._queue.idle:
            await self.flush(timeout)
        self._queue.close()
        task, self._task = self._task, None
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            return
        self._wake.set()  # with nothing left it returns; mid-send it finishes that send
        await asyncio.wait({task}, timeout=max(timeout, 1.0))
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._task
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        if self._queue.closed:
            return
        # a new loop (or the first): fresh events, bound to it
        self._wake, self._progress = asyncio.Event(), asyncio.Event()
        self._task = loop.create_task(self._run(), name="millpond-events")

    async def _run(self) -> None:
        wake, progress = self._wake, self._progress
        while True:
            queue = self._queue
            wake.clear()
            action = queue.next_action(time.monotonic())
            if isinstance(action, Wait):
                if queue.closed and queue.idle:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), action.seconds)
                continue
            try:
                answer = await self._send(action.events)
            except asyncio.CancelledError as exc:
                queue.failed(exc, time.monotonic())
                progress.set()
                raise
            except Exception as exc:
                queue.failed(exc, time.monotonic())
            else:
                queue.sent(answer)
            progress.set()

    def _after_fork(self) -> None:
        self._task = None
        self._wake, self._progress = asyncio.Event(), asyncio.Event()
        self._queue = self._queue.fresh()


def _reset_after_fork() -> None:
    for worker in list(_sync_workers):
        worker._after_fork()
    for async_worker in list(_async_workers):
        async_worker._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)
