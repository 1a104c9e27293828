"""Streamed CSV exports: ``POST /v1/exports/stream`` answers with the CSV itself, as
``COPY (…) TO STDOUT (FORMAT csv, HEADER)`` writes it: no job, no file on the server.

It is a CSV export job's export (``exporter.csv_blocks``): the body checked as
``POST /v1/exports`` checks it, read access resolved the same way, the caller's role and
identity (row visibility rules), one statement in a read-only transaction, the jobs'
statement timeout (``transfer_job_timeout_s``), the same COPY reader. Only where the
blocks go differs:

* a thread of the stream's own reads the COPY (``copy_out`` waits for the socket, which
  must not happen on the event loop) and hands the blocks over through :class:`Handoff`,
  at most ``DEPTH`` of them waiting: memory stays a few MiB whatever the export's size,
  and a slow client slows the COPY down rather than piling it up;
* the answer starts once the first block is read *and* what follows it is known (a
  second block, or the end): whatever fails before that — the body, rights, an unknown
  table, SQL that Postgres refuses, an error in an output that fits in one block (1 MiB)
  — is an error answer (:func:`refusal`: the jobs' ``error_type`` as its code). A block
  is handed over unfilled after ``LINGER_S`` without data, so a slow query streams;
* a failure after that is :class:`StreamBroken`: the route cuts the response short, so
  no client takes the part for the whole;
* :meth:`CsvStream.close` (the client went away, or the answer ended) stops the thread:
  a COPY under way is cancelled in Postgres and its rest drained, the transaction rolls
  back and the connection is closed before the caller's budget is given back.

The connection counts against the caller's connection budget (``server/budget.py``) as
a gateway session does: one of the account's connections and one of the server's tenant
connections, until it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg

from ...models.transfer import ExportCreate
from ..accounts.service import Principal
from ..budget import BudgetExceeded, ConnectionBudget
from ..databases.service import resolve
from ..errors import ServiceError, invalid
from ..modules.identities import user_identity
from . import exporter
from .errors import Interrupted, JobError
from .progress import Progress
from .service import TransferService, export_file_name

_log = logging.getLogger("millpond.transfer")

DEPTH = 4
"""Blocks (of about 1 MiB) read ahead of the response at most."""
LINGER_S = 0.2
"""Seconds without data from Postgres after which a partial block is sent."""

Item = bytearray | BaseException | None
"""What the thread hands over: a block, its failure, or None (the end)."""
Disconnected = Callable[[], Awaitable[None]]
"""Returns when the client has gone away."""


class StreamBroken(Exception):
    """The export failed after its answer began (``__cause__``: why)."""


class Handoff:
    """Blocks from the reading thread to the event loop, at most ``depth`` waiting."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = DEPTH) -> None:
        self._loop = loop
        self._items: asyncio.Queue[Item] = asyncio.Queue()
        self._room = threading.Semaphore(depth)
        self._stopped = threading.Event()

    def put(self, block: bytearray) -> None:
        """(The thread.) Wait for room, then hand ``block`` over; :class:`Interrupted`
        once the stream is stopped."""
        self._room.acquire()
        if self._stopped.is_set():
            raise Interrupted("the client went away")
        self._loop.call_soon_threadsafe(self._items.put_nowait, block)

    def finish(self, outcome: BaseException | None) -> None:
        """(The thread.) The end, or the failure, of the export."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            self._loop.call_soon_threadsafe(self._items.put_nowait, outcome)

    async def get(self) -> Item:
        item = await self._items.get()
        if isinstance(item, bytearray):
            self._room.release()
        return item

    def stop(self) -> None:
        self._stopped.set()
        self._room.release()  # a thread waiting for room wakes up, and stops


class CsvStream:
    """One streamed export: :meth:`start`, then :meth:`blocks`; :meth:`close` always."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        spec: exporter.ExportSpec,
        file_name: str,
        release: Callable[[], None],
        database: str = "",
    ) -> None:
        self.file_name = file_name
        self.database = database
        self.bytes_sent = 0
        self._connect = connect
        self._spec = spec
        self._release: Callable[[], None] | None = release
        self._progress = Progress(phase="streaming")
        self._loop = asyncio.get_running_loop()
        self._handoff = Handoff(self._loop)
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._first: bytearray | None = None
        self._thread: threading.Thread | None = None

    async def start(self, disconnected: Disconnected) -> bool:
        """Start reading; True once the answer can begin, False if the client went away
        first (:func:`refusal` of what failed before)."""
        self._thread = threading.Thread(target=self._read, name="millpond-csv-stream", daemon=True)
        self._thread.start()
        first = asyncio.ensure_future(self._handoff.get())
        gone = asyncio.ensure_future(disconnected())
        try:
            await asyncio.wait({first, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not first.done():
                first.cancel()
        if first.cancelled():
            return False
        item = first.result()
        if isinstance(item, BaseException):
            raise refusal(item) from item
        self._first = item
        return True

    async def blocks(self) -> AsyncIterator[bytes]:
        """The CSV, a block at a time; :class:`StreamBroken` if the export fails."""
        item: Item = self._first
        self._first = None
        while item is not None:
            if isinstance(item, BaseException):
                self._log_failure(item)
                raise StreamBroken(f"the export failed after {self.bytes_sent} bytes") from item
            self.bytes_sent += len(item)
            yield bytes(item)
            item = await self._handoff.get()

    async def close(self) -> None:
        """Stop the export (if it runs), wait for its connection to be closed, give back
        the budget. Idempotent."""
        self._handoff.stop()
        self._progress.cancelled = True  # a COPY waiting for Postgres checks it every second
        try:
            if self._thread is not None:
                await asyncio.shield(self._done)
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()

    # -- the reading thread ------------------------------------------------------------------

    def _read(self) -> None:
        try:
            self._copy()
        except BaseException as exc:
            self._handoff.finish(exc)
        else:
            self._handoff.finish(None)
        finally:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_resolve, self._done)

    def _copy(self) -> None:
        conn = self._connect()
        try:
            blocks = exporter.csv_blocks(conn, self._spec, self._progress, LINGER_S)
            try:
                first = next(blocks, None)
                if first is None:  # (a CSV has its header: not seen)
                    return
                following = next(blocks, None)  # known before the answer begins
                self._handoff.put(first)
                if following is None:
                    return
                self._handoff.put(following)
                for block in blocks:
                    self._handoff.put(block)
            finally:
                blocks.close()  # stopped midway: the COPY is cancelled, the transaction ends
        finally:
            conn.close()

    def _log_failure(self, exc: BaseException) -> None:
        what = f"{exc.error_type}: {exc.message}" if isinstance(exc, JobError) else repr(exc)
        _log.warning(
            "a streamed export of %s failed after %d bytes, its answer was cut short: %s",
            self.database,
            self.bytes_sent,
            what,
        )


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def refusal(exc: BaseException) -> BaseException:
    """The error answer for what failed before a streamed export's answer began: an
    export job's ``error_type`` is its code (400; 503 ``postgres_unavailable``)."""
    if isinstance(exc, JobError):
        status = 503 if exc.error_type == "postgres_unavailable" else 400
        return ServiceError(status, exc.error_type, exc.message, exc.details)
    if isinstance(exc, psycopg.OperationalError):
        return ServiceError(503, "postgres_unavailable", "the database connection was lost")
    return exc


class CsvStreams:
    """Opens streamed exports (the route's service: the transfer service's connections,
    the server's connection budget)."""

    def __init__(self, service: TransferService, budget: ConnectionBudget) -> None:
        self.service = service
        self.budget = budget

    async def open(
        self, principal: Principal, body: ExportCreate, disconnected: Disconnected
    ) -> CsvStream | None:
        """A started :class:`CsvStream` of the export ``body`` asks for (``csv`` only);
        None if the client went away before its answer could begin (it is stopped)."""
        if body.export_format != "csv":
            raise invalid(
                "validation_error",
                "export_format: a streamed export is CSV; make an export job"
                " (POST /v1/exports) for other formats",
                {"field": "export_format"},
            )
        file_name = export_file_name(body)
        service = self.service
        service.cluster.availability.check()  # Postgres is known to be down: 503 at once
        access = await resolve(service.store, principal, body.db_name, need="read")
        await service.clusters.cluster_of(access.cluster)
        identity = user_identity(service.secret, principal.user_id)  # what its rules show it
        spec = exporter.ExportSpec(
            export_format="csv",
            query=body.query_string,
            schema=body.schema_name,
            table=body.table_name,
        )
        stream = CsvStream(
            lambda: service.runner.connect(access, identity),
            spec,
            file_name,
            await self._hold(principal),
            access.full_name,
        )
        try:
            started = await stream.start(disconnected)
        except BaseException:
            await stream.close()
            raise
        if not started:
            await stream.close()
            return None
        return stream

    async def _hold(self, principal: Principal) -> Callable[[], None]:
        """Count the stream's connection as the account's and as a tenant connection;
        returns what gives both back."""
        exempt = principal.is_admin and self.service.settings.account_limits_exempt_admins
        try:
            return await self.budget.session(principal.user_id, principal.username, exempt)
        except BudgetExceeded as exc:
            raise exc.service_error() from None
