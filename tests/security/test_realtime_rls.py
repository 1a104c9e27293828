"""Realtime honours row-level security: a subscriber never receives a row — initial or
streamed, old or new image — that its own ``SELECT`` would not return.

Each test makes a database whose owner writes over HTTP, with a write and a read
collaborator; every subscriber (owner → ``_owner``, write → ``_rw``, read → ``_ro``)
records every row image it is sent, checked against the policy, and keeps a cache
that must equal its own ``SELECT`` at the end.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from millpond import Millpond
from millpond.backoff import Backoff

Api = Callable[..., httpx.Response]
MakeUser = Callable[..., tuple[str, str]]
_names = itertools.count()


@dataclass
class Tenant:
    api: Api
    base_url: str
    db: str
    keys: dict[str, str]  # owner / rw / ro -> API key
    roles: dict[str, str]  # owner / rw / ro -> its SQL role's name

    def sql(self, text: str, who: str = "owner") -> list[dict[str, Any]]:
        r = self.api("POST", "/v1/query", self.keys[who], json={"database": self.db, "sql": text})
        assert r.status_code == 200, r.text
        body = r.json()
        names = [c["name"] for c in body.get("columns", [])]
        return [dict(zip(names, row, strict=True)) for row in body.get("data", [])]


@pytest.fixture
def tenant(api: Api, base_url: str, make_user: MakeUser) -> Tenant:
    owner, owner_key = make_user(prefix="rlsowner")
    writer, writer_key = make_user(prefix="rlswriter")
    reader, reader_key = make_user(prefix="rlsreader")
    name = f"rls{next(_names)}"
    r = api("POST", "/v1/databases", owner_key, json={"name": name})
    assert r.status_code == 201, r.text
    db = f"{owner}/{name}"
    for user, role in ((writer, "write"), (reader, "read")):
        r = api("PUT", f"/v1/databases/{db}/collaborators/{user}", owner_key, json={"role": role})
        assert r.status_code == 200, r.text
    t = Tenant(api, base_url, db, {"owner": owner_key, "rw": writer_key, "ro": reader_key}, {})
    for who in ("owner", "rw", "ro"):
        t.roles[who] = t.sql("SELECT current_user AS me", who)[0]["me"]
    return t


@dataclass
class Subscriber:
    """A raw protocol client: a cache of one table's rows, and every image received."""

    ws: ClientConnection
    table: str
    cache: dict[int, dict[str, Any]] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    def subscribe(self, query: str) -> None:
        self.ws.send(json.dumps({"type": "subscribe", "request_id": "s", "queries": [query]}))
        while True:
            message = self._next()
            if message["type"] == "subscription_applied":
                break
            assert message["type"] == "transaction", message
            self._apply(message)
        for row in message["tables"].get(self.table, {}).get("rows", []):
            self.received.append(row)
            self.cache[row["id"]] = row

    def until(self, done: Callable[[Subscriber], bool], timeout: float = 15) -> None:
        """Apply messages until ``done`` holds (or the socket closes)."""
        while not done(self):
            try:
                message = self._next(timeout)
            except ConnectionClosed as exc:
                self.close_code = exc.rcvd.code if exc.rcvd is not None else None
                return
            if message["type"] == "transaction":
                self._apply(message)

    def _next(self, timeout: float = 15) -> dict[str, Any]:
        while True:
            message = dict(json.loads(self.ws.recv(timeout=timeout)))
            if message["type"] == "ping":
                self.ws.send('{"type": "pong"}')
                continue
            return message

    def _apply(self, message: dict[str, Any]) -> None:
        entry = message["tables"].get(self.table)
        if entry is None:
            return
        if entry.get("truncated"):
            self.cache.clear()
        for row in entry.get("deletes", []):
            self.received.append(row)
            self.cache.pop(row["id"], None)
        for update in entry.get("updates", []):
            self.received += [update["old"], update["new"]]
            self.cache[update["new"]["id"]] = update["new"]
        for row in entry.get("inserts", []):
            self.received.append(row)
            self.cache[row["id"]] = row


@contextmanager
def subscribed(t: Tenant, who: str, table: str, where: str = "") -> Iterator[Subscriber]:
    url = t.base_url.replace("http://", "ws://") + f"/v1/realtime/{t.db}"
    headers = {"Authorization": f"Bearer {t.keys[who]}"}
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        sub = Subscriber(ws, table)
        assert sub._next()["type"] == "hello"
        sub.subscribe(f"SELECT * FROM {table}{where}")
        yield sub


def marked(marker: int) -> Callable[[Subscriber], bool]:
    return lambda sub: marker in sub.cache


def assert_matches_own_select(t: Tenant, who: str, sub: Subscriber, where: str = "") -> None:
    own = {r["id"]: r for r in t.sql(f"SELECT * FROM {sub.table}{where}", who)}
    assert sub.cache == own, f"{who}'s cache differs from its own SELECT"


WHO_TABLE = """
CREATE TABLE notes (id int8 PRIMARY KEY, who text NOT NULL, body text);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY mine ON notes FOR SELECT USING (who = current_user);
"""


def test_policy_by_current_user_streams_only_own_rows(tenant: Tenant) -> None:
    t = tenant
    t.sql(WHO_TABLE)
    rw, ro = t.roles["rw"], t.roles["ro"]
    t.sql(f"INSERT INTO notes VALUES (1, '{ro}', 'ro-initial'), (2, '{rw}', 'rw-initial')")
    with (
        subscribed(t, "owner", "notes") as owner,
        subscribed(t, "rw", "notes") as writer,
        subscribed(t, "ro", "notes") as reader,
    ):
        assert set(reader.cache) == {1} and set(writer.cache) == {2}
        assert set(owner.cache) == {1, 2}  # the table's owner is not subject to its RLS
        t.sql(
            f"INSERT INTO notes VALUES (3, '{ro}', 'ro-new'), (4, '{rw}', 'secret-rw'),"
            " (5, 'nobody', 'five')"
        )
        t.sql(
            f"UPDATE notes SET who = '{rw}', body = 'moved' WHERE id = 1;"  # ro → rw
            f"UPDATE notes SET who = '{ro}' WHERE id = 5;"  # nobody → ro
        )
        t.sql("UPDATE notes SET body = 'secret-edit' WHERE id = 4")  # hidden from ro
        t.sql("DELETE FROM notes WHERE id = 2")  # hidden from ro: no old image to it
        t.sql(f"INSERT INTO notes VALUES (100, '{ro}', 'm'), (101, '{rw}', 'm')")
        reader.until(marked(100))
        writer.until(marked(101))
        owner.until(lambda s: {100, 101} <= set(s.cache))
        for who, sub in (("rw", writer), ("ro", reader)):
            role = t.roles[who]
            leaked = [r for r in sub.received if r["who"] != role]
            assert not leaked, f"{who} was sent rows its SELECT hides: {leaked}"
            assert_matches_own_select(t, who, sub)
        assert_matches_own_select(t, "owner", owner)
        assert set(reader.cache) == {3, 5, 100}
        assert set(writer.cache) == {1, 4, 101}
        assert "secret" not in json.dumps(reader.received)


def test_policy_by_column_against_a_setting(tenant: Tenant) -> None:
    """``tenant = current_setting(...)``: the setting each role's sessions have (here
    one the database sets for every session), as its own SELECT sees it."""
    t = tenant
    t.sql(
        "CREATE TABLE docs (id int8 PRIMARY KEY, tenant text, body text);"
        "ALTER TABLE docs ENABLE ROW LEVEL SECURITY;"
        "CREATE POLICY by_setting ON docs FOR SELECT"
        " USING (tenant = current_setting('application_name', true)"
        "        OR tenant = current_setting('TimeZone'));"
        "INSERT INTO docs VALUES (1, 'UTC', 'visible'), (2, 'acme', 'secret')"
    )
    with subscribed(t, "ro", "docs") as reader, subscribed(t, "rw", "docs") as writer:
        assert set(reader.cache) == {1}
        t.sql(
            "INSERT INTO docs VALUES (3, 'acme', 'secret'), (4, 'UTC', 'ok');"
            "UPDATE docs SET tenant = 'acme', body = 'secret' WHERE id = 1;"  # leaves
            "UPDATE docs SET tenant = 'UTC', body = 'in' WHERE id = 2;"  # enters
            "INSERT INTO docs VALUES (100, 'UTC', 'm')"
        )
        for who, sub in (("ro", reader), ("rw", writer)):
            sub.until(marked(100))
            assert_matches_own_select(t, who, sub)
            assert set(sub.cache) == {2, 4, 100}
            assert "secret" not in json.dumps([r for r in sub.received if r["id"] != 1])
            assert all(r["tenant"] == "UTC" for r in sub.received)


def test_restrictive_and_permissive_policies(tenant: Tenant) -> None:
    t = tenant
    t.sql(
        "CREATE TABLE posts (id int8 PRIMARY KEY, level int, tags text[], archived bool);"
        "ALTER TABLE posts ENABLE ROW LEVEL SECURITY;"
        # '%' in a policy is SQL, not a placeholder
        "CREATE POLICY high ON posts FOR SELECT USING (level >= 5 AND level % 1 = 0);"
        "CREATE POLICY tagged ON posts FOR ALL USING ('public' = ANY (tags));"
        "CREATE POLICY live ON posts AS RESTRICTIVE FOR SELECT USING (NOT archived);"
        # a policy for other commands or other roles changes nothing for SELECT
        "CREATE POLICY writes ON posts FOR UPDATE USING (true);"
        "INSERT INTO posts VALUES (1, 9, '{}', false), (2, 1, '{public}', false),"
        " (3, 9, '{}', true), (4, 1, '{}', false)"
    )

    def visible(row: dict[str, Any]) -> bool:
        return (row["level"] >= 5 or "public" in row["tags"]) and not row["archived"]

    with subscribed(t, "ro", "posts") as reader, subscribed(t, "owner", "posts") as owner:
        assert set(reader.cache) == {1, 2}
        t.sql(
            "INSERT INTO posts VALUES (5, 7, '{}', true), (6, 0, '{x,public}', false),"
            " (7, 0, '{x}', false);"
            "UPDATE posts SET archived = true WHERE id = 1;"
            "UPDATE posts SET archived = false WHERE id = 3;"
            "UPDATE posts SET tags = '{public}' WHERE id = 4"
        )
        t.sql(
            "DELETE FROM posts WHERE id IN (5, 7); INSERT INTO posts VALUES (100, 5, '{}', false)"
        )
        reader.until(marked(100))
        owner.until(marked(100))
        leaked = [r for r in reader.received if not visible(r)]
        assert not leaked, leaked
        assert_matches_own_select(t, "ro", reader)
        assert_matches_own_select(t, "owner", owner)
        assert set(reader.cache) == {2, 3, 4, 6, 100}


def test_force_row_level_security_applies_to_the_owner(tenant: Tenant) -> None:
    t = tenant
    t.sql(
        "CREATE TABLE vault (id int8 PRIMARY KEY, open bool);"
        "ALTER TABLE vault ENABLE ROW LEVEL SECURITY;"
        "ALTER TABLE vault FORCE ROW LEVEL SECURITY;"
        "CREATE POLICY opened ON vault USING (open) WITH CHECK (true);"
        "INSERT INTO vault VALUES (1, true), (2, false)"
    )
    with subscribed(t, "owner", "vault") as owner, subscribed(t, "rw", "vault") as writer:
        assert set(owner.cache) == {1}
        t.sql(
            # the owner itself may not write rows it cannot see: lifted while it writes
            # (the rule after the transaction is the same: nobody is disconnected)
            "ALTER TABLE vault NO FORCE ROW LEVEL SECURITY;"
            "INSERT INTO vault VALUES (3, false), (4, true);"
            "UPDATE vault SET open = false WHERE id = 1;"
            "DELETE FROM vault WHERE id = 2;"
            "INSERT INTO vault VALUES (100, true);"
            "ALTER TABLE vault FORCE ROW LEVEL SECURITY"
        )
        for who, sub in (("owner", owner), ("rw", writer)):
            sub.until(marked(100))
            assert sub.close_code is None
            assert all(r["open"] for r in sub.received), sub.received
            assert_matches_own_select(t, who, sub)
            assert set(sub.cache) == {4, 100}


def test_row_level_security_enabled_after_subscribing(tenant: Tenant) -> None:
    """Rows read before the policy existed are stale: the subscriber is closed
    (``visibility_changed``) before any change under the new policy reaches it, and
    resubscribing gives exactly what its SELECT returns."""
    t = tenant
    t.sql(
        "CREATE TABLE items (id int8 PRIMARY KEY, shared bool); INSERT INTO items VALUES (1, false)"
    )
    with subscribed(t, "ro", "items") as reader, subscribed(t, "owner", "items") as owner:
        assert set(reader.cache) == {1}
        t.sql("INSERT INTO items VALUES (2, false)")
        reader.until(marked(2))
        t.sql(
            "ALTER TABLE items ENABLE ROW LEVEL SECURITY;"
            "CREATE POLICY shared ON items FOR SELECT USING (shared)"
        )
        t.sql("INSERT INTO items VALUES (3, false), (4, true)")
        t.sql("INSERT INTO items VALUES (100, true)")
        reader.until(marked(100), timeout=10)
        assert reader.close_code == 4014
        assert not {3, 4, 100} & {r["id"] for r in reader.received}
        owner.until(marked(100))  # the owner's rule did not change: it stays
        assert owner.close_code is None
        assert_matches_own_select(t, "owner", owner)
    with subscribed(t, "ro", "items") as again:
        assert_matches_own_select(t, "ro", again)
        assert set(again.cache) == {4, 100}
        t.sql("DROP POLICY shared ON items; CREATE POLICY all_rows ON items USING (id > 1)")
        t.sql("INSERT INTO items VALUES (101, false)")
        again.until(marked(101), timeout=10)
        assert again.close_code == 4014  # the policy changed again
    with subscribed(t, "ro", "items") as last:
        t.sql("INSERT INTO items VALUES (102, false)")
        last.until(marked(102))
        assert_matches_own_select(t, "ro", last)
        assert set(last.cache) == {2, 3, 4, 100, 101, 102}
        t.sql("ALTER TABLE items DISABLE ROW LEVEL SECURITY")  # row 1 becomes visible
        t.sql("INSERT INTO items VALUES (103, false)")
        last.until(marked(103), timeout=10)
        assert last.close_code == 4014
    with subscribed(t, "ro", "items") as final:
        assert_matches_own_select(t, "ro", final)
        assert 1 in final.cache


def test_filtered_subscription_with_rls_and_a_where(tenant: Tenant) -> None:
    """The subscription's own WHERE and the policy both apply, to old and new images."""
    t = tenant
    t.sql(WHO_TABLE)
    ro = t.roles["ro"]
    where = " WHERE id < 50"
    t.sql(f"INSERT INTO notes VALUES (1, '{ro}', 'a'), (2, 'x', 'secret'), (60, '{ro}', 'b')")
    with subscribed(t, "ro", "notes", where) as reader:
        assert set(reader.cache) == {1}
        t.sql(
            "UPDATE notes SET id = 61 WHERE id = 1;"  # leaves the WHERE
            "UPDATE notes SET id = 3 WHERE id = 60;"  # enters the WHERE
            "UPDATE notes SET id = 4, body = 'secret2' WHERE id = 2;"  # hidden both ways
            f"INSERT INTO notes VALUES (49, '{ro}', 'm')"
        )
        reader.until(marked(49))
        assert all(r["who"] == ro for r in reader.received)
        assert_matches_own_select(t, "ro", reader, where)
        assert set(reader.cache) == {3, 49}


def test_a_failing_policy_closes_the_subscriber_without_rows(tenant: Tenant) -> None:
    """A policy that errors for the streamed rows (as it would in the subscriber's own
    SELECT): nothing is sent, the socket closes with ``visibility_failed``."""
    t = tenant
    t.sql(
        "CREATE TABLE risky (id int8 PRIMARY KEY, n int);"
        "ALTER TABLE risky ENABLE ROW LEVEL SECURITY;"
        "CREATE POLICY div ON risky FOR SELECT USING (10 / n > 1)"
        ";INSERT INTO risky VALUES (1, 2)"
    )
    with subscribed(t, "ro", "risky") as reader:
        assert set(reader.cache) == {1}
        t.sql("INSERT INTO risky VALUES (2, 0)")  # the policy divides by zero
        reader.until(lambda s: False, timeout=10)
        assert reader.close_code == 4015
        assert {r["id"] for r in reader.received} == {1}


def test_select_privilege_revoked_after_subscribing(tenant: Tenant) -> None:
    """Not RLS but the same promise: once the role may not SELECT the table (or one of
    its columns), its subscribers are closed before another row reaches them, and a
    new subscribe is refused."""
    t = tenant
    t.sql(
        "CREATE TABLE open_t (id int8 PRIMARY KEY, secret text); INSERT INTO open_t VALUES (1, 'a')"
    )
    ro = t.roles["ro"]
    for step, revoke in enumerate(
        (
            f"REVOKE SELECT ON open_t FROM {ro}",
            f"REVOKE SELECT ON open_t FROM {ro}; GRANT SELECT (id) ON open_t TO {ro}",
        )
    ):
        t.sql(f"GRANT SELECT ON open_t TO {ro}")
        before, after = 10 * step + 2, 10 * step + 3
        # the write role reads through the read role (a member of it): it loses SELECT too
        with (
            subscribed(t, "ro", "open_t") as reader,
            subscribed(t, "rw", "open_t") as writer,
            subscribed(t, "owner", "open_t") as owner,
        ):
            t.sql(f"INSERT INTO open_t VALUES ({before}, 'before')")
            reader.until(marked(before))
            t.sql(revoke)
            t.sql(f"INSERT INTO open_t VALUES ({after}, 'after')")
            for sub in (reader, writer):
                sub.until(lambda s: False, timeout=10)
                assert sub.close_code == 4014
                assert after not in {r["id"] for r in sub.received}
            owner.until(marked(after))  # the owner's rights did not change
            assert owner.close_code is None
        url = t.base_url.replace("http://", "ws://") + f"/v1/realtime/{t.db}"
        with connect(url, additional_headers={"Authorization": f"Bearer {t.keys['ro']}"}) as ws:
            again = Subscriber(ws, "open_t")
            assert again._next()["type"] == "hello"
            ws.send(
                json.dumps(
                    {"type": "subscribe", "request_id": "s", "queries": ["SELECT * FROM open_t"]}
                )
            )
            reply = again._next()
            assert reply["type"] == "error" and reply["code"] == "permission_denied", reply


def test_policy_reading_another_table_and_awkward_names(tenant: Tenant) -> None:
    """Policies with subqueries, a schema and table whose names need quoting, and
    columns named like the check's own aliases: judged as Postgres judges them."""
    t = tenant
    ro = t.roles["ro"]
    t.sql(
        'CREATE SCHEMA "Odd Schema";'
        f'GRANT USAGE ON SCHEMA "Odd Schema" TO {ro};'
        'CREATE TABLE "Odd Schema".members (team int, who text);'
        'CREATE TABLE "Odd Schema"."mp_rows" (id int8 PRIMARY KEY, team int, n int, image text);'
        f'GRANT SELECT ON ALL TABLES IN SCHEMA "Odd Schema" TO {ro};'
        'ALTER TABLE "Odd Schema"."mp_rows" ENABLE ROW LEVEL SECURITY;'
        'CREATE POLICY team ON "Odd Schema"."mp_rows" FOR SELECT USING (EXISTS ('
        '  SELECT 1 FROM "Odd Schema".members m WHERE m.team = "mp_rows".team'
        "  AND m.who = current_user));"
        'CREATE POLICY small ON "Odd Schema"."mp_rows" AS RESTRICTIVE USING (n < 10);'
        f"INSERT INTO \"Odd Schema\".members VALUES (1, '{ro}'), (2, 'someone else');"
        "INSERT INTO \"Odd Schema\".\"mp_rows\" VALUES (1, 1, 1, 'mine'), (2, 2, 1, 'secret')"
    )
    table = '"Odd Schema"."mp_rows"'
    with subscribed(t, "ro", table) as reader:
        reader.table = "Odd Schema.mp_rows"
        t.sql(
            f"INSERT INTO {table} VALUES (3, 1, 5, 'mine'), (4, 2, 5, 'secret'),"
            " (5, 1, 50, 'secret-big'), (6, NULL, 1, 'secret-null');"
            f"UPDATE {table} SET team = 2, image = 'secret-moved' WHERE id = 1;"
        )
        t.sql(f"INSERT INTO {table} VALUES (100, 1, 0, 'm')")
        reader.until(marked(100))
        assert reader.close_code is None
        sent = json.dumps(reader.received)
        assert "secret" not in sent, sent
        own = {r["id"]: r for r in t.sql(f"SELECT * FROM {table}", "ro")}
        assert reader.cache == own
        assert set(own) == {3, 100}


def test_table_owned_by_the_write_collaborator(tenant: Tenant) -> None:
    """A table the write role made is its own (and, through membership, the database
    owner's): both bypass its RLS, the reader does not."""
    t = tenant
    t.sql(
        "CREATE TABLE theirs (id int8 PRIMARY KEY, public bool);"
        f"GRANT SELECT ON theirs TO {t.roles['ro']};"
        "ALTER TABLE theirs ENABLE ROW LEVEL SECURITY;"
        "CREATE POLICY pub ON theirs FOR SELECT USING (public);"
        "INSERT INTO theirs VALUES (1, true), (2, false)",
        "rw",
    )
    with (
        subscribed(t, "owner", "theirs") as owner,
        subscribed(t, "rw", "theirs") as writer,
        subscribed(t, "ro", "theirs") as reader,
    ):
        assert set(reader.cache) == {1} and set(writer.cache) == set(owner.cache) == {1, 2}
        t.sql("INSERT INTO theirs VALUES (3, false), (100, true)", "rw")
        for who, sub in (("owner", owner), ("rw", writer), ("ro", reader)):
            sub.until(marked(100))
            assert_matches_own_select(t, who, sub)
        assert all(r["public"] for r in reader.received)
        assert set(owner.cache) == {1, 2, 3, 100}


def test_sdk_resubscribes_after_visibility_changed(tenant: Tenant) -> None:
    """The SDK treats 4014 as a reconnect: its cache ends equal to the reader's SELECT,
    and no row the policy hides ever reached its callbacks."""
    t = tenant
    t.sql("CREATE TABLE feed (id int8 PRIMARY KEY, shown bool); INSERT INTO feed VALUES (1, false)")
    seen: list[dict[str, Any]] = []
    closes: list[int] = []
    with (
        Millpond(api_key=t.keys["ro"], base_url=t.base_url) as mp,
        mp.realtime(t.db, reconnect_backoff=Backoff(base=0.05, cap=0.3)) as rt,
    ):
        rt.db.feed.on_insert(lambda row: seen.append(row.to_dict()))
        rt.db.feed.on_update(lambda old, new: seen.append(new.to_dict()))
        rt.on_disconnect(lambda info: closes.append(info.code))
        rt.subscribe(["SELECT * FROM feed"])
        assert [r.to_dict()["id"] for r in rt.db.feed] == [1]
        t.sql(
            "ALTER TABLE feed ENABLE ROW LEVEL SECURITY;"
            "CREATE POLICY shown ON feed FOR SELECT USING (shown)"
        )
        t.sql("INSERT INTO feed VALUES (2, false), (3, true)")
        t.sql("UPDATE feed SET shown = true WHERE id = 2; INSERT INTO feed VALUES (4, false)")

        def converged() -> bool:
            rt.update(0.1)
            return {r.to_dict()["id"] for r in rt.db.feed} == {2, 3}

        deadline = time.monotonic() + 15
        while not converged():
            assert time.monotonic() < deadline, [r.to_dict() for r in rt.db.feed]
        assert 4014 in closes
        own = sorted(r["id"] for r in t.sql("SELECT * FROM feed", "ro"))
        assert sorted(r.to_dict()["id"] for r in rt.db.feed) == own
        assert all(r["shown"] for r in seen if r["id"] != 1), seen
