"""A scripted WebSocket server standing in for a misbehaving millpond server (silent,
closing with a given code, refusing the handshake): the outside world, mocked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

Handler = Callable[["Peer"], Awaitable[None]]


class Peer:
    """One client connection as the fake server sees it."""

    def __init__(self, ws: ServerConnection, number: int, log: list[dict[str, Any]]) -> None:
        self.ws = ws
        self.number = number
        self.log = log

    async def send(self, **message: Any) -> None:
        await self.ws.send(json.dumps(message))

    async def hello(self, heartbeat_ms: int = 60_000) -> None:
        await self.send(
            type="hello",
            protocol=1,
            connection_id=f"c{self.number}",
            server_version="fake",
            heartbeat_interval_ms=heartbeat_ms,
        )

    async def next(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        """The next client message of ``kind`` (pings are answered on the way)."""
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            self.log.append(message)
            if message["type"] == "ping" and kind != "ping":
                await self.send(type="pong", request_id=message.get("request_id"))
                continue
            assert message["type"] == kind, message
            return dict(message)

    async def serve_pings(self) -> None:
        """Answer pings until the client goes."""
        with contextlib.suppress(ConnectionClosed):
            async for data in self.ws:
                message = json.loads(data)
                self.log.append(message)
                if message["type"] == "ping":
                    await self.send(type="pong", request_id=message.get("request_id"))


class FakeServer:
    """``FakeServer(handler)`` runs ``handler(peer)`` for each connection, numbered from 0,
    on a loop in a thread; ``refuse`` answers handshakes with that HTTP status instead."""

    def __init__(self, handler: Handler, refuse: int | None = None) -> None:
        self.handler = handler
        self.refuse = refuse
        self.connections = 0
        self.log: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.failures: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._main, name="fake-ws", daemon=True)
        self.port = 0

    def __enter__(self) -> FakeServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._finish)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _finish(self) -> None:
        assert self._stop is not None
        if not self._stop.done():
            self._stop.set_result(None)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self.headers.append(dict(request.headers.raw_items()))
        self.paths.append(request.path)
        if self.refuse is not None:
            return ws.respond(self.refuse, "refused\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        peer = Peer(ws, self.connections, self.log)
        self.connections += 1
        try:
            await self.handler(peer)
        except ConnectionClosed:
            pass
        except Exception as exc:  # an assertion of the script: the test checks ``failures``
            self.failures.append(exc)

    async def _serve(self) -> None:
        self._stop = self._loop.create_future()
        async with serve(
            self._handle, "127.0.0.1", 0, process_request=self._process_request, ping_interval=None
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop
