"""A real HTTP server for the SDK's tests: stdlib ``ThreadingHTTPServer`` on a free port in
a background thread, answering from a script of :class:`Reply` and recording every request.

It stands in for the outside world (a millpond server misbehaving on cue: 503s, 429s,
slow answers); tests against the real millpond server live elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from millpond import AsyncMillpond, Millpond, RetryPolicy
from millpond.server.testing import free_port

KEY = "mp_test_key"
FAST = RetryPolicy(base=0.001, cap=0.01)
"""Retries without waiting, so retry tests stay fast."""


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    """JSON-encoded unless ``bytes`` (sent as is); nothing for ``None``."""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering."""


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    json: Any


class FakeServer:
    """Answers request *n* with ``script[n]``, the last reply repeating."""

    def __init__(self) -> None:
        self.script: list[Reply] = [Reply(200, {})]
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                with fake._lock:
                    fake.requests.append(
                        Seen(
                            method=self.command,
                            path=url.path,
                            query=parse_qs(url.query),
                            headers={k.lower(): v for k, v in self.headers.items()},
                            json=json.loads(raw) if raw else None,
                        )
                    )
                    reply = fake.script[min(len(fake.requests), len(fake.script)) - 1]
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.body is None:
                    payload = b""
                elif isinstance(reply.body, bytes):
                    payload = reply.body
                else:
                    payload = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if payload and "Content-Type" not in reply.headers:
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    self.close_connection = True  # the client gave up (a timeout test)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients hanging up mid-answer is expected in timeout tests

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def reply(self, *replies: Reply) -> None:
        self.script = list(replies)

    def count_requests(self, expected: int, within: float = 5.0) -> int:
        """How many requests arrived, waiting up to *within* seconds for *expected* of them:
        a client that timed out may return before the server's thread has read its request."""
        deadline = time.monotonic() + within
        while len(self.requests) < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.requests)

    @property
    def last(self) -> Seen:
        return self.requests[-1]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.stop()


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on."""
    return free_port()


Run = Callable[..., Any]


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest, fake: FakeServer) -> Run:
    """``run(lambda mp: mp.something(...), **client_kwargs)``: the call made with a
    ``Millpond`` (sync) or an ``AsyncMillpond`` (awaiting what the lambda returns), against
    the fake server unless ``base_url`` is given; it returns the result or raises."""

    def run_sync(fn: Callable[[Any], Any], **kwargs: Any) -> Any:
        kwargs = {"api_key": KEY, "base_url": fake.url, "retry_policy": FAST, **kwargs}
        with Millpond(**kwargs) as mp:
            return fn(mp)

    def run_async(fn: Callable[[Any], Any], **kwargs: Any) -> Any:
        kwargs = {"api_key": KEY, "base_url": fake.url, "retry_policy": FAST, **kwargs}

        async def main() -> Any:
            async with AsyncMillpond(**kwargs) as mp:
                return await fn(mp)

        return asyncio.run(main())

    return run_sync if request.param == "sync" else run_async
