"""Migration plans between module versions, applied to a real Postgres database that
holds rows: additive plans keep the data, every destructive change is flagged."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from millpond.module._def import (
    ColumnDef,
    IndexDef,
    ModuleDef,
    ParamDef,
    RecordDef,
    ReducerDef,
    TableDef,
    TypeRef,
)
from millpond.module._values import from_db, from_json
from millpond.server.modules import schema
from millpond.server.modules.migrate import Plan, plan

Conn = psycopg.Connection[Any]
IDENT = "cd" * 32


def col(name: str, type_name: str, **options: Any) -> ColumnDef:
    ref = TypeRef(
        type_name,
        nullable=options.pop("nullable", False),
        array=options.pop("array", False),
        record=options.pop("record", None),
    )
    if "default" in options:
        options["has_default"] = True
    return ColumnDef(name, ref, **options)


MESSAGE = TableDef(
    name="message",
    class_name="Message",
    columns=(
        col("id", "int8", auto_inc=True, default=0),
        col("sender", "identity"),
        col("text", "text"),
        col("likes", "int4", default=0),
    ),
    primary_key=("id",),
    public=True,
    indexes=(IndexDef("message_sender_idx", ("sender",)),),
)
USER = TableDef(
    name="user",
    class_name="User",
    columns=(
        col("identity", "identity"),
        col("name", "text", nullable=True),
        col("online", "bool"),
    ),
    primary_key=("identity",),
    unique=(("name",),),
)
SEND = ReducerDef("send_message", (ParamDef("text", TypeRef("text")),))
V1 = ModuleDef(tables=(MESSAGE, USER), reducers=(SEND,))


def table_with(table: TableDef, **changes: Any) -> TableDef:
    return dataclasses.replace(table, **changes)


def module_with(*tables: TableDef, reducers: tuple[ReducerDef, ...] = (SEND,)) -> ModuleDef:
    return ModuleDef(tables=tables, reducers=reducers)


def apply(db: Conn, steps: Plan) -> None:
    with db.transaction():
        for statement in steps.statements:
            db.execute(statement)


def text_of(db: Conn, statements: list[Any]) -> list[str]:
    return [s.as_string(db) for s in statements]


@pytest.fixture
def v1_db(db: Conn) -> Conn:
    """A database with version 1 and rows in both tables."""
    apply(db, plan(None, V1))
    db.execute("INSERT INTO message (sender, text) VALUES (%s, 'hello'), (%s, 'bye')", [IDENT] * 2)
    db.execute('INSERT INTO "user" VALUES (%s, %s, true)', [IDENT, "ann"])
    return db


def rows(db: Conn, query: str) -> list[tuple[Any, ...]]:
    return db.execute(query).fetchall()


# -- first publish and idempotence -----------------------------------------------------


def test_first_plan_is_the_create_statements(db: Conn) -> None:
    first = plan(None, V1)
    assert text_of(db, first.statements) == text_of(db, schema.create_statements(V1))
    assert not first.destructive
    assert [s.kind for s in first.steps] == ["create_table", "create_table", "add_reducer"]
    apply(db, first)
    comment = "SELECT obj_description('public.message'::regclass, 'pg_class')"
    assert rows(db, comment) == [(schema.TABLE_COMMENT,)]
    insert = f"INSERT INTO message (sender, text) VALUES ('{IDENT}', 'x') RETURNING id, likes"
    inserted = rows(db, insert)
    assert inserted == [(1, 0)]


def test_same_version_is_an_empty_plan() -> None:
    assert plan(V1, V1).steps == []
    assert plan(V1, ModuleDef.from_json(V1.to_json())).steps == []
    assert plan(V1, V1).diff_text() == ""


# -- additive changes ------------------------------------------------------------------


def test_additive_plan_keeps_the_data(v1_db: Conn) -> None:
    message = table_with(
        MESSAGE,
        columns=(
            *MESSAGE.columns,
            col("edited", "bool", default=False),
            col("note", "text", nullable=True),
            col("tags", "text", array=True, default=["new"]),
            col("seq", "int8", auto_inc=True, default=0),
        ),
        indexes=(*MESSAGE.indexes, IndexDef("message_text_idx", ("text",))),
        unique=(("text",),),
    )
    room = TableDef("room", "Room", (col("id", "int8", auto_inc=True, default=0),), ("id",))
    user = table_with(USER, columns=(USER.columns[0], col("name", "text"), USER.columns[2]))
    v2 = module_with(message, user, room)
    steps = plan(V1, v2)
    assert not steps.destructive
    apply(v1_db, steps)
    got = rows(v1_db, "SELECT id, text, likes, edited, note, tags, seq FROM message ORDER BY id")
    assert got == [(1, "hello", 0, False, None, ["new"], 1), (2, "bye", 0, False, None, ["new"], 2)]
    new = rows(
        v1_db, "INSERT INTO message (sender, text) VALUES ('" + IDENT + "', 'z') RETURNING id, seq"
    )
    assert new == [(3, 3)]
    assert rows(v1_db, 'SELECT name FROM "user"') == [("ann",)]
    assert plan(v2, v2).steps == []


def test_may_fail_steps_fail_on_existing_rows(v1_db: Conn) -> None:
    v1_db.execute("UPDATE message SET text = 'same'")
    unique_text = table_with(MESSAGE, unique=(("text",),))
    steps = plan(V1, module_with(unique_text, USER))
    assert [(s.kind, s.may_fail, s.destructive) for s in steps.steps] == [
        ("add_unique", True, False)
    ]
    with pytest.raises(psycopg.errors.UniqueViolation):
        apply(v1_db, steps)
    v1_db.execute('UPDATE "user" SET name = NULL')
    not_null = table_with(USER, columns=(USER.columns[0], col("name", "text"), USER.columns[2]))
    steps = plan(V1, module_with(MESSAGE, not_null))
    assert [(s.kind, s.may_fail) for s in steps.steps] == [("set_not_null", True)]
    with pytest.raises(psycopg.errors.NotNullViolation):
        apply(v1_db, steps)


def test_defaults_and_auto_inc_change(v1_db: Conn) -> None:
    likes = col("likes", "int4", default=5)
    plain_id = col("id", "int8")
    message = table_with(MESSAGE, columns=(plain_id, *MESSAGE.columns[1:3], likes))
    steps = plan(V1, module_with(message, USER))
    assert [s.kind for s in steps.steps] == ["change_auto_inc", "change_default"]
    assert not steps.destructive
    apply(v1_db, steps)
    v1_db.execute(f"INSERT INTO message (id, sender, text) VALUES (10, '{IDENT}', 'x')")
    assert rows(v1_db, "SELECT likes FROM message WHERE id = 10") == [(5,)]
    with pytest.raises(psycopg.errors.NotNullViolation):
        v1_db.execute(f"INSERT INTO message (sender, text) VALUES ('{IDENT}', 'x')")
    back = plan(module_with(message, USER), V1)
    apply(v1_db, back)
    again = rows(v1_db, f"INSERT INTO message (sender, text) VALUES ('{IDENT}', 'y') RETURNING id")
    assert again == [(11,)]  # the identity restarts after the largest id


def test_visibility_changes_are_steps_without_statements() -> None:
    private_message = table_with(MESSAGE, public=False)
    private_send = dataclasses.replace(SEND, private=True)
    steps = plan(V1, module_with(private_message, USER, reducers=(private_send,)))
    assert [(s.kind, s.statements, s.destructive) for s in steps.steps] == [
        ("change_visibility", [], False),
        ("change_visibility", [], False),
    ]
    assert steps.diff_text() == (
        "~ table message public -> private\n~ reducer send_message public -> private"
    )


# -- destructive changes ---------------------------------------------------------------


def _drop_user(v: ModuleDef) -> ModuleDef:
    return module_with(MESSAGE)


def _drop_online(v: ModuleDef) -> ModuleDef:
    return module_with(MESSAGE, table_with(USER, columns=USER.columns[:2]))


def _likes_to_int8(v: ModuleDef) -> ModuleDef:
    columns = (*MESSAGE.columns[:3], col("likes", "int8", default=0))
    return module_with(table_with(MESSAGE, columns=columns), USER)


def _text_to_int8(v: ModuleDef) -> ModuleDef:
    columns = (*MESSAGE.columns[:2], col("text", "int8"), MESSAGE.columns[3])
    return module_with(table_with(MESSAGE, columns=columns), USER)


def _key_to_name(v: ModuleDef) -> ModuleDef:
    user = table_with(USER, primary_key=("identity", "online"))
    return module_with(MESSAGE, user)


def _drop_index(v: ModuleDef) -> ModuleDef:
    return module_with(table_with(MESSAGE, indexes=()), USER)


def _not_null_without_default(v: ModuleDef) -> ModuleDef:
    columns = (*MESSAGE.columns, col("title", "text"))
    return module_with(table_with(MESSAGE, columns=columns), USER)


def _reorder(v: ModuleDef) -> ModuleDef:
    columns = (MESSAGE.columns[0], MESSAGE.columns[2], MESSAGE.columns[1], MESSAGE.columns[3])
    return module_with(table_with(MESSAGE, columns=columns), USER)


def _insert_before_last(v: ModuleDef) -> ModuleDef:
    columns = (*MESSAGE.columns[:3], col("edited", "bool", default=False), MESSAGE.columns[3])
    return module_with(table_with(MESSAGE, columns=columns), USER)


@pytest.mark.parametrize(
    ("change", "kind", "outcome"),
    [
        (_drop_user, "drop_table", "SELECT count(*) FROM pg_tables WHERE tablename = 'user'"),
        (_drop_online, "drop_column", 'SELECT * FROM "user"'),
        (_likes_to_int8, "change_type", "SELECT likes FROM message ORDER BY id"),
        (_text_to_int8, "change_type", psycopg.errors.InvalidTextRepresentation),
        (_key_to_name, "change_key", 'SELECT identity, online FROM "user"'),
        (_drop_index, "drop_index", "SELECT count(*) FROM pg_indexes WHERE tablename = 'message'"),
        (_not_null_without_default, "add_column", psycopg.errors.NotNullViolation),
        (_reorder, "reorder_columns", "SELECT * FROM message ORDER BY id"),
        (_insert_before_last, "reorder_columns", "SELECT * FROM message ORDER BY id"),
    ],
)
def test_destructive_changes_are_flagged(
    v1_db: Conn, change: Callable[[ModuleDef], ModuleDef], kind: str, outcome: Any
) -> None:
    steps = plan(V1, change(V1))
    assert steps.destructive
    flagged = [s for s in steps.steps if s.destructive]
    assert [s.kind for s in flagged] == [kind]
    assert "destructive" in flagged[0].description
    if isinstance(outcome, str):
        apply(v1_db, steps)
        after = rows(v1_db, outcome)
        assert after  # the statements ran; what is left is pinned below
        assert plan(change(V1), change(V1)).steps == []
    else:
        with pytest.raises(outcome):
            apply(v1_db, steps)


def test_destructive_plans_leave_what_they_say(v1_db: Conn) -> None:
    apply(v1_db, plan(V1, _likes_to_int8(V1)))
    type_query = (
        "SELECT data_type FROM information_schema.columns"
        " WHERE table_name = 'message' AND column_name = 'likes'"
    )
    assert rows(v1_db, type_query) == [("bigint",)]
    assert rows(v1_db, "SELECT likes FROM message") == [(0,), (0,)]
    apply(v1_db, plan(_likes_to_int8(V1), _key_to_name(V1)))
    key = rows(
        v1_db,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'user_pkey'",
    )
    assert key == [("PRIMARY KEY (identity, online)",)]


def test_type_change_to_identity_adds_the_check(v1_db: Conn) -> None:
    columns = (*MESSAGE.columns[:2], col("text", "identity"), MESSAGE.columns[3])
    steps = plan(V1, module_with(table_with(MESSAGE, columns=columns), USER))
    with pytest.raises(psycopg.errors.CheckViolation):
        apply(v1_db, steps)
    v1_db.execute("UPDATE message SET text = sender")
    apply(v1_db, steps)
    with pytest.raises(psycopg.errors.CheckViolation):
        v1_db.execute(f"INSERT INTO message (sender, text) VALUES ('{IDENT}', 'nope')")


# -- the diff for the publisher --------------------------------------------------------


def test_diff_text_is_pinned() -> None:
    message = table_with(
        MESSAGE,
        columns=(
            MESSAGE.columns[0],
            MESSAGE.columns[1],
            col("text", "int8"),
            MESSAGE.columns[3],
            col("edited", "bool", default=False),
            col("reply_to", "int8", nullable=True),
        ),
        unique=(("sender", "text"),),
    )
    user = table_with(USER, columns=USER.columns[:2], unique=())
    room = TableDef("room", "Room", (col("id", "int8", auto_inc=True, default=0),), ("id",))
    reducers = (ReducerDef("join", ()),)
    steps = plan(V1, module_with(message, user, room, reducers=reducers))
    assert steps.diff_text() == "\n".join(
        [
            "~ message.text text -> int8 (destructive)",
            "+ message.edited bool DEFAULT false",
            "+ message.reply_to int8 NULL",
            "+ message unique (sender, text) (may fail on existing rows)",
            "- user unique (name)",
            "- user.online (destructive: drops data)",
            "+ table room",
            "- reducer send_message",
            "+ reducer join",
        ]
    )
    assert steps.destructive


# -- hostile definitions ---------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        module_with(table_with(USER, name='x"; DROP TABLE message; --')),
        module_with(table_with(USER, columns=(col("pg_x", "text"),), primary_key=("pg_x",))),
        module_with(table_with(USER, columns=(col("a", "money"),), primary_key=("a",))),
        module_with(table_with(USER, primary_key=("nope",))),
        module_with(
            table_with(USER, columns=(col("a", "jsonb", record="Nope"),), primary_key=("a",))
        ),
        module_with(USER, USER),
        module_with(
            table_with(USER, columns=(col("a", "text", auto_inc=True),), primary_key=("a",))
        ),
    ],
)
def test_definitions_the_decorators_cannot_make_are_refused(bad: ModuleDef) -> None:
    with pytest.raises(schema.SchemaError):
        plan(None, bad)
    with pytest.raises(schema.SchemaError):
        schema.create_statements(bad)


DEFAULTS: list[tuple[str, Any, dict[str, Any]]] = [
    ("int2", -7, {}),
    ("int4", 7, {}),
    ("int8", 2**62, {}),
    ("float4", 0.1, {}),
    ("float8", 2.5, {}),
    ("numeric", "1.50", {}),
    ("text", 'it\'s "quoted"', {}),
    ("bool", True, {}),
    ("bytea", "AAE=", {}),
    ("timestamptz", "2024-01-01T00:00:00+02:00", {}),
    ("date", "2024-02-29", {}),
    ("uuid", "00000000-0000-0000-0000-000000000001", {}),
    ("identity", IDENT, {}),
    ("jsonb", {"a": [1, "x"]}, {}),
    ("text", None, {"nullable": True}),
    ("text", ["a", "b c"], {"array": True}),
    ("identity", [IDENT], {"array": True}),
    ("jsonb", {"x": 1, "y": 2}, {"record": "Point"}),
]


def test_defaults_of_every_type_are_column_defaults(db: Conn) -> None:
    columns = [col("id", "int8", auto_inc=True, default=0)]
    columns += [col(f"c{i}", t, default=d, **o) for i, (t, d, o) in enumerate(DEFAULTS)]
    point = RecordDef("Point", (ParamDef("x", TypeRef("int8")), ParamDef("y", TypeRef("int8"))))
    module = ModuleDef(tables=(TableDef("d", "D", tuple(columns), ("id",)),), records=(point,))
    apply(db, plan(None, module))
    (row,) = rows(db, "INSERT INTO d DEFAULT VALUES RETURNING *")
    assert row[0] == 1
    for column, value in zip(columns[1:], row[1:], strict=True):
        expected = from_json(column.default, column.type, module)
        assert from_db(value, column.type) == expected, column
