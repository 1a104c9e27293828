"""Run a real millpond server in a background thread, and a TCP proxy that can cut the
network between a client and it — for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

from ..models import UserCreated
from .app import create_app
from .config import Settings
from .postgres.embedded import EmbeddedPostgres


def free_port() -> int:
    """A local port nothing listens on, for a server a test is about to start.

    It is taken below the kernel's ephemeral range: a port from that range (what binding
    to port 0 gives) can become the source port of any outgoing connection in the seconds
    before the server binds it, and the server then fails with "address in use". A port
    is handed out once per process, and the test processes of one run (pytest-xdist's
    workers) each take their own share of the range."""
    lowest = _ephemeral_start()
    share, shares = _share()
    for _ in range(1000):
        port = _RANDOM.randrange(_PORTS_FROM, lowest)
        if port in _HANDED_OUT or port % shares != share:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port between {_PORTS_FROM} and {lowest}")


_PORTS_FROM = 20000
_HANDED_OUT: set[int] = set()
_RANDOM = random.Random()


def _share() -> tuple[int, int]:
    """(this process' number, how many): from pytest-xdist's ``PYTEST_XDIST_WORKER=gwN``
    and ``PYTEST_XDIST_WORKER_COUNT``; (0, 1) elsewhere."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 0:
        return int(worker[2:]) % int(count), int(count)
    return 0, 1


def _ephemeral_start() -> int:
    """The first port of the kernel's range for outgoing connections (Linux)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            start = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
    return start if start > _PORTS_FROM + 1000 else 32768


@dataclass
class ServerThread:
    """A started server: ``url``, its ``settings`` and the first admin's key."""

    url: str
    settings: Settings
    admin_key: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        if self.settings.database_url is None:
            # never leave the embedded Postgres running past the test session: if the
            # lifespan did not get to stop it, this does (an orphaned postmaster exits
            # once its data directory is gone, and takes its socket's path with it —
            # which a later session in the same directory may be using)
            EmbeddedPostgres(self.settings.data_dir).stop()


def start_server(settings: Settings, timeout: float = 90) -> ServerThread:
    """Start a real server (uvicorn) in a thread and wait until it serves."""
    announced: list[UserCreated] = []
    servers: list[uvicorn.Server] = []

    def stop_instead_of_exiting(_reason: str) -> None:
        # a lost Postgres ends this server, not the process that runs it (a test session)
        servers[0].should_exit = True

    app = create_app(
        settings,
        announce=lambda created, _path: announced.append(created),
        on_fatal=stop_instead_of_exiting,
    )
    tls = settings.http_tls()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=10,  # connections a test left open do not hold it up
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
    server = uvicorn.Server(config)
    servers.append(server)
    thread = threading.Thread(target=server.run, name="millpond-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the millpond server did not start; see the log above")
        time.sleep(0.05)
    key_file = settings.data_dir / "admin-key"
    admin_key = announced[0].api_key.secret if announced else key_file.read_text().strip()
    scheme = "https" if tls else "http"
    return ServerThread(
        f"{scheme}://{settings.host}:{settings.port}", settings, admin_key, server, thread
    )


class Proxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target``; :meth:`cut` aborts every
    connection it carries (both sides see the connection drop, no close frame)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.cuts = 0
        self._loop = asyncio.new_event_loop()
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Proxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cut(self) -> int:
        """Drop the connections now; how many there were."""
        return asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> int:
        pairs = list(self._pairs)
        for down, up in pairs:
            down.transport.abort()
            up.transport.abort()
        self.cuts += bool(pairs)
        return len(pairs)

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        await self._cut()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._carry(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
            )
        finally:
            self._pairs.discard(pair)
            for side in pair:
                side.transport.abort()
            for side in pair:
                with contextlib.suppress(Exception):
                    await side.wait_closed()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()  # one side gone: the other goes too
