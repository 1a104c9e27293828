"""Test harness: one real millpond server (uvicorn in a thread, on a free port) with its
embedded Postgres in a temporary data directory, started once per test session.

Fixtures give API keys for each role the tests need: ``admin_key``, and ``make_user()``
which creates a fresh user through the API and returns its key.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from millpond.models import UserCreated
from millpond.server.app import create_app
from millpond.server.config import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    settings: Settings
    admin_key: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def start_server(settings: Settings) -> RunningServer:
    """Start a real server in a thread and wait until it answers."""
    announced: list[UserCreated] = []
    app = create_app(settings, announce=lambda created, _path: announced.append(created))
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="millpond-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 90
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    key_file = settings.data_dir / "admin-key"
    admin_key = announced[0].api_key.secret if announced else key_file.read_text().strip()
    return RunningServer(
        f"http://{settings.host}:{settings.port}", settings, admin_key, server, thread
    )


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("millpond-data")


@pytest.fixture(scope="session")
def server(data_dir: Path) -> Iterator[RunningServer]:
    settings = Settings(
        host="127.0.0.1",
        port=free_port(),
        data_dir=data_dir,
        statement_timeout_ms=2000,
        query_max_rows=1000,
    )
    running = start_server(settings)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def base_url(server: RunningServer) -> str:
    return server.url


@pytest.fixture(scope="session")
def admin_key(server: RunningServer) -> str:
    return server.admin_key


_names = itertools.count()


@pytest.fixture(scope="session")
def make_user(server: RunningServer) -> Callable[..., tuple[str, str]]:
    """``make_user(is_admin=False)`` → (username, api_key) of a new user."""

    def make(is_admin: bool = False, prefix: str = "user") -> tuple[str, str]:
        name = f"{prefix}{next(_names)}-{int(time.time() * 1000) % 100000}"
        r = httpx.post(
            f"{server.url}/v1/users",
            json={"username": name, "is_admin": is_admin},
            headers={"Authorization": f"Bearer {server.admin_key}"},
        )
        r.raise_for_status()
        return name, r.json()["api_key"]["secret"]

    return make


@pytest.fixture
def api(base_url: str) -> Iterator[Callable[..., httpx.Response]]:
    """``api(method, path, key=None, **kwargs)``: one HTTP call to the test server."""
    with httpx.Client(base_url=base_url, timeout=30) as client:

        def call(method: str, path: str, key: str | None = None, **kwargs: object) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]

        yield call
