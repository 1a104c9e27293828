"""A first publish into a database restored from a backup: the module's tables are
adopted with their rows (not made again, ``@init`` not run again), reducers and grants
work on them; a table of the module's name that differs refuses the publish, changing
nothing (409 ``table_exists``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import httpx

from millpond import Millpond
from millpond.server.testing import ServerThread

from .test_service import CHAT, Db, published

MakeUser = Callable[..., tuple[str, str]]


def _new(server: ServerThread, key: str, full_name: str) -> Db:
    r = httpx.post(
        f"{server.url}/v1/databases",
        json={"name": full_name.split("/")[1]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 201, r.text
    return Db(SimpleNamespace(url=server.url), key, full_name)  # type: ignore[arg-type]


def test_a_restored_databases_tables_are_adopted_by_the_first_publish(
    server: ServerThread, make_user: MakeUser, tmp_path: Path
) -> None:
    name, key = make_user(prefix="adopt")
    source = published(server.url, key, f"{name}/source", CHAT)
    for text in ("one", "two"):
        assert source.call("send_message", {"text": text}).status_code == 200
    copy = _new(server, key, f"{name}/copy")
    with Millpond(api_key=key, base_url=server.url) as mp:
        mp.databases.backup(source.full_name, tmp_path / "source.mpdb")
        mp.databases.restore(copy.full_name, tmp_path / "source.mpdb")

    r = copy.publish(CHAT)
    assert r.status_code == 201, r.text
    kinds = [s["kind"] for s in r.json()["steps"]]
    assert kinds.count("adopt_table") == 3 and "create_table" not in kinds
    assert "= table message (adopted: it exists as declared)" in r.json()["diff"]
    # the rows came along; @init (the note "made by init") did not run a second time
    notes = copy.sql("SELECT id, body FROM note ORDER BY id").json()["data"]
    assert notes == [[1, "made by init"]]
    texts = copy.sql("SELECT text FROM message ORDER BY id").json()["data"]
    assert texts == [["one"], ["two"]]
    # reducers write the adopted tables; the identity sequence goes on where it was
    r = copy.call("send_message", {"text": "three"})
    assert r.status_code == 200 and r.json()["return"] == 3, r.text
    # and another user may read the public table but not change it by SQL
    _, other = make_user(prefix="adoptother")
    r = copy.sql("INSERT INTO message (sender, sent, text) VALUES ('x', now(), 'y')", other)
    assert r.status_code in (403, 404), r.text


def test_a_table_that_differs_refuses_the_publish_and_changes_nothing(
    server: ServerThread, make_user: MakeUser
) -> None:
    name, key = make_user(prefix="adoptdiff")
    db = _new(server, key, f"{name}/clash")
    r = db.sql("CREATE TABLE note (id int8 PRIMARY KEY, body int4 NOT NULL)")
    assert r.status_code == 200, r.text
    r = db.publish(CHAT)
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "table_exists"
    assert "note: column body is integer, the module's text" in error["message"]
    assert error["details"]["tables"] == {"note": "column body is integer, the module's text"}
    assert db("GET", "/module").status_code == 404
    tables = db.sql(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND relkind = 'r' ORDER BY 1"
    ).json()["data"]
    assert tables == [["note"]]
