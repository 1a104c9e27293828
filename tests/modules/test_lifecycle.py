"""Lifecycle reducers against real servers: ``client_connected`` runs before the client is
greeted (its ``SenderError`` refuses the connection, with the message, for good),
``client_disconnected`` runs when the connection ends, and, when the server holding it is
killed, exactly once from another server; no client may call either."""

from __future__ import annotations

import sys
import textwrap
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from tests.client_realtime.test_failover import Replica

from _waiting import wait_until
from millpond import Millpond, RealtimeError
from millpond.server.testing import ServerThread

from .test_service import Db, published, two_replicas

MakeUser = Callable[..., tuple[str, str]]

MODULE = textwrap.dedent(
    """
    from millpond.module import ReducerContext, SenderError, Identity, table, reducer
    from millpond.module import primary_key, client_connected, client_disconnected

    @table(public=True)
    class User:
        identity: Identity = primary_key()
        online: bool = False
        connects: int = 0
        disconnects: int = 0

    @table
    class Ban:
        identity: Identity = primary_key()

    @client_connected
    def on_connect(ctx: ReducerContext) -> None:
        if ctx.db.ban.find(ctx.sender) is not None:
            raise SenderError("you are banned from this chat")
        user = ctx.db.user.find(ctx.sender)
        if user is None:
            ctx.db.user.insert(User(identity=ctx.sender, online=True, connects=1))
        else:
            user.online, user.connects = True, user.connects + 1
            ctx.db.user.update(user)

    @client_disconnected
    def on_disconnect(ctx: ReducerContext) -> None:
        user = ctx.db.user.find(ctx.sender)
        if user is not None:
            user.online, user.disconnects = False, user.disconnects + 1
            ctx.db.user.update(user)

    @reducer(private=True)
    def ban(ctx: ReducerContext, who: Identity) -> None:
        ctx.db.ban.insert(Ban(identity=who))
    """
)


def _database(base_url: str, key: str, username: str) -> Db:
    return published(base_url, key, f"{username}/lobby", MODULE)


def _user(db: Db, identity: str) -> list[object] | None:
    rows = db.sql(
        f"SELECT online, connects, disconnects FROM \"user\" WHERE identity = '{identity}'"
    ).json()["data"]
    return rows[0] if rows else None


def test_connect_and_disconnect_run_the_lifecycle_reducers(
    server: ServerThread, make_user: MakeUser
) -> None:
    username, key = make_user(prefix="life")
    db = _database(server.url, key, username)
    with Millpond(key, server.url) as mp:
        with mp.realtime(db.full_name) as rt:
            me = rt.identity
            assert me is not None
            assert _user(db, me) == [True, 1, 0]  # committed before the hello
        wait_until(lambda: _user(db, me) == [False, 1, 1], timeout=60)
        with mp.realtime(db.full_name):
            assert _user(db, me) == [True, 2, 1]
        wait_until(lambda: _user(db, me) == [False, 2, 2], timeout=60)
        # nobody calls them, not even the owner
        for name in ("on_connect", "on_disconnect"):
            r = db.call(name, [])
            assert r.status_code == 403 and r.json()["error"]["code"] == "reducer_lifecycle"
        # the connections table is the reducers' own
        r = db.sql("SELECT * FROM millpond_connections", key=make_user(prefix="life-r")[1])
        assert r.status_code in (400, 403), r.text


def test_a_refusing_client_connected_rejects_the_connection(
    server: ServerThread, make_user: MakeUser, tmp_path: Path
) -> None:
    username, key = make_user(prefix="life-ban")
    db = _database(server.url, key, username)
    guest = Millpond.anonymous(db.full_name, base_url=server.url, token_file=tmp_path / "t")
    with guest:
        assert guest.identity is not None
        assert db.call("ban", [guest.identity]).status_code == 200
        started = time.monotonic()
        with pytest.raises(RealtimeError) as info:
            guest.realtime(db.full_name)
        assert info.value.code == "connection_rejected"
        assert info.value.close_code == 4016
        assert "you are banned from this chat" in str(info.value)
        assert time.monotonic() - started < 30  # refused for good, not retried
    assert _user(db, guest.identity) is None
    rows = db.sql("SELECT count(*) FROM ban").json()["data"]
    assert rows == [[1]]


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[Replica, Replica]]:
    # a dead server is noticed within seconds, not the default 30
    with two_replicas(
        tmp_path,
        MILLPOND_MODULE_REPLICA_HEARTBEAT_S="0.5",
        MILLPOND_MODULE_REPLICA_TIMEOUT_S="3",
        MILLPOND_MODULE_WORKERS="1",
    ) as pair:
        yield pair


def test_a_killed_servers_connections_get_their_disconnect_once(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    admin_key = (a.data_dir / "admin-key").read_text().strip()
    db = _database(a.url, admin_key, "admin")
    db.base = b.url  # read through the server that stays
    db.url = db.url.replace(a.url, b.url)
    with Millpond(admin_key, a.url) as mp:
        sockets = [mp.realtime(db.full_name) for _ in range(3)]
        me = sockets[0].identity
        assert me is not None and _user(db, me) == [True, 3, 0]
        a.kill()  # no client_disconnected from it: it is dead
        wait_until(lambda: _user(db, me) == [False, 3, 3], timeout=90)
        time.sleep(2)  # several more sweeps by b: none runs it again
        assert _user(db, me) == [False, 3, 3]
        # their rows went with their disconnects
        rows = db.sql("SELECT count(*) FROM public.millpond_connections").json()["data"]
        assert rows == [[0]]
        for rt in sockets:
            rt.close()


def test_declarations_and_bindings() -> None:
    from millpond.codegen.python import generate_python
    from millpond.module import DeclarationError, ModuleDef, _declare

    _declare.reset()
    lobby = types.ModuleType("lobby_module")
    sys.modules[lobby.__name__] = lobby  # type hints resolve in the module's globals
    try:
        exec(compile(MODULE, "lobby.py", "exec", dont_inherit=True), lobby.__dict__)
        module = _declare.collect(_declare.REGISTRY)
    finally:
        _declare.reset()
        del sys.modules[lobby.__name__]
    assert module.tracks_connections
    on_connect = module.lifecycle("client_connected")
    assert on_connect is not None and on_connect.name == "on_connect" and on_connect.private
    again = ModuleDef.from_json(module.to_json())
    assert again.lifecycle("client_disconnected") == module.lifecycle("client_disconnected")
    files = generate_python({"version": 1, "definition": module.to_json()}, "a/lobby")
    assert "def ban(" in files["reducers.py"] and "on_connect" not in files["reducers.py"]
    # one of each, taking the context only
    for source, message in (
        ("@client_connected\ndef a(ctx): pass\n@client_connected\ndef b(ctx): pass\n", "twice"),
        ("@client_disconnected\ndef a(ctx, x: int): pass\n", r"the context \(ctx\) only"),
    ):
        _declare.reset()
        try:
            with pytest.raises(DeclarationError, match=message):
                exec(
                    "from millpond.module import client_connected, client_disconnected\n" + source,
                    {},
                )
        finally:
            _declare.reset()


def test_who_is_connected(server: ServerThread, make_user: MakeUser) -> None:
    username, key = make_user(prefix="life-who")
    db = _database(server.url, key, username)
    with Millpond(key, server.url) as mp:
        assert mp.modules.connections(db.full_name) == []
        with mp.realtime(db.full_name) as rt:
            (found,) = mp.modules.connections(db.full_name)
            assert (found.identity, found.connection_id) == (rt.identity, rt.connection_id)
        wait_until(lambda: mp.modules.connections(db.full_name) == [], timeout=60)
    _, stranger = make_user(prefix="life-who-s")
    r = httpx.get(f"{db.url}/connections", headers={"Authorization": f"Bearer {stranger}"})
    assert r.status_code == 403, r.text
    plain_user, plain_key = make_user(prefix="life-plain")
    r = httpx.post(
        f"{server.url}/v1/databases",
        json={"name": "plain"},
        headers={"Authorization": f"Bearer {plain_key}"},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    plain = Db(SimpleNamespace(url=server.url), plain_key, f"{plain_user}/plain")  # type: ignore[arg-type]
    no_lifecycle = MODULE.split("@client_connected")[0].replace(
        ", client_connected, client_disconnected", ""
    )
    assert plain.publish(no_lifecycle).status_code == 201
    r = plain("GET", "/connections")
    assert r.status_code == 409 and r.json()["error"]["code"] == "connections_not_tracked"
