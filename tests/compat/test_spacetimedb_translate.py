"""SpacetimeDB 0.7 compatibility without I/O: the values (SATS-JSON), the translation of
millpond's realtime messages and of the 0.7 client's, and the 0.7-layout generator."""

from __future__ import annotations

import json
from typing import Any

import pytest

from millpond.codegen import GenerateError, generate
from millpond.codegen.spacetimedb import cache_name, file_name
from millpond.module._def import (
    ColumnDef,
    ModuleDef,
    ParamDef,
    RecordDef,
    ReducerDef,
    TableDef,
    TypeRef,
)
from millpond.server.compat.spacetimedb import sats
from millpond.server.compat.spacetimedb.translate import CompatError, Translator

ME = "ab" * 32
OTHER = "cd" * 32
POINT = RecordDef("Point", (ParamDef("x", TypeRef("float8")), ParamDef("y", TypeRef("float8"))))
MODULE = ModuleDef(
    tables=(
        TableDef(
            "user",
            "User",
            (
                ColumnDef("identity", TypeRef("identity")),
                ColumnDef("name", TypeRef("text", nullable=True)),
                ColumnDef("online", TypeRef("bool")),
            ),
            ("identity",),
            public=True,
        ),
        TableDef(
            "game_event",
            "GameEvent",
            (
                ColumnDef("id", TypeRef("int8")),
                ColumnDef("at", TypeRef("timestamptz")),
                ColumnDef("blob", TypeRef("bytea")),
                ColumnDef("spot", TypeRef("jsonb", record="Point")),
                ColumnDef("tags", TypeRef("text", array=True)),
            ),
            ("id",),
            public=True,
        ),
    ),
    reducers=(
        ReducerDef("set_name", (ParamDef("name", TypeRef("text")),)),
        ReducerDef(
            "mark",
            (ParamDef("who", TypeRef("identity")), ParamDef("at", TypeRef("timestamptz"))),
        ),
        ReducerDef("secret", (ParamDef("code", TypeRef("text")),), private=True),
        ReducerDef("hello", (), lifecycle="client_connected"),
    ),
    records=(POINT,),
)
USER_COLUMNS = [{"name": "identity", "type": "text"}, {"name": "name", "type": "text"}]


def connected() -> Translator:
    t = Translator("mp_key")
    t.module = MODULE
    [hello] = t.translate({"type": "hello", "connection_id": "c_0123456789abcdef", "identity": ME})
    assert hello == {
        "IdentityToken": {
            "identity": ME,
            "token": "mp_key",
            "address": "0000000000000000" + "0123456789abcdef",
        }
    }
    return t


def applied(t: Translator, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    [out] = t.translate(
        {
            "type": "subscription_applied",
            "tables": {"user": {"columns": USER_COLUMNS, "key": ["identity"], "rows": rows}},
        }
    )
    updates: list[dict[str, Any]] = out["SubscriptionUpdate"]["table_updates"]
    return updates


def test_values_are_sats_json() -> None:
    user = MODULE.tables[0]
    row = [
        sats.encode(v, c.type, MODULE) for v, c in zip([ME, None, True], user.columns, strict=True)
    ]
    assert row == [[ME], {"1": []}, True]
    assert sats.encode("Ann", TypeRef("text", nullable=True), MODULE) == {"0": "Ann"}
    at = "2026-03-04T05:06:07.890000+00:00"
    assert sats.encode(at, TypeRef("timestamptz"), MODULE) == 1772600767890000
    assert sats.iso(1772600767890000) == at
    assert sats.encode("AAH/", TypeRef("bytea"), MODULE) == "0001ff"
    spot = sats.encode({"x": 1.5, "y": 2.0}, TypeRef("jsonb", record="Point"), MODULE)
    assert spot == [1.5, 2.0]
    assert sats.encode([ME, None], TypeRef("identity", array=True), MODULE) == [[ME], None]
    # and back, leniently: a 0.7 client's arguments
    assert sats.decode([ME], TypeRef("identity"), MODULE) == ME
    assert sats.decode(ME, TypeRef("identity"), MODULE) == ME
    assert sats.decode({"1": []}, TypeRef("text", nullable=True), MODULE) is None
    assert sats.decode({"0": "x"}, TypeRef("text", nullable=True), MODULE) == "x"
    assert sats.decode(0, TypeRef("timestamptz"), MODULE) == "1970-01-01T00:00:00+00:00"
    assert sats.decode("0001ff", TypeRef("bytea"), MODULE) == "AAH/"
    assert sats.decode([1.0, 2.0], TypeRef("jsonb", record="Point"), MODULE) == {
        "x": 1.0,
        "y": 2.0,
    }
    with pytest.raises(sats.SatsError):
        sats.decode([1.0], TypeRef("jsonb", record="Point"), MODULE)
    with pytest.raises(sats.SatsError):
        sats.decode("zz", TypeRef("bytea"), MODULE)
    assert sats.address_of("c_00ff") == "0" * 28 + "00ff"
    assert sats.address_of("flags-7") == sats.address_of(None) == "00" * 16


def test_rows_keep_their_id_from_insert_to_update_to_delete() -> None:
    t = connected()
    [update] = applied(t, [{"identity": ME, "name": None, "online": True}])
    assert update["table_name"] == "User"
    [insert] = update["table_row_operations"]
    assert insert["op"] == "insert" and insert["row"] == [[ME], {"1": []}, True]
    changed = {"old": {"identity": ME, "name": None, "online": True}}
    changed["new"] = {"identity": ME, "name": "Ann", "online": True}
    [out] = t.translate(
        {
            "type": "transaction",
            "xid": 9,
            "commit_time": "2026-01-01T00:00:00+00:00",
            "tables": {"user": {"updates": [changed]}},
        }
    )
    body = out["TransactionUpdate"]
    delete, insert2 = body["subscription_update"]["table_updates"][0]["table_row_operations"]
    assert delete["op"] == "delete" and delete["row_pk"] == insert["row_pk"]
    assert insert2["row_pk"] == insert["row_pk"] and insert2["row"][1] == {"0": "Ann"}
    # a write no reducer made: an event with no caller and no reducer
    assert body["event"]["caller_identity"] == sats.NO_IDENTITY
    assert body["event"]["function_call"] == {"reducer": "", "args": "[]"}
    assert body["event"]["timestamp"] == 1767225600000000


def test_truncate_deletes_every_row_sent() -> None:
    t = connected()
    rows = [{"identity": who, "name": None, "online": False} for who in (ME, OTHER)]
    ids = {op["row_pk"] for op in applied(t, rows)[0]["table_row_operations"]}
    [out] = t.translate({"type": "transaction", "xid": 3, "tables": {"user": {"truncated": True}}})
    ops = out["TransactionUpdate"]["subscription_update"]["table_updates"][0]
    assert {op["row_pk"] for op in ops["table_row_operations"]} == ids
    assert all(op["op"] == "delete" for op in ops["table_row_operations"])


def test_reducer_events_and_the_callers_own_outcomes() -> None:
    t = connected()
    applied(t, [])
    call = t.request(json.dumps({"call": {"fn": "mark", "args": [[OTHER], 0]}}))
    assert call is not None and call["type"] == "call"
    assert call["args"] == [OTHER, "1970-01-01T00:00:00+00:00"]  # as millpond takes them
    event = {
        "reducer": "mark",
        "args": [OTHER, "1970-01-01T00:00:00+00:00"],
        "sender": ME,
        "connection_id": "c_0123456789abcdef",
        "request_id": "r",
        "timestamp": "1970-01-01T00:00:01+00:00",
        "status": "committed",
    }
    row = {"identity": OTHER, "name": None, "online": True}
    [out] = t.translate(
        {"type": "transaction", "xid": 5, "tables": {"user": {"inserts": [row]}}, "reducer": event}
    )
    sent = out["TransactionUpdate"]["event"]
    assert sent["caller_identity"] == ME and sent["timestamp"] == 1_000_000
    assert sent["caller_address"] == t.address and sent["status"] == "committed"
    assert json.loads(sent["function_call"]["args"]) == [[OTHER], 0]
    # its call_result: the caller saw the transaction, so nothing more
    rid = call["request_id"]
    assert t.translate({"type": "call_result", "request_id": rid, "outcome": {"xid": 5}}) == []
    # a committed call whose rows the caller does not see: an update without rows
    call = t.request(json.dumps({"call": {"fn": "set_name", "args": ["Ann"]}}))
    assert call is not None
    [out] = t.translate(
        {"type": "call_result", "request_id": call["request_id"], "outcome": {"xid": 6}}
    )
    assert out["TransactionUpdate"]["subscription_update"] == {"table_updates": []}
    assert out["TransactionUpdate"]["event"]["function_call"]["reducer"] == "set_name"
    # a failed one: status and message, to the caller only
    call = t.request(json.dumps({"call": {"fn": "nope", "args": []}}))
    assert call is not None
    failure = {"code": "reducer_not_found", "message": "no reducer 'nope'"}
    [out] = t.translate({"type": "call_result", "request_id": call["request_id"], "error": failure})
    assert out["TransactionUpdate"]["event"]["status"] == "failed"
    assert out["TransactionUpdate"]["event"]["message"] == "no reducer 'nope'"
    # someone else's private reducer: its arguments are nulls
    hidden = {**event, "reducer": "secret", "args": None}
    [out] = t.translate({"type": "transaction", "xid": 7, "tables": {}, "reducer": hidden})
    assert out["TransactionUpdate"]["event"]["function_call"]["args"] == "[null]"
    # heartbeats and answers 0.7 has no message for
    for quiet in ({"type": "ping"}, {"type": "pong"}, {"type": "unsubscribed"}):
        assert t.translate(quiet) == []
    assert t.close is None


def test_queries_name_tables_as_the_module_does() -> None:
    t = connected()
    assert t.query("SELECT * FROM User") == 'SELECT * FROM "user"'
    assert t.query("select * from GameEvent where id > 3;") == (
        'SELECT * FROM "game_event" where id > 3'
    )
    assert t.query("SELECT * FROM game_event") == 'SELECT * FROM "game_event"'
    assert t.query("SELECT * FROM other_table") == "SELECT * FROM other_table"
    assert t.query("SELECT id FROM User") == "SELECT id FROM User"  # refused later


def test_errors_and_bad_messages_end_the_connection() -> None:
    t = connected()
    for bad in ["[]", "nope", '{"subscribe": 1}', '{"call": {"fn": 3}}', '{"one_off_query": {}}']:
        with pytest.raises(CompatError):
            t.request(bad)
    with pytest.raises(CompatError):
        t.request('{"subscribe": {"query_strings": [1]}}')
    assert t.request('{"subscribe": {"query_strings": []}}') is None
    assert t.translate({"type": "error", "code": "unsupported_query", "message": "x" * 500}) == []
    assert t.close is not None and t.close[0] == 1008
    assert t.close[1].startswith("unsupported_query: x") and len(t.close[1].encode()) <= 123


def _schema(module: ModuleDef) -> dict[str, Any]:
    return {"version": 3, "definition": module.to_json()}


def test_the_generated_files_have_0_7s_layout() -> None:
    files = generate("spacetimedb-python", _schema(MODULE), "alice/game")
    assert set(files) == {
        "point.py",
        "user.py",
        "game_event.py",
        "set_name_reducer.py",
        "mark_reducer.py",
        "secret_reducer.py",
    }  # no file for the lifecycle reducer, no __init__.py
    assert file_name("GameEvent") == "game_event" and cache_name("GameEvent") == "GameEvent"
    for name, text in files.items():
        assert text.startswith("# Generated by millpond generate from alice/game")
        compile(text, name, "exec")
    user = files["user.py"]
    assert 'primary_key = "identity"' in user and "is_table_class = True" in user
    assert "def filter_by_identity(cls, identity) -> User:" in user
    assert "def filter_by_online(cls, online) -> List[User]:" in user
    assert "Identity.from_string(data[0][0])" in user
    assert "(str(data[1]['0']) if '0' in data[1] else None)" in user
    assert "from .point import Point" in files["game_event.py"]
    mark = files["mark_reducer.py"]
    assert 'reducer_name = "mark"' in mark and "def register_on_mark(" in mark
    assert "who = [str(who)]" in mark


def test_a_hostile_definition_cannot_inject_code() -> None:
    evil = 'x")\nimport os\nos.system("true")  #'
    table = MODULE.tables[0]
    bad = [
        ModuleDef(tables=(TableDef("t", evil, table.columns, table.primary_key),)),
        ModuleDef(tables=(TableDef("t", "T", (ColumnDef(evil, TypeRef("text")),), (evil,)),)),
        ModuleDef(tables=(TableDef("t", "T", (ColumnDef("data", TypeRef("text")),), ("data",)),)),
        ModuleDef(reducers=(ReducerDef(evil, ()),)),
        ModuleDef(reducers=(ReducerDef("r", (ParamDef(evil, TypeRef("text")),)),)),
        ModuleDef(reducers=(ReducerDef("r", (ParamDef("p", TypeRef(evil)),)),)),
        ModuleDef(reducers=(ReducerDef("r", (ParamDef("p", TypeRef("jsonb", record=evil)),)),)),
        ModuleDef(records=(RecordDef(evil, ()),)),
        ModuleDef(tables=(TableDef("t", "XReducer", table.columns, table.primary_key),)),
    ]
    for module in bad:
        with pytest.raises(GenerateError):
            generate("spacetimedb-python", _schema(module), "alice/game")
