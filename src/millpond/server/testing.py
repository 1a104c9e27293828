"""Run a real millpond server in a background thread — for tests and benchmarks."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

from ..models import UserCreated
from .app import create_app
from .config import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", lifespan="on"
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
    return ServerThread(
        f"http://{settings.host}:{settings.port}", settings, admin_key, server, thread
    )
