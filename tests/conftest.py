"""Test harness: one real millpond server (uvicorn in a thread, on a free port) with its
embedded Postgres in a temporary data directory, started once per test session.

Fixtures give API keys for each role the tests need: ``admin_key``, and ``make_user()``
which creates a fresh user through the API and returns its key.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from millpond.server.config import Settings
from millpond.server.postgres.embedded import TEMPLATE_ENV
from millpond.server.testing import ServerThread, free_port, start_server

RunningServer = ServerThread

# every embedded Postgres of this session (the session server's, the tests' own, those of
# `millpond up` subprocesses) is a copy of one initdb'd cluster: dozens of initdbs cost
# minutes (see postgres/embedded.py; the copies share a superuser password)
# (one per test process: pytest-xdist's workers inherit the controller's environment, and
# one worker's removing the template at its end must not pull it from under another's copy)
_TEMPLATE = Path(tempfile.gettempdir()) / f"millpond-pg-template-{os.getpid()}"
_GIVEN = os.environ.get(TEMPLATE_ENV)
if _GIVEN is None or Path(_GIVEN).name.startswith("millpond-pg-template-"):
    os.environ[TEMPLATE_ENV] = str(_TEMPLATE)

# run as root (CI), the embedded Postgres runs as millpond-pg, which needs traverse on the
# temporary directories: the default (postgres/as_root.py) sets that up; a
# MILLPOND_ALLOW_ROOT_SETUP=false of whoever runs the tests would make every start refuse
os.environ.pop("MILLPOND_ALLOW_ROOT_SETUP", None)


# the CLI's saved logins (`millpond login`) of whoever runs the tests never reach them
_CONFIG = Path(tempfile.gettempdir()) / f"millpond-test-config-{os.getpid()}"
os.environ["MILLPOND_CONFIG_DIR"] = str(_CONFIG)
os.environ.pop("MILLPOND_PROFILE", None)


def pytest_sessionfinish(session: pytest.Session) -> None:
    shutil.rmtree(_TEMPLATE, ignore_errors=True)
    shutil.rmtree(_CONFIG, ignore_errors=True)


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
        realtime_idle_seconds=0.5,
        realtime_send_buffer_bytes=1024 * 1024,
        module_workers=1,  # one worker process per module: fewer to start in every test
        module_issuer_allow_insecure=True,  # token issuers' keys from a local http server
        gateway_port=free_port(),  # not the default 5433: test sessions may run side by side
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

        def call(
            method: str, path: str, key: str | None = None, **kwargs: object
        ) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]

        yield call


class FlagsEnv:
    """A fresh user's flags environment: ``env(method, "/flags", 201, json=…)`` calls
    ``/v1/flags/environments/{id}/flags`` with the owner's key, asserts the status and
    returns the JSON body (None when empty)."""

    def __init__(self, http: httpx.Client, key: str, env_id: str) -> None:
        self.http, self.key, self.id = http, key, env_id

    def __call__(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        r = self.http.request(
            method,
            f"/v1/flags/environments/{self.id}{path}",
            headers={"Authorization": f"Bearer {self.key}"},
            **kwargs,
        )
        assert r.status_code == status, r.text
        return r.json() if r.content else None

    def bound_key(self, scope: str = "write") -> str:
        """A new key bound to this environment."""
        return str(self("POST", "/keys", 201, json={"scope": scope})["secret"])


@pytest.fixture
def flags_env(base_url: str, make_user: Callable[..., tuple[str, str]]) -> Iterator[FlagsEnv]:
    _, key = make_user(prefix="flagenv")
    with httpx.Client(base_url=base_url, timeout=30) as http:
        auth = {"Authorization": f"Bearer {key}"}
        r = http.post("/v1/flags/environments", json={"name": "prod"}, headers=auth)
        assert r.status_code == 201, r.text
        yield FlagsEnv(http, key, r.json()["id"])


def in_forked_child(body: Callable[[], bool]) -> bool:
    """Run ``body`` in a ``fork()``ed child; whether it returned True (an exception is
    False). The child exits at once without running the parent's cleanup."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read)
            code = 0 if body() else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(code)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    return answer == bytes([0])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless (``console/_helpers.CHROMIUM_ARGS``), for a module's
    browser tests (the console's, the API docs page's, the attacks on both)."""
    from playwright.sync_api import sync_playwright

    from console._helpers import CHROMIUM_ARGS

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield launched
        launched.close()
