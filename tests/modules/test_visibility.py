"""Row visibility rules (``@table(public=True, visible_if="owner_identity = :sender")``)
against a real server: no path returns a row the rule hides from its caller — the HTTP
query API, the gateway, realtime initial rows and every streamed insert, update and
delete — for millpond users (readers and a writer) and anonymous identities alike, while
the owner and the module's reducers see every row. And the proof that binds a session to
its identity cannot be forged, read, shadowed or borrowed by a reader or a writer."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import re
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import errors
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from millpond.module import _declare
from millpond.module._def import ModuleDef
from millpond.module._types import Identity
from millpond.server.modules import migrate, row_visibility
from millpond.server.realtime.visibility import Rule, _for_viewers
from millpond.server.testing import ServerThread

from .test_service import Db

MakeUser = Callable[..., tuple[str, str]]
_names = itertools.count()
PROOF = re.compile(r"[0-9a-f]{64}\.[0-9a-f]{64}")

MODULE = textwrap.dedent(
    """
    from millpond.module import ReducerContext, Identity, table, reducer, primary_key

    @table(public=True, visible_if="owner_identity = :sender")
    class Note:
        id: int = primary_key()
        owner_identity: Identity
        body: str

    @table(public=True)
    class Board:
        id: int = primary_key()
        body: str

    @reducer
    def add(ctx: ReducerContext, id: int, body: str) -> None:
        ctx.db.note.insert(Note(id=id, owner_identity=ctx.sender, body=body))

    @reducer
    def give(ctx: ReducerContext, id: int, to: Identity) -> None:
        ctx.sql("UPDATE note SET owner_identity = %s WHERE id = %s", [to, id])

    @reducer
    def edit(ctx: ReducerContext, id: int, body: str) -> None:
        ctx.sql("UPDATE note SET body = %s WHERE id = %s", [body, id])

    @reducer
    def remove(ctx: ReducerContext, id: int) -> None:
        ctx.sql("DELETE FROM note WHERE id = %s", [id])

    @reducer
    def post(ctx: ReducerContext, id: int, body: str) -> None:
        ctx.db.board.insert(Board(id=id, body=body))

    @reducer
    def me(ctx: ReducerContext) -> Identity:
        return ctx.sender

    @reducer
    def count_all(ctx: ReducerContext) -> int:
        return ctx.db.note.count()

    @reducer
    def sender_in_sql(ctx: ReducerContext) -> Identity | None:
        return ctx.sql("SELECT millpond.sender() AS s")[0]["s"]

    @reducer
    def peek(ctx: ReducerContext) -> int:
        return len(ctx.sql("SELECT * FROM millpond.identity_key"))
    """
)


@dataclass
class Caller:
    name: str
    credential: str  # an API key or an anonymous token
    identity: str = ""
    api_user: bool = True


@dataclass
class World:
    server: ServerThread
    db: Db
    owner: Caller
    callers: dict[str, Caller]  # alice, bob (readers), writer (rw), anon1, anon2
    pg_name: str = ""

    def call(self, who: Caller, reducer: str, *args: Any) -> Any:
        r = self.db.call(reducer, list(args), who.credential)
        assert r.status_code == 200, r.text
        return r.json()["return"]

    def sql(self, who: Caller, text: str) -> list[dict[str, Any]]:
        r = self.db.sql(text, who.credential)
        assert r.status_code == 200, r.text
        body = r.json()
        names = [c["name"] for c in body["columns"]]
        return [dict(zip(names, row, strict=True)) for row in body["data"]]

    def own_ids(self, who: Caller) -> set[int]:
        rows = self.sql(self.owner, f"SELECT id FROM note WHERE owner_identity = '{who.identity}'")
        return {r["id"] for r in rows}

    @property
    def secret(self) -> bytes:
        secret: bytes = self.server.server.config.app.state.services.query.secret
        return secret

    def gateway(self, who: Caller, **params: Any) -> psycopg.Connection[tuple[Any, ...]]:
        port = self.server.server.config.app.state.services.gateway.port
        return psycopg.connect(
            host="127.0.0.1",
            port=port,
            user="anyone",
            password=who.credential,
            dbname=self.db.full_name,
            sslmode="disable",
            autocommit=True,
            **params,
        )


def _new_database(server: ServerThread, make_user: MakeUser) -> tuple[Db, Caller]:
    username, key = make_user(prefix="visowner")
    name = f"vis{next(_names)}"
    r = httpx.post(
        f"{server.url}/v1/databases",
        json={"name": name, "is_private": False},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    return Db(server, key, f"{username}/{name}"), Caller("owner", key)


def _mint(db: Db, name: str) -> Caller:
    r = httpx.post(f"{db.url}/identities", timeout=60)
    assert r.status_code == 201, r.text
    return Caller(name, r.json()["token"], r.json()["identity"], api_user=False)


@pytest.fixture(scope="module")
def world(server: ServerThread, make_user: MakeUser) -> World:
    db, owner = _new_database(server, make_user)
    r = db.publish(MODULE)
    assert r.status_code == 201, r.text
    assert '+ table note visible_if "owner_identity = :sender"' in r.json()["diff"]
    callers = {name: Caller(name, make_user(prefix=name)[1]) for name in ("alice", "bob")}
    writer_name, writer_key = make_user(prefix="writer")
    r = db("PUT", f"/collaborators/{writer_name}", json={"role": "write"})
    assert r.status_code == 200, r.text
    callers["writer"] = Caller("writer", writer_key)
    callers["anon1"], callers["anon2"] = _mint(db, "anon1"), _mint(db, "anon2")
    w = World(server, db, owner, callers)
    for caller in [owner, *callers.values()]:
        caller.identity = w.call(caller, "me")
    assert len({c.identity for c in [owner, *callers.values()]}) == 6
    w.pg_name = w.sql(owner, "SELECT current_database() AS d")[0]["d"]
    for number, caller in enumerate(callers.values(), start=1):
        w.call(caller, "add", number, f"secret-of-{caller.name}")
    w.call(owner, "add", 9, "secret-of-owner")
    w.call(callers["alice"], "post", 1, "for everyone")
    return w


def _ids(rows: list[dict[str, Any]]) -> set[int]:
    return {r["id"] for r in rows}


# -- the HTTP query API ----------------------------------------------------------------------


def test_http_queries_return_only_the_callers_rows(world: World) -> None:
    w = world
    everyone = w.sql(w.owner, "SELECT * FROM note")
    assert _ids(everyone) == {1, 2, 3, 4, 5, 9}  # the owner owns the table: every row
    assert w.call(w.owner, "count_all") == 6  # so do the module's reducers
    for name in ("alice", "bob", "writer"):
        who = w.callers[name]
        rows = w.sql(who, "SELECT * FROM note")
        assert rows and all(r["owner_identity"] == who.identity for r in rows), (name, rows)
        assert _ids(rows) == w.own_ids(who)
        counted = w.sql(who, "SELECT count(*) AS n FROM note")[0]["n"]
        assert counted == len(rows)
        # the proven identity, as the policy sees it
        assert w.sql(who, "SELECT millpond.sender() AS s")[0]["s"] == who.identity
        # a public table without a rule: every row for everyone
        assert w.sql(who, "SELECT body FROM board") == [{"body": "for everyone"}]
    # end users have no SQL: their only reads are realtime (below)
    for name in ("anon1", "anon2"):
        r = w.db.sql("SELECT * FROM note", w.callers[name].credential)
        assert r.status_code == 403 and r.json()["error"]["code"] == "anonymous_identity"


def test_pooled_sessions_never_carry_one_callers_proof_to_the_next(world: World) -> None:
    """The query API's sessions are shared by everyone with the same role: callers one
    after the other, on the same few connections, each see their own rows only."""
    w = world
    alice, bob = w.callers["alice"], w.callers["bob"]
    for _ in range(15):
        for who in (alice, bob):
            got = w.sql(who, "SELECT id, current_setting('millpond.identity', true) AS p FROM note")
            assert _ids(got) == w.own_ids(who)
            assert {r["p"].split(".")[0] for r in got} == {who.identity}
    # a session-level setting the caller makes dies with its call (DISCARD ALL)
    forged = f"{alice.identity}.{'0' * 64}"
    assert w.sql(bob, f"SELECT set_config('millpond.identity', '{forged}', false) AS x")
    for _ in range(5):
        assert _ids(w.sql(bob, "SELECT id FROM note")) == w.own_ids(bob)


def test_forging_or_dropping_the_proof_over_http_shows_nothing(world: World) -> None:
    w = world
    alice, bob = w.callers["alice"], w.callers["bob"]
    attempts = [
        f"SET millpond.identity = '{alice.identity}.{'0' * 64}'",
        f"SELECT set_config('millpond.identity', '{alice.identity}.{'f' * 64}', true)",
        f"SELECT set_config('millpond.identity', '{alice.identity}', true)",
        f"SELECT set_config('millpond.identity', '{alice.identity}.{'a' * 64}.x', true)",
        "SET millpond.identity = ''",
        "RESET millpond.identity",
        "RESET ALL",
    ]
    for attempt in attempts:
        rows = w.sql(bob, f"{attempt}; SELECT id, millpond.sender() AS s FROM note")
        assert rows == [], (attempt, rows)
        assert w.sql(bob, f"{attempt}; SELECT millpond.sender() AS s") == [{"s": None}]
    # a leaky expression is evaluated after the policy, never on a hidden row
    leaky = f"SELECT id FROM note WHERE owner_identity <> '{bob.identity}' AND body::int > 0"
    assert w.sql(bob, leaky) == []
    r = w.db.sql("SET row_security = off; SELECT * FROM note", bob.credential)
    assert r.status_code == 400 and "row-level security" in r.text and "secret-of" not in r.text


def _export(w: World, who: Caller) -> set[int]:
    headers = {"Authorization": f"Bearer {who.credential}"}
    body = {"db_name": w.db.full_name, "table_name": "note", "export_format": "csv"}
    with httpx.Client(base_url=w.db.base, headers=headers, timeout=60) as client:
        r = client.post("/v1/exports", json=body)
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 60
        while (job := client.get(f"/v1/exports/{r.json()['id']}").json())["state"] not in (
            "DONE",
            "FAILED",
        ):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["state"] == "DONE", job
        rows = list(csv.DictReader(io.StringIO(client.get(job["download_url"]).text)))
    return {int(r["id"]) for r in rows}


def test_an_export_holds_only_the_exporters_rows(world: World) -> None:
    w = world
    for name in ("alice", "bob"):
        assert _export(w, w.callers[name]) == w.own_ids(w.callers[name]), name
    assert _export(w, w.owner) >= {1, 2, 3, 4, 5, 9}


# -- the gateway -----------------------------------------------------------------------------


def test_gateway_sessions_return_only_the_key_users_rows(world: World) -> None:
    w = world
    for name in ("alice", "bob", "writer"):
        who = w.callers[name]
        with w.gateway(who) as conn:
            rows = conn.execute("SELECT id, owner_identity FROM note").fetchall()
            assert {r[0] for r in rows} == w.own_ids(who) and rows
            assert {r[1] for r in rows} == {who.identity}
            assert conn.execute("SELECT millpond.sender()").fetchone() == (who.identity,)
    with w.gateway(w.owner) as conn:
        assert {r[0] for r in conn.execute("SELECT id FROM note")} == {1, 2, 3, 4, 5, 9}


def test_gateway_sessions_cannot_become_another_identity(world: World) -> None:
    w = world
    alice, bob = w.callers["alice"], w.callers["bob"]
    forged = f"{alice.identity}.{'0' * 64}"
    mine = w.own_ids(bob)
    # the client's own startup options and parameters: the server's proof wins
    for params in (
        {"options": f"-c millpond.identity={forged}"},
        {"options": f"-c Millpond.Identity={forged}"},
    ):
        with w.gateway(bob, **params) as conn:
            assert conn.execute("SELECT millpond.sender()").fetchone() == (bob.identity,)
            assert {r[0] for r in conn.execute("SELECT id FROM note")} == mine
    with w.gateway(bob) as conn:
        for attempt in (
            f"SET millpond.identity = '{forged}'",
            f"SELECT set_config('millpond.identity', '{forged}', false)",
            f"SET SESSION millpond.identity = '{alice.identity}'",
        ):
            conn.execute(attempt)
            assert conn.execute("SELECT millpond.sender()").fetchone() == (None,)
            assert conn.execute("SELECT id FROM note").fetchall() == []
            # RESET goes back to the startup value: bob, never anyone else
            conn.execute("RESET millpond.identity")
            assert {r[0] for r in conn.execute("SELECT id FROM note")} == mine
        conn.execute(f"SET millpond.identity = '{forged}'")
        conn.execute("RESET ALL")
        assert conn.execute("SELECT millpond.sender()").fetchone() == (bob.identity,)
        with conn.transaction():
            conn.execute(f"SET LOCAL millpond.identity = '{forged}'")
            assert conn.execute("SELECT id FROM note").fetchall() == []
        assert {r[0] for r in conn.execute("SELECT id FROM note")} == mine


def test_the_key_and_the_function_are_out_of_reach(world: World) -> None:
    w = world
    bob = w.callers["bob"]
    key = row_visibility.database_key(w.secret, w.pg_name)
    w.sql(w.owner, "ANALYZE millpond.identity_key")
    stats = "SELECT count(*) AS n FROM pg_stats WHERE schemaname = 'millpond'"
    assert w.sql(w.owner, stats)[0]["n"] > 0  # there are statistics, the owner's to read
    for who in (bob, w.callers["writer"]):
        with w.gateway(who) as conn:
            conn.execute("SET default_transaction_read_only = off")  # privileges are the wall
            for statement in (
                "SELECT * FROM millpond.identity_key",
                "COPY millpond.identity_key TO STDOUT",
                "DELETE FROM millpond.identity_key",
                "UPDATE millpond.identity_key SET inner_pad = ''",
                "CREATE OR REPLACE FUNCTION millpond.sender() RETURNS text LANGUAGE sql"
                f" AS $$ SELECT '{w.callers['alice'].identity}'::text $$",
                "ALTER FUNCTION millpond.sender() SECURITY INVOKER",
                "ALTER FUNCTION millpond.sender() RENAME TO old_sender",
                "DROP FUNCTION millpond.sender()",
                "CREATE TABLE millpond.shadow (x int)",
                "CREATE SCHEMA millpond_two",
                "ALTER TABLE note DISABLE ROW LEVEL SECURITY",
                "DROP POLICY millpond_visible_if ON note",
                "CREATE POLICY mine ON note FOR SELECT USING (true)",
                "ALTER TABLE millpond.identity_key OWNER TO CURRENT_USER",
            ):
                with pytest.raises(errors.InsufficientPrivilege):
                    conn.execute(statement)
            # the function's source holds no key; the statistics of the key's table none
            (source,) = conn.execute(
                "SELECT prosrc FROM pg_proc WHERE oid = 'millpond.sender()'::regprocedure"
            ).fetchone() or ("",)
            assert "identity_key" in source and key.hex() not in source
            for pad in (bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)):
                assert pad.hex()[:32] not in source
            assert conn.execute(stats).fetchone() == (0,)
    # nor module code: reducers see every row, but not the key
    r = w.db.call("peek", [], bob.credential)
    assert r.status_code == 422 and r.json()["error"]["code"] == "reducer_error", r.text
    assert w.call(bob, "sender_in_sql") is None  # no proof in a reducer's session


def test_shadowing_what_the_function_calls_changes_nothing(world: World) -> None:
    """A writer may create objects in ``public`` and put it first on its path: functions
    and operators named like the ones ``millpond.sender()`` uses, a temporary table named
    like its key table. The function names everything with its schema and pins its path."""
    w = world
    writer, alice = w.callers["writer"], w.callers["alice"]
    forged = f"{alice.identity}.{'0' * 64}"
    shadows = [
        "CREATE FUNCTION public.sha256(bytea) RETURNS bytea LANGUAGE sql"
        " AS $$ SELECT '\\x00'::bytea $$",
        "CREATE FUNCTION public.encode(bytea, text) RETURNS text LANGUAGE sql"
        f" AS $$ SELECT '{'0' * 64}'::text $$",
        "CREATE FUNCTION public.current_setting(text, boolean) RETURNS text LANGUAGE sql"
        f" AS $$ SELECT '{forged}'::text $$",
        "CREATE FUNCTION public.mp_true(bytea, bytea) RETURNS boolean LANGUAGE sql"
        " AS $$ SELECT true $$",
        "CREATE OPERATOR public.= (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = public.mp_true)",
        "CREATE FUNCTION public.mp_text_true(text, text) RETURNS boolean LANGUAGE sql"
        " AS $$ SELECT true $$",
        "CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text,"
        " FUNCTION = public.mp_text_true)",
        "CREATE TEMPORARY TABLE identity_key (one bool, inner_pad bytea, outer_pad bytea)",
    ]
    with w.gateway(writer) as conn:
        try:
            for statement in shadows:
                conn.execute(statement)
            conn.execute("SET search_path = pg_temp, public, pg_catalog")
            conn.execute(f"SET millpond.identity = '{forged}'")
            assert conn.execute("SELECT millpond.sender()").fetchone() == (None,)
            assert conn.execute("SELECT id FROM note").fetchall() == []
            assert conn.execute("SELECT id FROM public.note").fetchall() == []
            conn.execute("RESET millpond.identity")  # its own proof still works
            assert conn.execute("SELECT millpond.sender()").fetchone() == (writer.identity,)
        finally:
            conn.execute("RESET search_path")
            for dropped in (
                "OPERATOR IF EXISTS public.= (bytea, bytea)",
                "OPERATOR IF EXISTS public.= (text, text)",
                "FUNCTION IF EXISTS public.sha256(bytea)",
                "FUNCTION IF EXISTS public.encode(bytea, text)",
                "FUNCTION IF EXISTS public.current_setting(text, boolean)",
                "FUNCTION IF EXISTS public.mp_true(bytea, bytea)",
                "FUNCTION IF EXISTS public.mp_text_true(text, text)",
            ):
                conn.execute(f"DROP {dropped}")
    # readers cannot create anything to shadow with
    with w.gateway(w.callers["bob"]) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("SET default_transaction_read_only = off")
        conn.execute("CREATE FUNCTION public.f(bytea) RETURNS bytea LANGUAGE sql AS 'SELECT $1'")


# -- realtime --------------------------------------------------------------------------------


@dataclass
class Subscriber:
    """A raw protocol client subscribed to ``SELECT * FROM note``: its cache, every row
    image it was sent, and each transaction's entry for the table."""

    ws: ClientConnection
    identity: str
    cache: dict[int, dict[str, Any]] = field(default_factory=dict)
    images: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)

    def next(self, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:  # pings do not count as news: the deadline holds across them
            message = dict(json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic()))))
            if message["type"] == "ping":
                self.ws.send('{"type": "pong"}')
                continue
            return message

    def subscribe(self, query: str = "SELECT * FROM note") -> dict[str, Any]:
        self.ws.send(json.dumps({"type": "subscribe", "request_id": "s", "queries": [query]}))
        while (message := self.next())["type"] != "subscription_applied":
            assert message["type"] == "transaction", message
            self._apply(message)
        for row in message["tables"].get("note", {}).get("rows", []):
            self.images.append(row)
            self.cache[row["id"]] = row
        return message

    def until(self, done: Callable[[Subscriber], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not done(self):
            message = self.next(max(0.1, deadline - time.monotonic()))
            if message["type"] == "transaction":
                self._apply(message)

    def _apply(self, message: dict[str, Any]) -> None:
        entry = message["tables"].get("note")
        if entry is None:
            return
        self.entries.append(entry)
        for row in entry.get("deletes", []):
            self.images.append(row)
            self.cache.pop(row["id"], None)
        for update in entry.get("updates", []):
            self.images += [update["old"], update["new"]]
            self.cache[update["new"]["id"]] = update["new"]
        for row in entry.get("inserts", []):
            self.images.append(row)
            self.cache[row["id"]] = row


@contextlib.contextmanager
def subscribed(w: World, who: Caller) -> Iterator[Subscriber]:
    url = w.db.base.replace("http://", "ws://") + f"/v1/realtime/{w.db.full_name}"
    headers = {"Authorization": f"Bearer {who.credential}"}
    with connect(url, additional_headers=headers, open_timeout=30) as ws:
        sub = Subscriber(ws, who.identity)
        hello = sub.next()
        assert hello["type"] == "hello" and hello["identity"] == who.identity, hello
        sub.subscribe()
        yield sub


def _sees_ids(ids: set[int]) -> Callable[[Subscriber], bool]:
    return lambda sub: ids <= set(sub.cache)


def test_realtime_streams_only_the_subscribers_rows(world: World) -> None:
    w = world
    alice, bob, writer = w.callers["alice"], w.callers["bob"], w.callers["writer"]
    anon1, anon2 = w.callers["anon1"], w.callers["anon2"]
    people = [alice, bob, writer, anon1, anon2]
    with contextlib.ExitStack() as stack:
        subs = {c.name: stack.enter_context(subscribed(w, c)) for c in people}
        owner = stack.enter_context(subscribed(w, w.owner))
        for caller in people:  # the initial rows: the subscriber's own
            assert set(subs[caller.name].cache) == w.own_ids(caller), caller.name
        assert set(owner.cache) >= {1, 2, 3, 4, 5, 9}
        w.call(alice, "add", 10, "secret-of-alice-10")
        w.call(bob, "add", 11, "secret-of-bob-11")
        w.call(anon1, "add", 12, "secret-of-anon1-12")
        w.call(alice, "edit", 10, "secret-of-alice-10-edited")  # an update alice sees
        w.call(w.owner, "give", 10, bob.identity)  # alice's row becomes bob's
        w.call(bob, "remove", 11)  # a delete only bob sees
        w.call(w.owner, "give", 2, anon2.identity)  # bob's row becomes anon2's
        w.call(anon1, "give", 4, anon1.identity)  # an update of anon1's that stays anon1's
        w.sql(w.owner, "UPDATE note SET body = 'by-sql' WHERE id = 5")  # anon2's; no reducer
        markers = {}
        for number, caller in enumerate(people, start=100):
            w.call(caller, "add", number, f"marker-of-{caller.name}")
            markers[caller.name] = number
        for caller in people:  # transactions arrive in order: past its marker, all came
            subs[caller.name].until(_sees_ids({markers[caller.name]}))
        owner.until(_sees_ids(set(markers.values())))
        for caller in people:
            sub = subs[caller.name]
            leaked = [r for r in sub.images if r["owner_identity"] != caller.identity]
            assert not leaked, f"{caller.name} was sent rows of others: {leaked}"
            assert set(sub.cache) == w.own_ids(caller), caller.name
            if caller.api_user:  # its cache is its own SELECT
                own = {r["id"]: r for r in w.sql(caller, "SELECT * FROM note")}
                assert sub.cache == own, caller.name
        # the row that changed hands: a delete for the one, an insert for the other
        alice_10 = [e for e in subs["alice"].entries if _touches(e, 10)]
        assert [list(e) for e in alice_10] == [["inserts"], ["updates"], ["deletes"]]
        assert alice_10[2]["deletes"][0]["body"] == "secret-of-alice-10-edited"
        bob_10 = [e for e in subs["bob"].entries if _touches(e, 10)]
        assert [list(e) for e in bob_10] == [["inserts"]]
        assert bob_10[0]["inserts"][0]["owner_identity"] == bob.identity
        assert [list(e) for e in subs["anon2"].entries if _touches(e, 2)] == [["inserts"]]
        assert [list(e) for e in subs["bob"].entries if _touches(e, 2)] == [["deletes"]]
        assert [list(e) for e in subs["anon1"].entries if _touches(e, 4)] == [["updates"]]
        assert [list(e) for e in subs["anon2"].entries if _touches(e, 5)] == [["updates"]]
        for name in ("alice", "writer", "anon1", "anon2"):
            assert not any(_touches(e, 11) for e in subs[name].entries), name
        assert {r["id"] for r in owner.images} >= {10, 11, 12, 100, 101, 102, 103, 104}
        _no_proof_or_row_in_session_texts(w)


def _touches(entry: dict[str, Any], row_id: int) -> bool:
    rows = [*entry.get("inserts", []), *entry.get("deletes", [])]
    rows += [u["new"] for u in entry.get("updates", [])]
    return any(r["id"] == row_id for r in rows)


def _no_proof_or_row_in_session_texts(w: World) -> None:
    """The sessions of a reader's role show their statements' text to every reader
    (``pg_stat_activity``): no proof and no row of anyone is in it."""
    proofs = [
        row_visibility.proof(w.secret, w.pg_name, c.identity)
        for c in [w.owner, *w.callers.values()]
    ]
    with w.gateway(w.callers["alice"]) as conn:
        texts = [r[0] or "" for r in conn.execute("SELECT query FROM pg_stat_activity")]
    assert len(texts) > 1
    for text in texts:
        assert not any(p in text for p in proofs), text
        assert "secret-of" not in text and "marker-of" not in text, text


def test_no_proof_shows_in_the_statements_other_readers_see(world: World) -> None:
    """While callers query and subscribe, a reader samples the text of every session of
    its role (``pg_stat_activity``) as fast as it can: no proof ever shows."""
    w = world
    bob, alice = w.callers["bob"], w.callers["alice"]
    proofs = [row_visibility.proof(w.secret, w.pg_name, c.identity) for c in w.callers.values()]
    seen: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        with w.gateway(w.callers["writer"]) as conn:  # rw: sees the ro sessions too
            while not stop.is_set():
                rows = conn.execute(
                    "SELECT query FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                )
                seen.extend(r[0] or "" for r in rows)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for who in (alice, bob):
                assert _ids(w.sql(who, "SELECT id FROM note")) == w.own_ids(who)
        with subscribed(w, alice), subscribed(w, bob):
            pass
    finally:
        stop.set()
        sampler.join()
    assert len(seen) > 100
    assert any("SELECT id FROM note" in text for text in seen)  # it saw the callers' work
    assert not [t for t in seen if any(p in t for p in proofs)]


def test_subscribing_to_the_key_table_gets_nothing(world: World) -> None:
    w = world
    with subscribed(w, w.callers["anon1"]) as sub:
        sub.ws.send(
            json.dumps(
                {
                    "type": "subscribe",
                    "request_id": "k",
                    "queries": ["SELECT * FROM millpond.identity_key"],
                }
            )
        )
        answer = sub.next()
        assert answer["type"] == "error" and answer["code"] == "permission_denied", answer


# -- publishing rules ------------------------------------------------------------------------


def _with_rule(rule: str | None) -> str:
    declared = "public=True" if rule is None else f"public=True, visible_if={rule!r}"
    return MODULE.replace('public=True, visible_if="owner_identity = :sender"', declared)


def test_changing_and_removing_a_rule(server: ServerThread, make_user: MakeUser) -> None:
    db, owner_caller = _new_database(server, make_user)
    assert db.publish(MODULE).status_code == 201
    alice, bob = Caller("alice", make_user(prefix="a")[1]), Caller("bob", make_user(prefix="b")[1])
    w = World(server, db, owner_caller, {"alice": alice, "bob": bob})
    for caller in (alice, bob):
        caller.identity = w.call(caller, "me")
    w.call(alice, "add", 1, "public-hello")
    w.call(alice, "add", 2, "private")
    assert w.sql(bob, "SELECT id FROM note") == []
    loosened = "owner_identity = :sender OR body LIKE 'public-%'"
    r = db.publish(_with_rule(loosened))
    assert r.status_code == 201, r.text
    assert f'~ table note visible_if "owner_identity = :sender" -> "{loosened}"' in r.json()["diff"]
    assert _ids(w.sql(bob, "SELECT id FROM note")) == {1}
    assert _ids(w.sql(alice, "SELECT id FROM note")) == {1, 2}
    # Postgres refuses a rule: the publish fails naming the table, and nothing changed
    r = db.publish(_with_rule("no_such_column = :sender"))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "migration_failed" and "table note: visible_if" in error["message"]
    assert "no_such_column" in error["message"]
    assert _ids(w.sql(bob, "SELECT id FROM note")) == {1}
    r = db.publish(_with_rule(None))
    assert r.status_code == 201, r.text
    assert "~ table note visible_if" in r.json()["diff"] and "-> none" in r.json()["diff"]
    assert _ids(w.sql(bob, "SELECT id FROM note")) == {1, 2}
    state = w.sql(
        owner_caller,
        "SELECT relrowsecurity AS rls, (SELECT count(*) FROM pg_policy p"
        " WHERE p.polrelid = c.oid) AS n FROM pg_class c WHERE oid = 'public.note'::regclass",
    )
    assert state == [{"rls": False, "n": 0}]
    r = db.publish(MODULE)  # and back
    assert r.status_code == 201, r.text
    assert w.sql(bob, "SELECT id FROM note") == []
    assert r.json()["version"] == 4


def test_subscribers_across_publishes(server: ServerThread, make_user: MakeUser) -> None:
    """Every publish makes the rule's policies again: the same rule keeps subscribers
    streaming; a changed one closes them (4014), their rows read under the old rule."""
    db, owner_caller = _new_database(server, make_user)
    assert db.publish(MODULE).status_code == 201
    alice, bob = Caller("alice", make_user(prefix="a")[1]), Caller("bob", make_user(prefix="b")[1])
    w = World(server, db, owner_caller, {"alice": alice, "bob": bob})
    for caller in (alice, bob):
        caller.identity = w.call(caller, "me")
    w.call(alice, "add", 1, "mine")
    w.call(bob, "add", 2, "public-bob")
    with subscribed(w, alice) as sub:
        assert set(sub.cache) == {1}
        assert db.publish(MODULE + "\n# the same rule\n").status_code == 201
        w.call(alice, "add", 3, "after")
        sub.until(_sees_ids({3}))
        assert set(sub.cache) == {1, 3}
        r = db.publish(_with_rule("owner_identity = :sender OR body LIKE 'public-%'"))
        assert r.status_code == 201, r.text
        w.call(alice, "add", 4, "announces the table anew")
        with pytest.raises(ConnectionClosed) as closed:
            sub.until(lambda _: False, timeout=15)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4014
    with subscribed(w, alice) as again:  # resubscribed: the new rule's rows
        assert set(again.cache) == {1, 2, 3, 4}


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ('visible_if="owner_identity = :sender"', "public tables"),
        ('public=True, visible_if="owner_identity = :someone"', "unknown placeholder :someone"),
        ('public=True, visible_if="  "', "an SQL condition"),
    ],
)
def test_bad_rules_are_refused_at_publish(
    server: ServerThread, make_user: MakeUser, declaration: str, message: str
) -> None:
    db, _ = _new_database(server, make_user)
    r = db.publish(
        MODULE.replace('public=True, visible_if="owner_identity = :sender"', declaration)
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "module_invalid" and message in r.text, r.text


# -- the declaration and the plan (no server) --------------------------------------------------


def _declared(**options: Any) -> ModuleDef:
    _declare.reset()

    @_declare.table(**options)
    class Note:
        id: int = _declare.primary_key()
        owner_identity: Identity

    return _declare.collect(_declare.reset())


def test_the_declaration() -> None:
    module = _declared(public=True, visible_if="owner_identity = :sender")
    assert module.tables[0].visible_if == "owner_identity = :sender"
    assert ModuleDef.from_json(json.loads(json.dumps(module.to_json()))) == module
    stored = module.to_json()
    del stored["tables"][0]["visible_if"]  # a definition stored before rules existed
    assert ModuleDef.from_json(stored).tables[0].visible_if is None
    for options, message in (
        ({"visible_if": "true"}, "public tables"),
        ({"public": True, "visible_if": ":who = owner_identity"}, ":who"),
        ({"public": True, "visible_if": ""}, "SQL condition"),
        ({"public": True, "visible_if": 42}, "SQL condition"),
    ):
        with pytest.raises(_declare.DeclarationError, match=message):
            _declared(**options)
    # casts and slices are no placeholders
    _declared(public=True, visible_if="owner_identity::text = :sender AND id = ANY('{1}'::int8[])")


def test_the_stream_judges_each_viewer_by_the_policy_text() -> None:
    text = (
        "(owner_identity = ( SELECT millpond.sender() AS sender)) OR body = 'millpond.sender()'"
        " OR \"millpond.sender()\" = 'it''s millpond.sender()'"
    )
    assert _for_viewers(text) == text.replace(
        "( SELECT millpond.sender() AS sender)", "( SELECT millpond_viewers.identity AS sender)"
    )
    rule = Rule("public", "note", True, True, True, (text,))
    assert rule.per_identity
    assert not Rule(
        "public", "note", True, True, True, ("body = 'millpond.sender()'",)
    ).per_identity
    assert not Rule("public", "note", True, False, True, (text,)).per_identity  # owner: all
    query = rule.query().as_string(None)
    assert "millpond_viewers.identity AS sender" in query and query.count("%s") == 2


def test_compiled_rules_and_plans() -> None:
    compiled = row_visibility.compile_rule("a = :sender OR b::text = :sender || 'x:y'")
    text = compiled.as_string(None)
    assert text == (
        'a = (SELECT "millpond"."sender"()) OR b::text = (SELECT "millpond"."sender"()) || \'x:y\''
    )
    old = _declared(public=True, visible_if="owner_identity = :sender")
    new = _declared(public=True)
    plan = migrate.plan(old, new)
    assert plan.diff_text() == '~ table note visible_if "owner_identity = :sender" -> none'
    dropped = [s.as_string(None) for s in plan.statements]
    assert dropped[-1] == 'ALTER TABLE "public"."note" DISABLE ROW LEVEL SECURITY'
    assert migrate.plan(new, old).statements == []  # made by the publish itself
    assert row_visibility.statements(new, "mp_db_1", b"k") == []
    made = [s.as_string(None) for s in row_visibility.statements(old, "mp_db_1", b"k")]
    assert any("CREATE OR REPLACE FUNCTION" in s for s in made)
    proof = row_visibility.proof(b"k", "mp_db_1", "a" * 64)
    assert PROOF.fullmatch(proof) and proof != row_visibility.proof(b"k", "mp_db_2", "a" * 64)
