"""Fixtures for the flags API tests against the session's real server: a session-wide HTTP
caller, an account (``owner``: write and read keys) with a fresh environment per test
(``env``), and a superuser connection to the control database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import psycopg
import pytest

from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread

from ._helpers import ok, unique


class Call(Protocol):
    def __call__(
        self, method: str, path: str, key: str | None = None, **kwargs: Any
    ) -> httpx.Response: ...


@dataclass(frozen=True)
class Account:
    username: str
    key: str
    """A write key."""
    read_key: str


@dataclass(frozen=True)
class Env:
    """An environment and a caller bound to it (the owner's write key by default)."""

    id: str
    name: str
    owner: Account
    call: Call

    @property
    def base(self) -> str:
        return f"/v1/flags/environments/{self.id}"

    def __call__(self, method: str, path: str = "", key: str | None = None, **kwargs: Any) -> Any:
        """``method`` on ``base + path`` with the owner's key: the response."""
        return self.call(method, self.base + path, key or self.owner.key, **kwargs)

    def ok(self, method: str, path: str = "", status: int = 200, **kwargs: Any) -> Any:
        """Like ``__call__`` but asserts ``status`` and returns the JSON body."""
        return ok(self(method, path, **kwargs), status)

    def version(self) -> int:
        return int(self.ok("GET")["version"])


@pytest.fixture(scope="session")
def call(base_url: str) -> Iterator[Call]:
    """``call(method, path, key=None, **httpx_kwargs)``: one HTTP call to the test server."""
    with httpx.Client(base_url=base_url, timeout=60) as client:

        def do(method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
            headers = dict(kwargs.pop("headers", None) or {})
            if key:
                headers["Authorization"] = f"Bearer {key}"
            return client.request(method, path, headers=headers, **kwargs)

        yield do


MakeAccount = Callable[[], Account]


@pytest.fixture(scope="session")
def make_account(call: Call, make_user: Callable[..., tuple[str, str]]) -> MakeAccount:
    def make() -> Account:
        name, key = make_user(prefix="flags")
        read = ok(call("POST", "/v1/keys", key, json={"scope": "read", "name": "ro"}), 201)
        return Account(name, key, read["secret"])

    return make


@pytest.fixture(scope="session")
def owner(make_account: MakeAccount) -> Account:
    return make_account()


MakeEnv = Callable[..., Env]


@pytest.fixture(scope="session")
def make_env(call: Call) -> MakeEnv:
    def make(account: Account, name: str | None = None, **fields: Any) -> Env:
        body = {"name": name or unique("env"), **fields}
        created = ok(call("POST", "/v1/flags/environments", account.key, json=body), 201)
        return Env(created["id"], created["name"], account, call)

    return make


@pytest.fixture
def env(make_env: MakeEnv, owner: Account) -> Env:
    """A fresh environment of ``owner``."""
    return make_env(owner)


Superuser = Callable[[], psycopg.Connection[Any]]


@pytest.fixture(scope="session")
def control_db(server: ServerThread) -> Superuser:
    """``control_db()`` → an autocommit superuser connection to the control database."""
    pg = EmbeddedPostgres(server.settings.data_dir)

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(pg.url(server.settings.control_database), autocommit=True)

    return connect
