"""Anonymous identities against a real server: a client without an account gets an
identity and a token (over HTTP, or from a realtime socket opened without a key), is the
same identity again with it (reconnects, a new process), and is nothing more: the token
works on its database only, for reducer calls, the module's schema and the realtime
socket. Tokens are signed and stored hashed; the owner lists and revokes identities and
turns anonymous access off, which refuses tokens and closes their sockets at once."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from millpond import AsyncMillpond, ConflictError, Millpond, UnauthorizedError
from millpond.server.config import Settings
from millpond.server.databases.service import Access
from millpond.server.errors import ServiceError
from millpond.server.modules.identities import Identities, new_token, read_token
from millpond.server.testing import ServerThread

from .test_service import CHAT, Db

MakeUser = Callable[..., tuple[str, str]]
CLOSE_WITHIN_S = 5.0


def _database(server: ServerThread, make_user: MakeUser, *, public: bool, module: bool) -> Db:
    username, key = make_user(prefix="anon")
    r = httpx.post(
        f"{server.url}/v1/databases",
        json={"name": "chat", "is_private": not public},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    db = Db(server, key, f"{username}/chat")
    if module:
        r = db.publish(CHAT)
        assert r.status_code == 201, r.text
    return db


@pytest.fixture(scope="module")
def chat(server: ServerThread, make_user: MakeUser) -> Db:
    return _database(server, make_user, public=True, module=True)


@pytest.fixture(scope="module")
def other(server: ServerThread, make_user: MakeUser) -> Db:
    return _database(server, make_user, public=True, module=True)


def _anon(db: Db, method: str, path: str, token: str | None, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.request(method, db.url + path, headers=headers, timeout=60, **kw)


def _mint(db: Db) -> dict[str, Any]:
    r = _anon(db, "POST", "/identities", None)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    assert created["database"] == db.full_name
    return created


def _error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text


def _control(server: ServerThread) -> psycopg.Connection[tuple[Any, ...]]:
    cluster = server.server.config.app.state.services.cluster
    return psycopg.connect(cluster.control_conninfo, autocommit=True)


class Socket:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.hello = self.next()
        assert self.hello["type"] == "hello", self.hello

    def next(self, timeout: float = 30) -> dict[str, Any]:
        while True:
            message = json.loads(self.ws.recv(timeout=timeout))
            if message["type"] != "ping":
                return dict(message)

    def closed(self) -> tuple[int, str]:
        """The server's close (code, reason), within CLOSE_WITHIN_S."""
        start = time.monotonic()
        with pytest.raises(ConnectionClosed) as info:
            while True:
                self.next(timeout=CLOSE_WITHIN_S + 5)
        assert time.monotonic() - start < CLOSE_WITHIN_S
        assert info.value.rcvd is not None, "closed without a close frame"
        return info.value.rcvd.code, info.value.rcvd.reason


@pytest.fixture
def sockets() -> Iterator[Callable[..., Socket]]:
    with contextlib.ExitStack() as opened:

        def open_socket(db: Db, token: str | None) -> Socket:
            url = db.base.replace("http://", "ws://") + f"/v1/realtime/{db.full_name}"
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            ws = opened.enter_context(connect(url, additional_headers=headers, open_timeout=30))
            return Socket(ws)

        yield open_socket


def _refused(db: Db, token: str | None) -> tuple[int, str]:
    url = db.base.replace("http://", "ws://") + f"/v1/realtime/{db.full_name}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with (
        connect(url, additional_headers=headers, open_timeout=30) as ws,
        pytest.raises(ConnectionClosed) as info,
    ):
        ws.recv(timeout=30)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


# -- being an identity -----------------------------------------------------------------------


def test_an_anonymous_client_stays_one_identity(chat: Db, tmp_path: Path) -> None:
    token_file = tmp_path / "keep" / "token"
    with Millpond.anonymous(chat.full_name, base_url=chat.base, token_file=token_file) as mp:
        me = mp.identity
        assert me is not None and len(me) == 64
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        assert mp.call(chat.full_name, "set_name", "anon").status == "committed"
        with mp.realtime(chat.full_name) as rt:
            assert rt.identity == me
            rt.subscribe(["SELECT * FROM message"])
            sent = rt.call("send_message", "from nobody")
            assert rt.table("message").find(sent.return_value)["sender"] == me
    # a new process: the same identity from the kept token, not a new one
    with Millpond.anonymous(chat.full_name, base_url=chat.base, token_file=token_file) as again:
        assert again.identity == me
        again.call(chat.full_name, "set_name", "still anon")
    users = chat.sql(f"SELECT name FROM \"user\" WHERE identity = '{me}'").json()
    assert users["data"] == [["still anon"]]
    # a user's key is the user's identity, told apart from anonymous ones
    with Millpond(chat.key, chat.base) as owner, owner.realtime(chat.full_name) as rt:
        assert rt.identity is not None and rt.identity != me
        assert owner.identity is None


def test_the_async_client_too(chat: Db, tmp_path: Path) -> None:
    asyncio.run(_async_client(chat, tmp_path / "token"))


async def _async_client(chat: Db, token_file: Path) -> None:
    mp = await AsyncMillpond.anonymous(chat.full_name, base_url=chat.base, token_file=token_file)
    async with mp:
        result = await mp.call(chat.full_name, "send_message", "async and anonymous")
        assert result.status == "committed"
        assert token_file.read_text().strip() == mp._transport.config.api_key
    given = await AsyncMillpond.anonymous(
        chat.full_name, base_url=chat.base, token=token_file.read_text().strip()
    )
    async with given:
        assert given.identity == mp.identity


def test_a_socket_opened_without_a_key_gets_an_identity(
    chat: Db, sockets: Callable[..., Socket]
) -> None:
    first = sockets(chat, None)
    assert first.hello["anonymous"] is True
    identity, token = first.hello["identity"], first.hello["token"]
    assert token.startswith("mpt_") and identity in token
    again = sockets(chat, token)
    assert again.hello["identity"] == identity and "token" not in again.hello
    # the socket's calls are the identity's
    again.ws.send(
        json.dumps(
            {"type": "call", "request_id": "c1", "reducer": "set_name", "args": ["by socket"]}
        )
    )
    while (answer := again.next())["type"] != "call_result":
        pass
    assert answer["request_id"] == "c1" and answer["outcome"]["status"] == "committed", answer
    rows = chat.sql(f"SELECT name FROM \"user\" WHERE identity = '{identity}'").json()["data"]
    assert rows == [["by socket"]]
    owner = sockets(chat, chat.key)
    assert owner.hello["anonymous"] is False and "token" not in owner.hello


def test_tokens_are_signed_and_stored_hashed(chat: Db, server: ServerThread) -> None:
    created = _mint(chat)
    token = created["token"]
    with _control(server) as conn:
        rows = conn.execute(
            "SELECT token_hash FROM anonymous_identities WHERE identity = %s",
            (created["identity"],),
        ).fetchall()
        dump = conn.execute(
            "SELECT string_agg(t::text, ' ') FROM anonymous_identities t"
        ).fetchone()
    assert rows == [(hashlib.sha256(token.encode()).digest(),)]
    assert dump is not None and token not in dump[0] and token.split(".")[2] not in dump[0]
    assert _anon(chat, "GET", "/module", token).status_code == 200
    body, signature = token.rsplit(".", 1)
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    forged = [
        f"{body}.{flipped}",  # a changed signature
        token.replace(created["identity"], "0" * 64),  # another identity, same signature
        new_token(b"not the server's secret", int(token[4:].split(".")[0]))[1],
        "mpt_" + "x" * 40,
        "mpt_",
    ]
    for bad in forged:
        _error(_anon(chat, "POST", "/call/set_name", bad, json=["x"]), 401, "unauthorized")


def test_an_identity_token_reaches_nothing_else(
    chat: Db, other: Db, server: ServerThread, sockets: Callable[..., Socket]
) -> None:
    token = _mint(chat)["token"]
    base = chat.base
    refused = [
        ("GET", f"{base}/v1/me", None),
        ("GET", f"{base}/v1/databases", None),
        ("POST", f"{base}/v1/query", {"database": chat.full_name, "sql": "SELECT 1"}),
        ("GET", f"{chat.url}", None),
        ("GET", f"{chat.url}/module/versions", None),
        ("GET", f"{chat.url}/module/logs", None),
        ("GET", f"{chat.url}/module/settings", None),
        ("GET", f"{chat.url}/identities", None),
        ("POST", f"{chat.url}/module", {"files": {"chat.py": CHAT}}),
        ("GET", f"{base}/v1/flags/environments", None),
        ("GET", f"{base}/v1/keys", None),
        ("POST", f"{base}/v1/exports", {"database": chat.full_name, "table": "message"}),
    ]
    for method, url, payload in refused:
        r = httpx.request(
            method, url, json=payload, timeout=60, headers={"Authorization": f"Bearer {token}"}
        )
        _error(r, 403, "anonymous_identity")
    _error(_anon(chat, "POST", "/call/wipe", token, json=[]), 403, "reducer_private")
    _error(
        _anon(other, "POST", "/call/set_name", token, json=["x"]), 403, "identity_other_database"
    )
    _error(_anon(other, "GET", "/module", token), 403, "identity_other_database")
    assert _refused(other, token) == (4003, "identity_other_database")
    # not a password for the gateway
    settings = server.settings
    with pytest.raises(psycopg.OperationalError, match="API key"):
        psycopg.connect(
            host="127.0.0.1",
            port=settings.gateway_port,
            dbname=chat.full_name,
            user="anon",
            password=token,
            connect_timeout=30,
        )


# -- the owner's controls ----------------------------------------------------------------


def test_the_owner_revokes_an_identity(chat: Db, sockets: Callable[..., Socket]) -> None:
    created = _mint(chat)
    identity, token = created["identity"], created["token"]
    live = sockets(chat, token)
    listed = chat("GET", "/identities").json()
    assert identity in [i["identity"] for i in listed]
    assert chat("DELETE", f"/identities/{identity}").status_code == 204
    assert live.closed() == (4001, "key_revoked")
    _error(_anon(chat, "POST", "/call/set_name", token, json=["x"]), 401, "identity_revoked")
    assert _refused(chat, token) == (4001, "identity_revoked")
    _error(chat("DELETE", f"/identities/{identity}"), 404, "identity_not_found")
    _error(chat("DELETE", "/identities/not-an-identity"), 404, "identity_not_found")
    assert identity not in [i["identity"] for i in chat("GET", "/identities").json()]
    revoked = chat("GET", "/identities", params={"revoked": "true"}).json()
    (entry,) = [i for i in revoked if i["identity"] == identity]
    assert entry["revoked_at"] is not None
    _error(chat("GET", "/identities", params={"limit": 0}), 422, "validation_error")


def test_who_may_manage_identities(chat: Db, make_user: MakeUser) -> None:
    identity = _mint(chat)["identity"]
    _, stranger_key = make_user(prefix="anon-stranger")
    writer, writer_key = make_user(prefix="anon-writer")
    r = chat("PUT", f"/collaborators/{writer}", json={"role": "write"})
    assert r.status_code in (200, 201, 204), r.text
    for key in (stranger_key, writer_key):
        _error(chat("GET", "/identities", key), 403, "forbidden")
        _error(chat("DELETE", f"/identities/{identity}", key), 403, "forbidden")
        _error(chat("GET", "/module/settings", key), 403, "forbidden")
        _error(
            chat("PATCH", "/module/settings", key, json={"anonymous_access": False}),
            403,
            "forbidden",
        )
    _error(
        chat("PATCH", "/module/settings", json={"anonymous_access": "maybe"}),
        422,
        "validation_error",
    )
    _error(chat("PATCH", "/module/settings", json={"other": True}), 422, "validation_error")
    assert chat("GET", "/module/settings").json() == {"anonymous_access": True}


def test_turning_anonymous_access_off(
    server: ServerThread, make_user: MakeUser, sockets: Callable[..., Socket]
) -> None:
    db = _database(server, make_user, public=True, module=True)
    token = _mint(db)["token"]
    live = sockets(db, token)
    r = db("PATCH", "/module/settings", json={"anonymous_access": False})
    assert r.status_code == 200 and r.json() == {"anonymous_access": False}
    assert live.closed() == (4003, "access_revoked")
    _error(_anon(db, "POST", "/identities", None), 403, "anonymous_disabled")
    _error(_anon(db, "POST", "/call/set_name", token, json=["x"]), 403, "anonymous_disabled")
    assert _refused(db, None) == (4003, "anonymous_disabled")
    assert _refused(db, token) == (4003, "anonymous_disabled")
    # users' keys are not affected; back on, the same token works again
    assert db.call("set_name", ["owner"]).status_code == 200
    db("PATCH", "/module/settings", json={"anonymous_access": True})
    assert _anon(db, "POST", "/call/set_name", token, json=["back"]).status_code == 200
    # a database made private refuses its anonymous identities, and says nothing more
    assert db("PATCH", "", json={"is_private": True}).status_code == 200
    _error(_anon(db, "POST", "/call/set_name", token, json=["x"]), 404, "database_not_found")
    _error(_anon(db, "POST", "/identities", None), 404, "database_not_found")
    assert _refused(db, None) == (4001, "unauthorized")


def test_only_public_databases_with_a_module_take_anonymous_identities(
    server: ServerThread, make_user: MakeUser
) -> None:
    private = _database(server, make_user, public=False, module=True)
    _error(_anon(private, "POST", "/identities", None), 404, "database_not_found")
    assert _refused(private, None) == (4001, "unauthorized")
    plain = _database(server, make_user, public=True, module=False)
    _error(_anon(plain, "POST", "/identities", None), 409, "module_not_found")
    assert _refused(plain, None) == (4001, "unauthorized")
    missing = Db(server, plain.key, f"{plain.full_name}-missing")
    _error(_anon(missing, "POST", "/identities", None), 404, "database_not_found")
    with pytest.raises(ConflictError) as info:
        Millpond.anonymous(plain.full_name, base_url=plain.base)
    assert info.value.code == "module_not_found" and "millpond publish" in str(info.value)


def test_a_revoked_token_raises_in_the_sdk(chat: Db, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    with Millpond.anonymous(chat.full_name, base_url=chat.base, token_file=token_file) as mp:
        assert chat("DELETE", f"/identities/{mp.identity}").status_code == 204
        with pytest.raises(UnauthorizedError) as info:
            mp.call(chat.full_name, "set_name", "x")
        assert info.value.code == "identity_revoked"


def test_identities_are_made_at_a_bounded_rate() -> None:
    identities = Identities(None, b"secret", Settings(module_anonymous_identities_per_minute=3))  # type: ignore[arg-type]
    access = Access(
        id=7,
        pg_name="mp_db_7",
        owner="a",
        name="b",
        is_private=False,
        storage_limit_bytes=None,
        role="read",
    )
    for _ in range(3):
        identities._count(access)
    with pytest.raises(ServiceError) as info:
        identities._count(access)
    assert info.value.status == 429 and info.value.code == "rate_limited"
    assert 1 <= int(info.value.headers["Retry-After"]) <= 61  # type: ignore[attr-defined]
    other = Access(
        id=8,
        pg_name="mp_db_8",
        owner="a",
        name="c",
        is_private=False,
        storage_limit_bytes=None,
        role="read",
    )
    identities._count(other)  # per database


def test_token_format() -> None:
    identity, token = new_token(b"k", 42)
    assert read_token(b"k", token) == (42, identity)
    assert read_token(b"other", token) is None
    assert read_token(b"k", token + "x") is None
    assert read_token(b"k", token.replace("mpt_42", "mpt_43")) is None


def test_end_users_never_see_private_tables(chat: Db, tmp_path: Path) -> None:
    from millpond import SubscriptionError

    with Millpond.anonymous(chat.full_name, base_url=chat.base, token_file=tmp_path / "t") as mp:
        with mp.realtime(chat.full_name) as rt:
            rt.subscribe(["SELECT * FROM message"])  # public: fine
            with pytest.raises(SubscriptionError) as info:
                rt.subscribe(["SELECT * FROM note"])  # private: the reducers' only
            assert "note" in str(info.value)
        token = mp._transport.config.api_key
    r = httpx.post(
        f"{chat.base}/v1/query",
        json={"database": chat.full_name, "sql": "SELECT * FROM note"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    _error(r, 403, "anonymous_identity")
