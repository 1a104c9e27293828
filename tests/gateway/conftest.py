"""Fixtures for the gateway tests: the live gateway of the session server, a fresh user
with a fresh database per test, connection strings, and a raw wire-protocol client
(libpq-based drivers do not report the SQLSTATE of a refused connection)."""

from __future__ import annotations

import itertools
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from millpond.server.gateway import Gateway
from millpond.server.gateway import protocol as pq
from millpond.server.testing import ServerThread

_names = itertools.count()


@pytest.fixture(scope="session")
def gateway(server: ServerThread) -> Gateway:
    gw = server.server.config.app.state.services.gateway
    assert isinstance(gw, Gateway) and gw.listening
    return gw


@pytest.fixture(scope="session")
def port(gateway: Gateway) -> int:
    assert gateway.port is not None
    return gateway.port


@dataclass
class Tenant:
    """A user with a database of their own."""

    username: str
    key: str
    database: str  # owner/name

    def dsn(self, port: int, key: str | None = None, sslmode: str = "disable", **extra: Any) -> str:
        params = {
            "host": "127.0.0.1",
            "port": port,
            "user": "anyone",
            "password": key or self.key,
            "dbname": self.database,
            "sslmode": sslmode,
            **extra,
        }
        return " ".join(f"{k}='{v}'" for k, v in params.items())


class Http:
    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=30)

    def __call__(self, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
        r = self.client.request(method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs)
        assert r.status_code < 400, r.text
        return r


@pytest.fixture(scope="session")
def http(base_url: str) -> Iterator[Http]:
    h = Http(base_url)
    yield h
    h.client.close()


@pytest.fixture
def make_tenant(make_user: Callable[..., tuple[str, str]], http: Http) -> Callable[..., Tenant]:
    def make(**db_fields: Any) -> Tenant:
        username, key = make_user(prefix="gw")
        name = f"db{next(_names)}"
        http("POST", "/v1/databases", key, json={"name": name, **db_fields})
        return Tenant(username, key, f"{username}/{name}")

    return make


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant()


def new_key(http: Http, key: str, **fields: Any) -> tuple[str, str]:
    """(id, secret) of a new key of the same user."""
    body = http("POST", "/v1/keys", key, json=fields).json()
    return body["id"], body["secret"]


# -- a raw client ----------------------------------------------------------------------------


class Wire:
    """Just enough of a frontend to see what the gateway answers, message by message."""

    def __init__(self, port: int, tls: bool = False) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            ("127.0.0.1", port), timeout=10
        )
        if tls:
            self.sock.sendall(pq.ssl_request())
            assert self.sock.recv(1) == b"S"
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            self.sock = context.wrap_socket(self.sock)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionResetError(f"closed after {data!r}")
            data += chunk
        return data

    def message(self) -> tuple[bytes, bytes]:
        kind, length = pq.message_length(self.recv_exactly(5))
        return kind, self.recv_exactly(length)

    def error(self) -> dict[str, str]:
        """Read until an ErrorResponse; its fields."""
        while True:
            kind, payload = self.message()
            if kind == b"E":
                return pq.parse_error_fields(payload)

    def login(self, database: str, password: str, user: str = "anyone") -> dict[str, str] | None:
        """Log in; the ErrorResponse's fields, or None once ReadyForQuery came."""
        self.send(pq.startup_message({"user": user, "database": database}))
        kind, payload = self.message()
        if kind == b"E":
            return pq.parse_error_fields(payload)
        assert (kind, pq.parse_auth(payload)[0]) == (b"R", pq.AUTH_CLEARTEXT)
        self.send(pq.password_message(password))
        while True:
            kind, payload = self.message()
            if kind == b"E":
                return pq.parse_error_fields(payload)
            if kind == b"Z":
                return None

    def closed(self, timeout: float = 5) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def wire(port: int) -> Iterator[Callable[..., Wire]]:
    opened: list[Wire] = []

    def open_(tls: bool = False) -> Wire:
        w = Wire(port, tls)
        opened.append(w)
        return w

    yield open_
    for w in opened:
        w.close()
