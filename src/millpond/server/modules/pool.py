"""The server's side of module workers (asyncio).

:class:`WorkerPool` keeps N workers of one (database, module version) and hands each call
to a free one; a call past its wall-clock timeout kills its worker (outcome ``timeout``), a
worker that dies mid-call gives ``crashed``, and either is replaced. Pools share nothing, so
a broken module never touches another database's. :func:`describe` imports a module in a
worker without a database; :func:`apply` runs a publish transaction in a one-shot worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncGenerator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from millpond.module._def import ModuleDef

from ..observability.context import detached
from . import sandbox
from .protocol import Decoder, FrameError, encode

_log = logging.getLogger("millpond.modules")
_T = TypeVar("_T")

START_TIMEOUT_S = 30.0
"""Longest a worker may take to connect, confine itself and import its module."""
STOP_TIMEOUT_S = 5.0
_STDERR_LINE = 2000


class PoolClosed(Exception):
    """The pool is closing or closed: route the call to the current version's pool."""


class ModuleInvalid(Exception):
    """The module cannot be loaded: an import error, a declaration error, a timeout..."""

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.traceback = traceback


class WorkerDied(Exception):
    """The worker's socket closed (it exited, crashed or was killed)."""


@dataclasses.dataclass(frozen=True)
class Limits:
    call_timeout_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 512
    retries: int = 20
    hidden: tuple[str, ...] = ()
    """Directories a worker must not see (covered in its mount namespace)."""

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            call_timeout_s=settings.module_call_timeout_s,
            cpu_s=settings.module_call_cpu_s,
            memory_mb=settings.module_memory_mb,
            retries=settings.module_serialization_retries,
            hidden=(str(settings.data_dir),),
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_user_checked: str | bool | None = False


async def _ensure_user() -> None:
    global _user_checked
    if _user_checked is False:
        _user_checked = await asyncio.to_thread(sandbox.ensure_user)
        if isinstance(_user_checked, str):
            _log.warning("module workers: %s", _user_checked)


class Worker:
    """One worker process and its socket."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.proc: asyncio.subprocess.Process | None = None
        self.scratch = Path(tempfile.mkdtemp(prefix="millpond-module-"))
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = Decoder()
        self._ready: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._stderr: asyncio.Task[None] | None = None
        self.dead = False

    async def start(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Spawn the process and send ``start``; its answer."""
        await _ensure_user()
        parent, child = socket.socketpair()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-m",
                "millpond.server.modules.worker",
                str(child.fileno()),
                str(self.scratch),
                pass_fds=(child.fileno(),),
                env=sandbox.child_env(self.scratch),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                cwd="/",
                start_new_session=True,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self._reader, self._writer = await asyncio.open_unix_connection(sock=parent)
        self._stderr = detached(self._drain_stderr())  # the worker's life, not the call's
        return await self.request(encode({"op": "start", **message}), timeout)

    async def request(self, frame: bytes, timeout: float) -> dict[str, Any]:
        """Send one framed message and wait for the answer (``TimeoutError``,
        :class:`WorkerDied`)."""
        assert self._writer is not None
        if self.dead:
            raise WorkerDied("the worker is gone")
        async with asyncio.timeout(timeout):
            self._writer.write(frame)
            await self._writer.drain()
            return await self._receive()

    async def requests(
        self, frame: bytes, count: int, timeout: float
    ) -> AsyncGenerator[dict[str, Any]]:
        """Send one framed message and yield its ``count`` answers, each within
        ``timeout`` of the one before (``TimeoutError``, :class:`WorkerDied`)."""
        assert self._writer is not None
        if self.dead:
            raise WorkerDied("the worker is gone")
        async with asyncio.timeout(timeout):
            self._writer.write(frame)
            await self._writer.drain()
        for _ in range(count):
            async with asyncio.timeout(timeout):
                reply = await self._receive()
            yield reply

    @property
    def alive(self) -> bool:
        return not self.dead and self.proc is not None and self.proc.returncode is None

    def next_id(self) -> int:
        return next(self._ids)

    async def _receive(self) -> dict[str, Any]:
        assert self._reader is not None
        while not self._ready:
            data = await self._reader.read(1 << 16)
            if not data:
                self.dead = True
                raise WorkerDied("the worker's socket closed")
            try:
                self._ready.extend(self._decoder.feed(data))
            except FrameError as exc:
                self.dead = True
                raise WorkerDied(f"the worker sent a bad frame: {exc}") from None
        return self._ready.pop(0)

    async def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()[:_STDERR_LINE]
            _log.warning("module worker %s: %s", self.label, text)

    def exit_description(self) -> str:
        code = self.proc.returncode if self.proc is not None else None
        if code is None:
            return "the worker stopped answering"
        if code < 0:
            return f"the worker was killed by {signal.Signals(-code).name}"
        return f"the worker exited with status {code}"

    async def wait_exit(self, timeout: float) -> None:
        """Let the process end (killed past ``timeout``) and clean up after it."""
        if self.proc is not None:
            # wait_for, not asyncio.timeout: this also runs in a task being cancelled
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), timeout)
        await self.kill()

    async def stop(self) -> None:
        """Ask the worker to exit (closing its socket), then make sure it did."""
        self.dead = True
        if self._writer is not None:
            self._writer.close()
        await self.wait_exit(STOP_TIMEOUT_S)

    async def kill(self) -> None:
        self.dead = True
        if self._writer is not None:
            self._writer.close()
        if self.proc is not None:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)  # and whatever it forked
            await self.proc.wait()
        if self._stderr is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stderr, 1)
        await asyncio.to_thread(shutil.rmtree, self.scratch, True)


class WorkerPool:
    """The workers of one (database, module version)."""

    def __init__(
        self,
        conninfo: str | None,
        files: dict[str, str],
        entry: str,
        limits: Limits,
        size: int = 2,
        name: str = "module",
    ) -> None:
        self.name = name
        self.size = size
        self.limits = limits
        self.sandbox: list[dict[str, Any]] = []
        self.module: ModuleDef | None = None
        self.replaced = 0
        self._start: dict[str, Any] = {"conninfo": conninfo, "files": files, "entry": entry}
        self._idle: asyncio.Queue[Worker] = asyncio.Queue()
        self._workers: set[Worker] = set()
        self._retired: set[Worker] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._closing = False
        self._labels = itertools.count(1)

    async def start(self) -> ModuleDef:
        """Start the workers; the module's definition (:class:`ModuleInvalid` if it does
        not load, and then no worker is left running)."""
        results = await asyncio.gather(
            *(self._spawn() for _ in range(self.size)), return_exceptions=True
        )
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            await self._stop_all()
            raise failure
        return self.module or ModuleDef()

    async def call(self, reducer: str | None, args: Any, ctx: dict[str, Any]) -> dict[str, Any]:
        """Run one reducer call on a free worker; its outcome. (``None``: a lifecycle
        call's bookkeeping only, for a module without that reducer.)"""
        message = {"op": "call", "reducer": reducer, "args": args, "ctx": ctx}
        return await self._run(message)

    async def call_many(
        self, calls: list[tuple[str | None, Any, dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """Run several calls on one worker, one after the other, each in its own
        transaction, for one round trip (scheduled runs that are due together); their
        outcomes, in order. Each answer has the call timeout from the one before it. When
        the worker dies or is recycled part way, the call it was running has that outcome
        and the calls after it ``not_run``."""
        message = {
            "op": "calls",
            "calls": [{"reducer": r, "args": a, "ctx": c} for r, a, c in calls],
        }
        return await self._run_many(message, len(calls))

    async def close(self) -> None:
        """Refuse new calls, let the ones in flight finish, then stop every worker."""
        self._closing = True
        if self._in_flight:
            self._drained.clear()
            await self._drained.wait()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stop_all()

    # -- inside -----------------------------------------------------------------------

    async def _run(self, message: dict[str, Any]) -> dict[str, Any]:
        return await self._shielded(lambda: self._on_worker(message))

    async def _run_many(self, message: dict[str, Any], count: int) -> list[dict[str, Any]]:
        return await self._shielded(lambda: self._many_on_worker(message, count))

    async def _shielded(self, work: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        """Run ``work()`` as a call in flight (:meth:`close` waits for it)."""
        if self._closing:
            raise PoolClosed(f"the pool of {self.name} is closing")
        self._in_flight += 1
        # a caller that gives up (cancelled) does not cut the call short: it finishes and
        # its worker is free again, or the worker would answer the next call with this one
        task = asyncio.create_task(work())
        task.add_done_callback(self._call_done)
        return await asyncio.shield(task)

    async def _many_on_worker(self, message: dict[str, Any], count: int) -> list[dict[str, Any]]:
        timeout = self.limits.call_timeout_s
        try:
            async with asyncio.timeout(timeout):
                worker = await self._idle_worker()
        except TimeoutError:
            return [
                _outcome("timeout", f"no worker was free within {timeout} s")
                for _ in message["calls"]
            ]
        message["id"] = worker.next_id()
        try:
            frame = encode(message)
        except FrameError as exc:
            self._idle.put_nowait(worker)
            return [_outcome("error", f"the calls are too large: {exc}") for _ in message["calls"]]
        replies: list[dict[str, Any]] = []
        failure: dict[str, Any] | None = None
        try:
            async with contextlib.aclosing(worker.requests(frame, count, timeout)) as answers:
                async for reply in answers:
                    if reply.get("id") != message["id"] or reply.pop("index", None) != len(replies):
                        failure = _outcome("crashed", "the worker answered out of turn")
                        break
                    reply.pop("id", None)
                    recycle = reply.pop("recycle", False)
                    replies.append(reply)
                    if recycle:
                        break
        except TimeoutError:
            failure = _outcome("timeout", f"the call took longer than {timeout} s")
        except (WorkerDied, OSError):
            await worker.wait_exit(1.0)
            failure = _outcome("crashed", worker.exit_description())
        except BaseException:
            self._replace(worker)
            raise
        if failure is not None or len(replies) < count:
            self._replace(worker)
            if failure is not None:
                replies.append(failure)
            rest = count - len(replies)
            replies.extend(
                _outcome("not_run", "an earlier call ended its worker") for _ in range(rest)
            )
        else:
            self._idle.put_nowait(worker)
        return replies

    def _call_done(self, task: asyncio.Task[Any]) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._drained.set()
        if not task.cancelled() and task.exception() is not None:
            _log.error("module pool %s: a call failed", self.name, exc_info=task.exception())

    async def _on_worker(self, message: dict[str, Any]) -> dict[str, Any]:
        timeout = self.limits.call_timeout_s
        try:  # waiting for a worker has its own budget: a queue must not kill workers
            async with asyncio.timeout(timeout):
                worker = await self._idle_worker()
        except TimeoutError:
            return _outcome("timeout", f"no worker was free within {timeout} s")
        message["id"] = worker.next_id()
        try:
            frame = encode(message)
        except FrameError as exc:
            self._idle.put_nowait(worker)
            return _outcome("error", f"the call is too large: {exc}")
        try:
            reply = await worker.request(frame, timeout)
        except TimeoutError:
            self._replace(worker)
            return _outcome("timeout", f"the call took longer than {timeout} s")
        except (WorkerDied, OSError):
            await worker.wait_exit(1.0)
            outcome = _outcome("crashed", worker.exit_description())
            self._replace(worker)
            return outcome
        except BaseException:
            self._replace(worker)
            raise
        if reply.get("id") != message["id"]:
            self._replace(worker)
            return _outcome("crashed", "the worker answered out of turn")
        if reply.pop("recycle", False):
            self._replace(worker)
        else:
            self._idle.put_nowait(worker)
        reply.pop("id", None)
        return reply

    async def _idle_worker(self) -> Worker:
        while True:
            worker = await self._idle.get()
            if worker.alive:
                return worker
            self._replace(worker)

    async def _spawn(self) -> None:
        worker = Worker(f"{self.name}#{next(self._labels)}")
        self._workers.add(worker)
        try:
            reply = await worker.start(
                {**self._start, "limits": self.limits.to_json()}, START_TIMEOUT_S
            )
        except BaseException as exc:
            self._workers.discard(worker)
            if isinstance(exc, WorkerDied | OSError):
                await worker.wait_exit(1.0)
                problem = f"the worker did not start: {worker.exit_description()}"
                raise ModuleInvalid(problem) from None
            await worker.kill()  # a timeout, or the pool closing (cancelled)
            if isinstance(exc, TimeoutError):
                problem = f"the module did not load within {START_TIMEOUT_S} s"
                raise ModuleInvalid(problem) from None
            raise
        if not reply.get("ok"):
            self._workers.discard(worker)
            await worker.kill()
            error = reply.get("error") or {}
            raise ModuleInvalid(str(error.get("message")), str(error.get("traceback") or ""))
        self._note_sandbox(reply.get("sandbox") or [])
        if self.module is None:
            self.module = ModuleDef.from_json(reply["def"])
        self._idle.put_nowait(worker)

    def _note_sandbox(self, layers: list[dict[str, Any]]) -> None:
        if layers == self.sandbox:
            return
        self.sandbox = layers
        for layer in layers:
            level = logging.INFO if layer.get("active") else logging.WARNING
            state = "active" if layer.get("active") else "NOT active"
            _log.log(level, "module sandbox %s: %s (%s)", layer["name"], state, layer["detail"])

    def _replace(self, worker: Worker) -> None:
        """Kill ``worker`` and start another in the background."""
        self._workers.discard(worker)
        self._retired.add(worker)
        self.replaced += 1
        task = detached(self._replacement(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replacement(self, worker: Worker) -> None:
        await worker.kill()
        self._retired.discard(worker)
        delay = 0.1
        while not self._closing:
            try:
                await self._spawn()
                return
            except Exception as exc:
                _log.warning("module pool %s: a worker did not start: %s", self.name, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _stop_all(self) -> None:
        """Stop the workers, and finish killing those a cancelled replacement left."""
        workers, retired = list(self._workers), list(self._retired)
        self._workers.clear()
        self._retired.clear()
        stopping = [*(w.stop() for w in workers), *(w.kill() for w in retired)]
        await asyncio.gather(*stopping, return_exceptions=True)


def _outcome(status: str, message: str) -> dict[str, Any]:
    return {
        "status": status,
        "message": message,
        "return": None,
        "retries": 0,
        "duration_us": None,
        "logs": [],
    }


# -- one-shot workers -------------------------------------------------------------------


async def describe(files: dict[str, str], entry: str, limits: Limits) -> ModuleDef:
    """Import a module in a worker without a database: its definition, or
    :class:`ModuleInvalid`."""
    pool = WorkerPool(None, files, entry, limits, size=1, name="describe")
    try:
        return await pool.start()
    finally:
        await pool.close()


async def apply(
    conninfo: str,
    files: dict[str, str],
    entry: str,
    statements: list[str],
    run_init: bool,
    ctx: dict[str, Any],
    limits: Limits | None = None,
) -> dict[str, Any]:
    """Run a publish transaction (``statements``, then ``@init`` when ``run_init``) in a
    one-shot worker; its outcome (:class:`ModuleInvalid` if the module does not load)."""
    pool = WorkerPool(conninfo, files, entry, limits or Limits(), size=1, name="apply")
    await pool.start()
    try:
        message = {"op": "apply", "statements": statements, "run_init": run_init, "ctx": ctx}
        return await pool._run(message)
    finally:
        await pool.close()


async def sandbox_layers(limits: Limits) -> list[dict[str, Any]]:
    """Which confinement layers apply on this host, and why any other does not (from a
    worker started with an empty module): for the server's log and the docs."""
    pool = WorkerPool(None, {"probe.py": ""}, "probe", limits, size=1, name="probe")
    try:
        await pool.start()
        return pool.sandbox
    finally:
        await pool.close()
