"""``AsyncRealtime``: the asyncio driver of the realtime client.

It moves messages between a WebSocket (the ``websockets`` library) and the sans-I/O
:class:`~._realtime_core.Session`, feeds the session's inputs to the
:class:`~._realtime_core.Cache` (which runs the callbacks), answers and sends heartbeats,
and reconnects with :class:`millpond.backoff.Backoff` until told to stop. Everything
runs on one event loop: the one that called :meth:`AsyncRealtime.connect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias

from websockets.exceptions import ConnectionClosed

from ..backoff import Backoff
from ..errors import ConnectError, error_for_status
from ..errors import TimeoutError as RequestTimeoutError
from ..models.modules import CallResult
from ._base import USER_AGENT, ClientConfig, segment, split_database
from ._realtime_core import (
    SUBPROTOCOL,
    Cache,
    CallbackHandle,
    ConnectInfo,
    Disconnected,
    DisconnectInfo,
    Event,
    Failed,
    Input,
    Job,
    Output,
    RealtimeError,
    Scheduled,
    ScheduledCall,
    Session,
    Tables,
    TableView,
)

CallbackMode: TypeAlias = Literal["update", "thread"]
"""Where the sync client runs callbacks: ``"update"`` (queued until ``rt.update()``, on
the caller's thread) or ``"thread"`` (on the client's background thread)."""

DEFAULT_TIMEOUT = 30.0
"""Seconds to connect and to wait for an answer, when the client has no timeout."""
DEFAULT_HEARTBEAT = 15.0
"""Seconds between heartbeats when the server's ``hello`` does not say."""
SILENCE_FACTOR = 3
"""The connection is dead after this many heartbeat intervals without a message."""
STABLE_SECONDS = 5.0
"""A connection that lasted this long resets the reconnect backoff."""
CLOSE_TIMEOUT = 2.0


def realtime_url(base_url: str, db: str) -> str:
    """``http(s)://host/prefix`` → ``ws(s)://host/prefix/v1/realtime/{owner}/{name}``."""
    owner, name = split_database(db)
    scheme, sep, rest = base_url.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {base_url!r}")
    ws = "wss" if scheme == "https" else "ws"
    return f"{ws}://{rest.rstrip('/')}/v1/realtime/{segment(owner)}/{segment(name)}"


def _websocket_client() -> tuple[Callable[..., Any], str]:
    """``connect`` of the asyncio client, and the name of its extra-headers argument."""
    try:  # websockets >= 13
        module = importlib.import_module("websockets.asyncio.client")
        return module.connect, "additional_headers"
    except ImportError:  # websockets 12: the legacy client
        module = importlib.import_module("websockets.client")
        return module.connect, "extra_headers"


_CONNECT, _HEADERS_ARG = _websocket_client()


def _status(error: BaseException) -> int | None:
    """The HTTP status of a refused WebSocket handshake, if that is what ``error`` is."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status is None:
        status = getattr(error, "status_code", None)
    return status if isinstance(status, int) else None


def _decode(data: str | bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(data)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


class AsyncRealtime:
    """A realtime connection to one database: subscriptions, the client cache, callbacks.

    Get one with ``rt = await amp.realtime("owner/db")`` (connected). Then::

        await rt.subscribe(["SELECT * FROM msgs WHERE room = 7"])
        rt.db.msgs.on_insert(lambda row: print(row.body))
        print(rt.db.msgs.count())
        ...
        await rt.aclose()            # or: async with rt: ...

    Callbacks are plain functions run on the event loop, after the cache holds the
    whole transaction (or subscription). The client reconnects by itself after a lost
    connection (backoff ``reconnect_backoff``, at most ``max_retries`` failed attempts
    in a row; None: forever), resubscribes, and reconciles the cache with what changed
    meanwhile. Close codes 4001 (unauthorized), 4004 (no such database) and 4012
    (realtime unavailable) stop it for good: ``on_error`` gets a :class:`RealtimeError`,
    and so does every pending call.
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
        _deliver: Callable[[Input], None] | None = None,
        _url: str | None = None,
    ) -> None:
        if callbacks is not None:
            raise ValueError(
                "callbacks= is for the sync client; AsyncRealtime runs callbacks on its loop"
            )
        if max_retries is not None and max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {max_retries}")
        if heartbeat_interval is not None and not heartbeat_interval > 0:
            raise ValueError(f"heartbeat_interval must be > 0, not {heartbeat_interval}")
        self.database = db
        self.url = _url or realtime_url(config.base_url, db)
        self._headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        default = config.timeout.connect
        self._timeout: float | None = timeout if timeout is not None else default
        self._max_retries = max_retries
        backoff = reconnect_backoff if reconnect_backoff is not None else Backoff()
        self._backoff = dataclasses.replace(backoff)  # our own attempt count
        self._heartbeat = heartbeat_interval
        self._session = Session()
        self._cache = Cache()
        self._deliver: Callable[[Input], None] = _deliver or self._cache.process
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._ws: Any = None
        self._closed = False
        self._timers: dict[ScheduledCall, asyncio.TimerHandle] = {}
        self._last_error: BaseException | None = None
        self.db = Tables(self._cache)
        """The cache's tables as attributes: ``rt.db.msgs`` is ``rt.table("msgs")``."""

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._session.state
        return f"<{type(self).__name__} {self.database!r} {state}>"

    # -- state -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the connection is up (``hello`` received)."""
        return self._session.state == "open"

    @property
    def closed(self) -> bool:
        """Closed by ``aclose()``, or stopped for good by a fatal error."""
        return self._closed or self._session.state == "closed"

    @property
    def identity(self) -> str | None:
        """The connection's identity (the ``ctx.sender`` of its reducer calls), once
        connected."""
        return self._session.identity

    @property
    def connection_id(self) -> str | None:
        """The server's id of the current connection."""
        return self._session.connection_id

    @property
    def last_lsn(self) -> str | None:
        """The lsn of the last transaction applied to the cache."""
        return self._cache.last_lsn

    @property
    def queries(self) -> dict[str, str]:
        """The subscribed queries: query id → SQL, as subscribed."""
        return {qid: entry.sql for qid, entry in list(self._session.queries.items())}

    # -- cache and callbacks ------------------------------------------------------------------

    def table(self, name: str) -> TableView:
        """The cached table ``name`` (``schema.table`` outside ``public``) and its
        callbacks; usable before any subscription covers it."""
        return TableView(self._cache, name)

    def on_subscription_applied(self, callback: Callable[[Event], Any]) -> CallbackHandle:
        """``callback(event)`` once a subscription's rows are in the cache (``event.kind``
        ``"subscribe"``), and after each reconnect's reconciliation (``"resubscribe"``)."""
        return self._cache.add_callback("subscription_applied", callback)

    def on_transaction(self, callback: Callable[[Event], Any]) -> CallbackHandle:
        """``callback(event)`` after each transaction's changes are in the cache and its
        row callbacks have run."""
        return self._cache.add_callback("transaction", callback)

    def on_reducer(self, reducer: str, callback: Callable[[Event], Any]) -> CallbackHandle:
        """``callback(event)`` for each transaction the reducer ``reducer`` made that
        changed rows of this client's queries (``event.reducer``: the call), after the
        row callbacks and before ``on_transaction``."""
        return self._cache.add_reducer_callback(reducer, callback)

    def on_connect(self, callback: Callable[[ConnectInfo], Any]) -> CallbackHandle:
        """``callback(info)`` on each (re)connection, before resubscribing."""
        return self._cache.add_callback("connect", callback)

    def on_disconnect(self, callback: Callable[[DisconnectInfo], Any]) -> CallbackHandle:
        """``callback(info)`` when a connection ends (``info.reconnecting`` says whether
        the client will try again)."""
        return self._cache.add_callback("disconnect", callback)

    def on_error(self, callback: Callable[[BaseException], Any]) -> CallbackHandle:
        """``callback(error)`` for connection errors (a :class:`RealtimeError`), a
        query dropped because it could not be resubscribed (:class:`SubscriptionError`),
        and exceptions raised by other callbacks. Without one, errors are logged."""
        return self._cache.add_callback("error", callback)

    def schedule(self, delay: float, callback: Callable[..., Any], *args: Any) -> ScheduledCall:
        """Run ``callback(*args)`` in ``delay`` seconds, where callbacks run (as the SDK
        of SpacetimeDB's ``schedule_event``); ``.cancel()`` the result to call it off."""
        call = ScheduledCall(callback, args)
        self._schedule(call, delay)
        return call

    def _schedule(self, call: ScheduledCall, delay: float) -> None:
        """(On the loop.) Start ``call``'s timer."""
        if self._closed or call.cancelled:
            return
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        self._timers[call] = loop.call_later(max(0.0, delay), self._fire, call)
        if call._on_cancel is None:
            call._on_cancel = lambda: self._cancel_timer(call)

    def _fire(self, call: ScheduledCall) -> None:
        self._timers.pop(call, None)
        if not call.cancelled:
            self._deliver(Scheduled(call))

    def _cancel_timer(self, call: ScheduledCall) -> None:
        handle = self._timers.pop(call, None)
        if handle is not None:
            handle.cancel()

    # -- requests ------------------------------------------------------------------------------

    async def connect(self) -> Self:
        """Connect, if not done yet, and wait for the server's ``hello`` (retrying while
        the server cannot be reached, up to the timeout). On failure the client is
        closed and the error raised: :class:`RealtimeError` for a refusal (bad key,
        unknown database), ``millpond.ConnectError`` if the server stayed unreachable."""
        if self.closed:
            raise RealtimeError("the realtime client is closed", code="closed")
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._loop = loop
            self._first = loop.create_future()
            self._task = loop.create_task(self._run(), name=f"millpond-realtime {self.database}")
        assert self._first is not None
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(self._first)
        except TimeoutError:
            last = self._last_error
            await self.aclose()
            detail = f": {last}" if last is not None else ""
            raise ConnectError(
                f"cannot connect to {self.url} within {self._timeout} s{detail}"
            ) from last
        except BaseException:
            await self.aclose()
            raise
        return self

    async def subscribe(
        self, queries: str | Iterable[str], *, timeout: float | None = None
    ) -> list[str]:
        """Subscribe to ``queries`` (``SELECT * FROM table [WHERE …]``); returns their
        query ids once their rows are in the cache. Raises :class:`SubscriptionError` if
        the server refuses them (then nothing changed), ``millpond.TimeoutError`` after
        ``timeout`` seconds (the subscription may still apply later). While
        disconnected, the request waits for the connection."""
        sqls = [queries] if isinstance(queries, str) else list(queries)
        if self._task is None:
            await self.connect()
        job, out = self._session.subscribe(sqls)
        result = await self._wait(job, out, timeout, "subscribe")
        return list(result or [])

    async def call(
        self, reducer: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> CallResult:
        """Call a reducer of the database's module on this connection (its
        ``connection_id`` is the caller's ``ctx.connection_id``); the outcome once it
        committed. If this connection subscribed to rows the call changed, they are in
        the cache (and their callbacks have run) before this returns. Raises
        :class:`~millpond.errors.ReducerError` if the call did not commit, and
        :class:`RealtimeError` (``call_outcome_unknown``) if the connection was lost
        before the outcome arrived — then it may have committed. Never sent twice."""
        if args and kwargs:
            raise TypeError("give a reducer's arguments by position or by name, not both")
        if self._task is None:
            await self.connect()
        job, out = self._session.call(reducer, kwargs if kwargs else list(args))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        job.waiter = future
        await self._handle(out)
        limit = timeout if timeout is not None else self._timeout
        try:
            async with asyncio.timeout(limit):
                answer = await future
        except TimeoutError:
            job.waiter = None
            raise RequestTimeoutError(
                f"no outcome of {reducer} within {limit} s (it may still commit)"
            ) from None
        return call_result(answer)

    async def unsubscribe(
        self, queries: str | Iterable[str], *, timeout: float | None = None
    ) -> None:
        """Unsubscribe from queries given by id or SQL text; once done, the cache has
        dropped the rows no remaining query matches (``on_delete`` is called for them).
        ``ValueError`` for a query that is not subscribed."""
        refs = [queries] if isinstance(queries, str) else list(queries)
        job, out = self._session.unsubscribe(refs)
        await self._wait(job, out, timeout, "unsubscribe")

    async def _wait(
        self, job: Job, out: Output, timeout: float | None, what: str
    ) -> list[str] | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[str] | None] = loop.create_future()
        job.waiter = future
        await self._handle(out)
        limit = timeout if timeout is not None else self._timeout
        try:
            async with asyncio.timeout(limit):
                return await future
        except TimeoutError:
            job.waiter = None
            raise RequestTimeoutError(f"no answer to {what} within {limit} s") from None

    async def aclose(self) -> None:
        """Close the connection and stop reconnecting; pending calls raise
        :class:`RealtimeError`. The cache stays readable."""
        if self._closed:
            return
        self._closed = True
        was_open = self._session.state == "open"
        await self._handle(self._session.close())
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # a bug of ours: report it, but close all the same
                self._deliver(Failed(exc))
        self._first_done(RealtimeError("the realtime client is closed", code="closed"))
        if self._first is not None and not self._first.cancelled():
            self._first.exception()  # retrieved: no "never retrieved" log
        if was_open:
            self._deliver(Disconnected(DisconnectInfo(1000, "closed by the client", False)))

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the connection ------------------------------------------------------------------------

    async def _handle(self, out: Output) -> None:
        """Carry out a session step: inputs to the cache, answers to the waiting calls,
        messages to the server."""
        for item in out.inputs:
            self._deliver(item)
        for job in out.completed:
            future = job.waiter
            job.waiter = None
            if isinstance(future, asyncio.Future) and not future.done():
                if job.error is not None:
                    future.set_exception(job.error)
                else:
                    future.set_result(job.answer if job.kind == "call" else job.result)
        ws = self._ws
        for message in out.send:
            if ws is None:
                break
            try:
                await ws.send(json.dumps(message, separators=(",", ":")))
            except ConnectionClosed:
                break  # the reader sees it too, and the session sends again after reconnecting

    def _first_done(self, error: BaseException | None) -> None:
        first = self._first
        if first is not None and not first.done():
            if error is None:
                first.set_result(None)
            else:
                first.set_exception(error)

    async def _open(self) -> Any:
        timeout = self._timeout if self._timeout is not None else DEFAULT_TIMEOUT
        return await _CONNECT(
            self.url,
            subprotocols=[SUBPROTOCOL],
            user_agent_header=USER_AGENT,
            open_timeout=timeout,
            ping_interval=None,  # heartbeats are the protocol's own ping messages
            close_timeout=CLOSE_TIMEOUT,
            max_size=None,  # a subscription's initial rows come in one message
            **{_HEADERS_ARG: self._headers},
        )

    async def _run(self) -> None:
        """Connect, serve, and reconnect after a backoff, until closed or stopped."""
        failures = 0
        while not self._closed:
            greeted = False
            try:
                ws = await self._open()
            except Exception as exc:
                status = _status(exc)
                if status is not None and 400 <= status < 500 and status not in (408, 429):
                    await self._stop(
                        RealtimeError(
                            f"the server refused the realtime connection to {self.url}: "
                            f"HTTP {status}",
                            code=f"http_{status}",
                        )
                    )
                    return
                self._last_error = exc
            else:
                started = time.monotonic()
                try:
                    greeted, code, reason = await self._serve(ws)
                finally:
                    self._ws = None
                    with contextlib.suppress(Exception):
                        await ws.close()
                out = self._session.disconnected(code, reason)
                await self._handle(out)
                if out.fatal is not None:
                    self._first_done(out.fatal)
                    return
                if greeted and time.monotonic() - started >= STABLE_SECONDS:
                    self._backoff.reset()
            failures = 0 if greeted else failures + 1
            if self._max_retries is not None and failures > self._max_retries:
                detail = f": {self._last_error}" if self._last_error is not None else ""
                await self._stop(
                    RealtimeError(
                        f"cannot reach {self.url} after {failures} attempts{detail}",
                        code="unreachable",
                    )
                )
                return
            await asyncio.sleep(self._backoff.next_delay())

    async def _stop(self, error: RealtimeError) -> None:
        await self._handle(self._session.fail(error))
        self._first_done(error)

    async def _serve(self, ws: Any) -> tuple[bool, int, str]:
        """Read one connection until it ends: (hello received, close code, reason)."""
        greeted = False
        try:
            timeout = self._timeout if self._timeout is not None else DEFAULT_TIMEOUT
            async with asyncio.timeout(timeout):
                hello = _decode(await ws.recv())
            if hello is None or hello.get("type") != "hello":
                await ws.close(1002, "expected hello")
                return False, 1002, "the server did not say hello"
            self._ws = ws
            await self._handle(self._session.connected(hello))
            greeted = True
            self._first_done(None)
            interval = self._heartbeat or self._session.heartbeat_interval or DEFAULT_HEARTBEAT
            heard = time.monotonic()
            while True:
                try:
                    async with asyncio.timeout(interval):
                        data = await ws.recv()
                except TimeoutError:
                    silent = time.monotonic() - heard
                    if silent >= SILENCE_FACTOR * interval:
                        reason = f"heartbeat timeout: nothing from the server for {silent:.1f} s"
                        await ws.close(1000, "heartbeat timeout")
                        return greeted, 1006, reason
                    await self._handle(Output(send=[self._session.ping()]))
                    continue
                heard = time.monotonic()
                message = _decode(data)
                if message is not None:
                    await self._handle(self._session.receive(message))
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            if rcvd is None:
                return greeted, 1006, "connection lost"
            return greeted, rcvd.code, rcvd.reason
        except (OSError, TimeoutError) as exc:
            self._last_error = exc
            return greeted, 1006, f"connection lost: {exc!r}"
        except Exception as exc:  # a bug of ours: report it, drop the connection, start over
            self._deliver(Failed(exc))
            return greeted, 1011, f"client error: {exc!r}"


def call_result(answer: Any) -> CallResult:
    """A ``call_result`` message as the HTTP call's answer would be: the outcome, or the
    same error (``ReducerError``, ``BadRequestError``…)."""
    if not isinstance(answer, dict):
        raise RealtimeError("a malformed call_result from the server", code="bad_message")
    error = answer.get("error")
    if isinstance(error, dict):
        raise error_for_status(int(answer.get("status_code") or 422), {"error": error})
    return CallResult.model_validate(answer.get("outcome"))
