"""The job runner every replica starts: claims queued jobs, runs them, notices crashed
ones.

* **Claiming** — in one transaction on the worker's own connection: pick the oldest
  RECEIVED job (``FOR UPDATE SKIP LOCKED``, so replicas never take the same one), take a
  session advisory lock on it, mark it PROCESSING. The lock lives as long as that
  connection: it is the job's lease, and it ends by itself if the process dies.
* **Waking** — ``LISTEN millpond_transfer`` (a trigger notifies when a job is queued),
  and polling every ``transfer_poll_s`` as a backstop.
* **Recovering** — a PROCESSING job whose advisory lock is free lost its worker. If its
  import had recorded the transaction that commits it and Postgres says that
  transaction committed, the job is DONE; otherwise it is queued again, or FAILED
  (``interrupted``) once it has run ``transfer_max_attempts`` times.
* **Running** — the work (parsing, COPY, writing files) runs in a thread; a heartbeat
  writes its progress every second and stops it if the job was taken away.
* **Cleaning** — finished imports' files at once; exports' files when they expire;
  files no job owns any more (a crash mid-upload) after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from ...backoff import Backoff
from ..waiting import wait_event
from . import jobs
from .errors import Interrupted, JobError
from .progress import Progress

if TYPE_CHECKING:
    from .service import TransferService

_log = logging.getLogger("millpond.transfer")
T = TypeVar("T")

CLEANUP_EVERY_S = 60.0
ORPHAN_GRACE_S = 600.0
STOP_GRACE_S = 15.0


class TransferWorker:
    def __init__(self, svc: TransferService) -> None:
        self.svc = svc
        self.settings = svc.settings
        self.worker_id = f"{svc.node_id}:{os.getpid()}:{secrets.token_hex(3)}"
        self.running: dict[str, Progress] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._conn: AsyncConnection[DictRow] | None = None
        self._conn_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._skip: dict[str, float] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._listen_task = asyncio.create_task(self._listen(), name="transfer-listen")
        self._loop_task = asyncio.create_task(self._run(), name="transfer-worker")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for progress in self.running.values():
            progress.cancelled = True
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=STOP_GRACE_S)
        for task in (self._loop_task, self._listen_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._conn is not None:
            await self._conn.close()

    def wake(self) -> None:
        self._wake.set()

    # -- the loop --------------------------------------------------------------------------

    async def _connection(self) -> AsyncConnection[DictRow]:
        if self._conn is None or self._conn.closed:
            if self._conn is not None:
                self._lost_leases()
            self._conn = await AsyncConnection.connect(
                self.svc.store_conninfo,
                autocommit=True,
                row_factory=dict_row,
                application_name="millpond-transfer",
            )
        return self._conn

    def _lost_leases(self) -> None:
        """The connection holding our jobs' locks is gone: others may now take them."""
        for progress in self.running.values():
            progress.cancelled = True

    async def _run(self) -> None:
        backoff = Backoff(base=0.2, cap=5.0)
        last_recover = last_cleanup = 0.0
        while not self._stopping:
            self._wake.clear()
            try:
                now = time.monotonic()
                if now - last_recover >= self.settings.transfer_poll_s:
                    last_recover = now
                    await self.recover()
                while len(self.running) < self.settings.transfer_workers:
                    row = await self._claim()
                    if row is None:
                        break
                    self._start(row)
                if now - last_cleanup >= CLEANUP_EVERY_S:
                    last_cleanup = now
                    await self.cleanup()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("transfer worker: %s: %s", type(exc).__name__, exc)
                if self._conn is not None and self._conn.closed:
                    self._lost_leases()
                await asyncio.sleep(backoff.next_delay())
                continue
            await wait_event(self._wake, self.settings.transfer_poll_s)

    async def _listen(self) -> None:
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            try:
                async with await AsyncConnection.connect(
                    self.svc.store_conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {jobs.CHANNEL}")
                    backoff.reset()
                    self._wake.set()
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("transfer: lost LISTEN (%s); reconnecting", type(exc).__name__)
            await asyncio.sleep(backoff.next_delay())

    async def _claim(self) -> DictRow | None:
        now = time.monotonic()
        self._skip = {k: v for k, v in self._skip.items() if v > now}
        async with self._conn_lock:
            conn = await self._connection()
            async with conn.transaction():
                cur = await conn.execute(
                    jobs.CLAIM_SQL,
                    {
                        "node": self.svc.node_id,
                        "shared": self.settings.transfer_shared_storage,
                        "skip": list(self._skip),
                    },
                )
                row = await cur.fetchone()
                if row is None:
                    return None
                got = await (
                    await conn.execute(
                        "SELECT pg_try_advisory_lock(%s) AS ok", (jobs.lock_id(row),)
                    )
                ).fetchone()
                if not got or not got["ok"]:  # an old worker still holds it: not yet
                    self._skip[row["id"]] = now + 30
                    return None
                cur = await conn.execute(
                    jobs.START_SQL, {"worker": self.worker_id, "id": row["id"]}
                )
                return await cur.fetchone()

    async def _unlock(self, row: DictRow) -> None:
        async with self._conn_lock:
            if self._conn is not None and not self._conn.closed:
                with contextlib.suppress(psycopg.Error):
                    await self._conn.execute("SELECT pg_advisory_unlock(%s)", (jobs.lock_id(row),))

    def _start(self, row: DictRow) -> None:
        progress = Progress(bytes_total=row["bytes_total"])
        self.running[row["id"]] = progress
        task = asyncio.create_task(self._job(row, progress), name=f"transfer-{row['id']}")
        self._tasks[row["id"]] = task

    # -- one job -----------------------------------------------------------------------------

    async def _job(self, row: DictRow, progress: Progress) -> None:
        job_id = row["id"]
        beat = asyncio.create_task(self._heartbeat(job_id, progress))
        final = True
        try:
            try:
                if row["kind"] == "import":
                    result, extra = await self.svc.runner.execute_import(row, progress, self)
                else:
                    result, extra = await self.svc.runner.execute_export(row, progress, self)
            except Interrupted:
                final = False
                await self._requeue(row)
                return
            except JobError as exc:
                await self._fail(row, exc.error_type, exc.as_details())
                return
            except Exception as exc:
                error_id = "err_" + secrets.token_hex(8)
                _log.error(
                    "transfer job %s failed (error_id %s):\n%s",
                    job_id,
                    error_id,
                    "".join(traceback.format_exception(exc)),
                )
                await self._fail(
                    row,
                    "internal_error",
                    {"message": f"the server failed running the job; see its log ({error_id})"},
                    error_id=error_id,
                )
                return
            await self._done(row, progress, result, extra)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            await self._unlock(row)
            if final and row["kind"] == "import":
                await asyncio.to_thread(shutil.rmtree, self.svc.job_dir(job_id), True)
            self.running.pop(job_id, None)
            self._tasks.pop(job_id, None)
            self._wake.set()

    async def _heartbeat(self, job_id: str, progress: Progress) -> None:
        while True:
            await asyncio.sleep(self.settings.transfer_heartbeat_s)
            try:
                touched = await self.svc.store.execute(
                    "UPDATE transfer_jobs SET bytes_done = %s, rows_done = %s,"
                    " bytes_total = coalesce(%s, bytes_total), heartbeat_at = now()"
                    " WHERE id = %s AND worker_id = %s AND state = 'PROCESSING'",
                    (
                        progress.bytes_done,
                        progress.rows_done,
                        progress.bytes_total,
                        job_id,
                        self.worker_id,
                    ),
                )
                if not touched:
                    progress.cancelled = True  # taken away (or its database was deleted)
                async with self._conn_lock:
                    conn = self._conn
                    if conn is None or conn.closed:
                        self._lost_leases()
                    else:
                        await conn.execute("SELECT 1")
            except asyncio.CancelledError:
                raise
            except psycopg.OperationalError:
                if self._conn is not None and self._conn.closed:
                    self._lost_leases()
            except Exception as exc:  # keep beating
                _log.warning("transfer heartbeat: %s", exc)

    def call(self, coro_fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run a coroutine on the event loop from a job's thread; wait for its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro_fn(), self.loop).result(timeout)

    async def record_xid(self, job_id: str, xid: str) -> bool:
        """Record the transaction about to commit an import — only if the job is still
        ours (if not, the caller must roll back)."""
        touched = await self.svc.store.execute(
            "UPDATE transfer_jobs SET commit_xid = %s"
            " WHERE id = %s AND worker_id = %s AND state = 'PROCESSING'",
            (xid, job_id, self.worker_id),
        )
        return touched == 1

    async def _done(
        self, row: DictRow, progress: Progress, result: dict[str, Any], extra: dict[str, Any]
    ) -> None:
        await self.svc.store.execute(
            "UPDATE transfer_jobs SET state = 'DONE', finished_at = now(), result = %(result)s,"
            " rows_done = %(rows)s, bytes_done = %(bytes)s,"
            " bytes_total = coalesce(%(total)s, bytes_total),"
            " file_path = coalesce(%(path)s, file_path), node_id = coalesce(%(node)s, node_id),"
            " expires_at = %(expires)s, error_id = NULL, error_type = NULL,"
            " error_details = NULL"
            " WHERE id = %(id)s AND worker_id = %(worker)s",
            {
                "result": Jsonb(result),
                "rows": progress.rows_done,
                "bytes": progress.bytes_done,
                "total": progress.bytes_total,
                "path": extra.get("file_path"),
                "node": extra.get("node_id"),
                "expires": extra.get("expires_at"),
                "id": row["id"],
                "worker": self.worker_id,
            },
        )

    async def _fail(
        self,
        row: DictRow,
        error_type: str,
        details: dict[str, Any],
        error_id: str | None = None,
    ) -> None:
        await self.svc.store.execute(
            "UPDATE transfer_jobs SET state = 'FAILED', finished_at = now(), error_id = %s,"
            " error_type = %s, error_details = %s, file_path = NULL"
            " WHERE id = %s AND worker_id = %s",
            (
                error_id or "err_" + secrets.token_hex(8),
                error_type,
                Jsonb(details),
                row["id"],
                self.worker_id,
            ),
        )
        if row["kind"] == "export":
            await asyncio.to_thread(shutil.rmtree, self.svc.job_dir(row["id"]), True)

    async def _requeue(self, row: DictRow) -> None:
        """A job we stopped (shutdown, lost lease) goes back to the queue; a shutdown is
        not the job's fault, so the attempt does not count."""
        with contextlib.suppress(psycopg.Error):
            await self.svc.store.execute(
                "UPDATE transfer_jobs SET state = 'RECEIVED', worker_id = NULL,"
                " attempts = greatest(attempts - %s, 0)"
                " WHERE id = %s AND worker_id = %s AND state = 'PROCESSING'"
                " AND commit_xid IS NULL",
                (1 if self._stopping else 0, row["id"], self.worker_id),
            )

    # -- crashed jobs ------------------------------------------------------------------------

    async def recover(self) -> int:
        """Finish or requeue PROCESSING jobs whose worker is gone; return how many."""
        handled = 0
        async with self.svc.store.transaction() as conn:
            rows = await (await conn.execute(jobs.ORPHANS_SQL)).fetchall()
            for row in rows:
                if row["id"] in self.running:
                    continue
                free = await (
                    await conn.execute(
                        "SELECT pg_try_advisory_xact_lock(%s) AS free", (jobs.lock_id(row),)
                    )
                ).fetchone()
                if not free or not free["free"]:
                    continue  # its worker is alive
                status = None
                if row["commit_xid"]:
                    found = await (
                        await conn.execute(
                            "SELECT pg_xact_status(%s::xid8) AS s", (row["commit_xid"],)
                        )
                    ).fetchone()
                    status = found["s"] if found else None
                    if status == "in progress":
                        continue
                handled += 1
                if status == "committed":
                    _log.warning("transfer job %s committed before a crash: DONE", row["id"])
                    await conn.execute(
                        "UPDATE transfer_jobs SET state = 'DONE', finished_at = now(),"
                        " result = coalesce(result, '{}'::jsonb) || '{\"recovered\": true}'"
                        " WHERE id = %s",
                        (row["id"],),
                    )
                elif row["attempts"] < self.settings.transfer_max_attempts:
                    _log.warning("transfer job %s was interrupted: queued again", row["id"])
                    await conn.execute(
                        "UPDATE transfer_jobs SET state = 'RECEIVED', worker_id = NULL,"
                        " commit_xid = NULL WHERE id = %s",
                        (row["id"],),
                    )
                else:
                    _log.warning("transfer job %s was interrupted again: FAILED", row["id"])
                    await conn.execute(
                        "UPDATE transfer_jobs SET state = 'FAILED', finished_at = now(),"
                        " error_id = %s, error_type = 'interrupted', error_details = %s"
                        " WHERE id = %s",
                        (
                            "err_" + secrets.token_hex(8),
                            Jsonb(
                                {
                                    "message": f"the server running the job stopped"
                                    f" {row['attempts']} time(s) before it finished; nothing"
                                    " was imported"
                                    if row["kind"] == "import"
                                    else "the server running the job stopped before it finished",
                                    "attempts": row["attempts"],
                                }
                            ),
                            row["id"],
                        ),
                    )
        return handled

    # -- files -------------------------------------------------------------------------------

    async def cleanup(self) -> None:
        """Delete expired exports' files, job folders no job owns any more, and the rows
        of jobs that finished more than ``transfer_job_retention_days`` ago."""
        await self.svc.store.execute(
            "DELETE FROM transfer_jobs WHERE state IN ('DONE', 'FAILED')"
            " AND finished_at < now() - make_interval(secs => %s)"
            " AND (kind = 'import' OR file_path IS NULL)",
            (self.settings.transfer_job_retention_days * 86400,),
        )
        mine = {"node": self.svc.node_id, "shared": self.settings.transfer_shared_storage}
        expired = await self.svc.store.fetchall(
            "UPDATE transfer_jobs SET file_path = NULL"
            " WHERE kind = 'export' AND file_path IS NOT NULL AND expires_at < now()"
            " AND (node_id = %(node)s OR %(shared)s) RETURNING id",
            mine,
        )
        for row in expired:
            await asyncio.to_thread(shutil.rmtree, self.svc.job_dir(row["id"]), True)
        root = self.svc.jobs_root
        present = await asyncio.to_thread(_folders, root)
        if not present:
            return
        live = {
            r["id"]
            for r in await self.svc.store.fetchall(
                "SELECT id FROM transfer_jobs WHERE id = ANY(%s) AND (state IN"
                " ('RECEIVED', 'PROCESSING') OR (kind = 'export' AND file_path IS NOT NULL))",
                (list(present),),
            )
        }
        cutoff = time.time() - ORPHAN_GRACE_S
        for job_id, newest in present.items():
            if job_id not in live and newest < cutoff and job_id not in self.running:
                await asyncio.to_thread(shutil.rmtree, root / job_id, True)


def _folders(root: Path) -> dict[str, float]:
    """Job folders and the newest modification time inside each."""
    found: dict[str, float] = {}
    if not root.is_dir():
        return found
    for entry in root.iterdir():
        if not entry.is_dir():
            continue
        newest = entry.stat().st_mtime
        for child in entry.iterdir():
            with contextlib.suppress(OSError):
                newest = max(newest, child.stat().st_mtime)
        found[entry.name] = newest
    return found


def expiry(ttl_s: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=ttl_s)
