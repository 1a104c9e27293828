"""The authoring decorators and ``collect``: type hints → TypeRef, tables with their keys,
indexes and unique groups, records, reducers, and every mistake reported by name.

(No ``from __future__ import annotations`` here: the classes are declared inside the
tests, and their hints must be evaluated where they are written.)"""

import dataclasses
import datetime
import decimal
import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Optional

import pytest

from millpond.module import (
    F32,
    I16,
    I32,
    I64,
    DeclarationError,
    Identity,
    ModuleDef,
    PgType,
    Timestamp,
    _declare,
    column,
    index,
    init,
    primary_key,
    record,
    reducer,
    table,
    unique,
)
from millpond.module._def import IndexDef, TypeRef
from millpond.module._types import type_ref


@pytest.fixture(autouse=True)
def registry() -> Iterator[None]:
    _declare.reset()
    yield
    _declare.reset()


def collected() -> ModuleDef:
    return _declare.collect(_declare.REGISTRY)


NEW_YEAR = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


@record
class Point:
    x: int
    y: int


HINTS: list[tuple[Any, TypeRef]] = [
    (int, TypeRef("int8")),
    (I64, TypeRef("int8")),
    (I32, TypeRef("int4")),
    (I16, TypeRef("int2")),
    (float, TypeRef("float8")),
    (F32, TypeRef("float4")),
    (decimal.Decimal, TypeRef("numeric")),
    (str, TypeRef("text")),
    (bool, TypeRef("bool")),
    (bytes, TypeRef("bytea")),
    (Timestamp, TypeRef("timestamptz")),
    (datetime.datetime, TypeRef("timestamptz")),
    (datetime.date, TypeRef("date")),
    (uuid.UUID, TypeRef("uuid")),
    (Identity, TypeRef("identity")),
    (dict, TypeRef("jsonb")),
    (dict[str, int], TypeRef("jsonb")),
    (Any, TypeRef("jsonb")),
    (str | None, TypeRef("text", nullable=True)),
    (Optional[int], TypeRef("int8", nullable=True)),  # noqa: UP045 - the old spelling works too
    (list[int], TypeRef("int8", array=True)),
    (list[I32] | None, TypeRef("int4", nullable=True, array=True)),
    (list[Identity], TypeRef("identity", array=True)),
    (list[Point], TypeRef("jsonb")),
    (Point, TypeRef("jsonb", record="Point")),
    (Point | None, TypeRef("jsonb", nullable=True, record="Point")),
]


@pytest.mark.parametrize(("hint", "expected"), HINTS, ids=[repr(h) for h, _ in HINTS])
def test_type_hints(hint: Any, expected: TypeRef) -> None:
    assert type_ref(hint, "here") == expected


@pytest.mark.parametrize(
    ("hint", "message"),
    [
        (int | str, "only `X | None` unions"),
        (set[int], "cannot be stored"),
        (complex, "cannot be stored"),
        (list[int | None], "cannot be stored"),
        (Annotated[str, PgType("int4")], "int4 is not a kind of"),
        (Annotated[float, PgType("int2")], "int2 is not a kind of"),
    ],
)
def test_unsupported_type_hints(hint: Any, message: str) -> None:
    with pytest.raises(TypeError, match="here: "):
        type_ref(hint, "here")
    with pytest.raises(TypeError, match=message.replace("|", r"\|")):
        type_ref(hint, "here")


# -- tables ----------------------------------------------------------------------------


def test_a_table_with_everything() -> None:
    @table(public=True)
    class ChatMessage:
        id: int = primary_key(auto_inc=True)
        sender: Identity = index()
        handle: str = unique()
        sent: Timestamp
        text: str = ""
        tags: list[str] = column(default=["new"])
        where: Point | None = None

    module = collected()
    (t,) = module.tables
    assert (t.name, t.class_name, t.public, t.primary_key) == (
        "chat_message",
        "ChatMessage",
        True,
        ("id",),
    )
    assert [c.name for c in t.columns] == [
        "id",
        "sender",
        "handle",
        "sent",
        "text",
        "tags",
        "where",
    ]
    ident = t.column("id")
    assert (ident.auto_inc, ident.default, ident.has_default) == (True, 0, True)
    assert not t.column("sent").has_default
    assert (t.column("text").default, t.column("text").has_default) == ("", True)
    assert t.column("tags").default == ["new"]
    assert ChatMessage(sender="x", handle="h", sent=None).tags == ["new"]  # type: ignore[arg-type]
    a = ChatMessage(sender="x", handle="h", sent=None)  # type: ignore[arg-type]
    a.tags.append("mine")
    assert ChatMessage(sender="x", handle="h", sent=None).tags == ["new"]  # type: ignore[arg-type]
    assert t.column("where").type == TypeRef("jsonb", nullable=True, record="Point")
    assert (t.column("where").default, t.column("where").has_default) == (None, True)
    assert t.unique == (("handle",),)
    assert t.indexes == (IndexDef("chat_message_sender_idx", ("sender",)),)


def test_composite_keys_groups_and_names() -> None:
    @table(
        name="membership",
        primary_key=("room", "member"),
        unique=[("member", "nick")],
        indexes=[("nick",), ("room", "joined")],
    )
    class Member:
        room: int
        member: Identity
        nick: str
        joined: Timestamp

    (t,) = collected().tables
    assert (t.name, t.public, t.primary_key) == ("membership", False, ("room", "member"))
    assert t.unique == (("member", "nick"),)
    assert t.indexes == (
        IndexDef("membership_nick_idx", ("nick",)),
        IndexDef("membership_room_joined_idx", ("room", "joined")),
    )


def test_defaults_are_stored_as_json() -> None:
    when = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)

    @table
    class Thing:
        id: int = primary_key()
        price: decimal.Decimal = decimal.Decimal("1.50")
        since: Timestamp = when
        blob: bytes = b"\x00"
        ref: uuid.UUID = uuid.UUID(int=1)

    (t,) = collected().tables
    assert [c.default for c in t.columns[1:]] == [
        "1.50",
        "2024-01-01T00:00:00+00:00",
        "AA==",
        "00000000-0000-0000-0000-000000000001",
    ]
    assert ModuleDef.from_json(collected().to_json()) == collected()


# -- reducers and records --------------------------------------------------------------


def test_reducers() -> None:
    @reducer
    def send(
        ctx: Any, text: str, to: Identity | None = None, tags: list[str] | None = None
    ) -> None:
        """Send a message."""

    @reducer(name="ban", private=True, isolation="read_committed")
    def ban_user(ctx: Any, who: Identity, when: Timestamp = NEW_YEAR) -> None: ...

    @init
    def setup(ctx: Any) -> None: ...

    module = collected()
    send_def, ban_def = module.reducers
    assert send_def.doc == "Send a message."
    assert [(p.name, p.type, p.has_default, p.default) for p in send_def.params] == [
        ("text", TypeRef("text"), False, None),
        ("to", TypeRef("identity", nullable=True), True, None),
        ("tags", TypeRef("text", nullable=True, array=True), True, None),
    ]
    assert (send_def.private, send_def.isolation) == (False, "serializable")
    assert (ban_def.name, ban_def.private, ban_def.isolation) == ("ban", True, "read_committed")
    assert ban_def.params[1].default == "2024-01-01T00:00:00+00:00"
    assert module.init == "setup"


def test_records_and_the_json_round_trip() -> None:
    @record
    class Size:
        w: I32
        h: I32 = 1

    @record
    class Box:
        at: Point
        size: Size
        label: str | None = None

    _declare.REGISTRY.records.insert(0, Point)

    @reducer
    def place(ctx: Any, box: Box, boxes: list[Box]) -> None: ...

    @table
    class Shelf:
        id: int = primary_key(auto_inc=True)
        box: Box

    module = collected()
    assert [r.name for r in module.records] == ["Point", "Size", "Box"]
    box = module.record("Box")
    assert [(f.name, f.type, f.has_default) for f in box.fields] == [
        ("at", TypeRef("jsonb", record="Point"), False),
        ("size", TypeRef("jsonb", record="Size"), False),
        ("label", TypeRef("text", nullable=True), True),
    ]
    assert module.record("Size").fields[1].default == 1
    assert module.reducer("place").params[1].type == TypeRef("jsonb")
    assert ModuleDef.from_json(module.to_json()) == module
    with pytest.raises(ValueError, match="unknown module definition format"):
        ModuleDef.from_json({**module.to_json(), "format": 99})


# -- mistakes --------------------------------------------------------------------------


def _no_key() -> None:
    @table
    class Note:
        text: str


def _two_keys() -> None:
    @table
    class Note:
        a: int = primary_key()
        b: int = primary_key()


def _key_twice() -> None:
    @table(primary_key=("a",))
    class Note:
        a: int = primary_key()


def _bad_table_name() -> None:
    @table(name="Notes-2")
    class Note:
        a: int = primary_key()


def _bad_column_name() -> None:
    @table
    class Note:
        Title: int = primary_key()


def _reserved_table_name() -> None:
    @table(name="pg_notes")
    class Note:
        a: int = primary_key()


def _reserved_column_name() -> None:
    @table
    class Note:
        millpond_id: int = primary_key()


def _long_name() -> None:
    @table(name="n" * 64)
    class Note:
        a: int = primary_key()


def _unsupported_type() -> None:
    @table
    class Note:
        a: int = primary_key()
        b: complex


def _non_integer_auto_inc() -> None:
    @table
    class Note:
        a: str = primary_key(auto_inc=True)


def _array_auto_inc() -> None:
    @table
    class Note:
        a: list[int] = primary_key(auto_inc=True)


def _unknown_unique_column() -> None:
    @table(unique=[("nope",)])
    class Note:
        a: int = primary_key()


def _empty_index() -> None:
    @table(indexes=[()])
    class Note:
        a: int = primary_key()


def _repeated_key_column() -> None:
    @table(primary_key=("a", "a"))
    class Note:
        a: int


def _mutable_default() -> None:
    @table
    class Note:
        a: int = primary_key()
        tags: list[str] = []  # the mistake under test


def _wrong_default_type() -> None:
    @table
    class Note:
        a: int = primary_key()
        b: int = "seven"  # type: ignore[assignment]


def _unjsonable_default() -> None:
    @reducer
    def r(ctx: Any, x: Any = object()) -> None:  # the mistake under test
        ...


def _naive_time_default() -> None:
    @reducer
    def r(ctx: Any, when: Timestamp = datetime.datetime(2024, 1, 1)) -> None: ...


def _no_ctx() -> None:
    @reducer
    def r() -> None: ...


def _keyword_ctx() -> None:
    @reducer
    def r(*, ctx: Any) -> None: ...


def _star_args() -> None:
    @reducer
    def r(ctx: Any, *args: int) -> None: ...


def _star_kwargs() -> None:
    @reducer
    def r(ctx: Any, **kwargs: int) -> None: ...


def _missing_hint() -> None:
    @reducer
    def r(ctx: Any, x) -> None: ...  # type: ignore[no-untyped-def]


def _unsupported_param() -> None:
    @reducer
    def r(ctx: Any, x: set[int]) -> None: ...


def _bad_reducer_name() -> None:
    @reducer(name="Send Message")
    def r(ctx: Any) -> None: ...


def _bad_isolation() -> None:
    @reducer(isolation="repeatable_read")
    def r(ctx: Any) -> None: ...


def _duplicate_reducer() -> None:
    @reducer(name="r")
    def a(ctx: Any) -> None: ...

    @reducer(name="r")
    def b(ctx: Any) -> None: ...


def _duplicate_init() -> None:
    @init
    def a(ctx: Any) -> None: ...

    @init
    def b(ctx: Any) -> None: ...


def _unresolvable_hint() -> None:
    @reducer
    def r(ctx: Any, x: "Missing") -> None: ...  # type: ignore[name-defined]  # noqa: F821


def _duplicate_table() -> None:
    @table(name="note")
    class A:
        a: int = primary_key()

    @table(name="note")
    class B:
        a: int = primary_key()

    collected()


def _duplicate_record() -> None:
    def make() -> None:
        @record
        class Thing:
            a: int

    make()
    make()
    collected()


MISTAKES: list[tuple[Callable[[], None], str]] = [
    (_no_key, "table note: declare a primary key"),
    (_two_keys, "table note: several primary_key() columns; a composite key is"),
    (_key_twice, "table note: primary key given twice"),
    (_bad_table_name, "table 'Notes-2': use lowercase letters"),
    (_bad_column_name, "table note, column Title: 'Title': use lowercase letters"),
    (_reserved_table_name, "table 'pg_notes': use lowercase"),
    (_reserved_column_name, "column millpond_id: 'millpond_id': use lowercase"),
    (_long_name, "at most 63"),
    (_unsupported_type, "table note, column b: type <class 'complex'> cannot be stored"),
    (_non_integer_auto_inc, "table note, column a: auto_inc needs an integer column"),
    (_array_auto_inc, "auto_inc needs an integer column"),
    (_unknown_unique_column, "table note: bad column list ['nope']"),
    (_empty_index, "table note: bad column list []"),
    (_repeated_key_column, "table note: bad column list ['a', 'a']"),
    (_mutable_default, "table Note: mutable default"),
    (_wrong_default_type, "table note, column b: bad default 'seven'"),
    (_unjsonable_default, "reducer r, parameter x: bad default"),
    (_naive_time_default, "reducer r, parameter when: bad default"),
    (_no_ctx, "reducer r: the first parameter is the context (ctx)"),
    (_keyword_ctx, "reducer r: the first parameter is the context"),
    (_star_args, "reducer r: *args and **kwargs are not supported"),
    (_star_kwargs, "*args and **kwargs are not supported"),
    (_missing_hint, "reducer r: parameter x needs a type hint"),
    (_unsupported_param, "reducer r, parameter x: type set[int] cannot be stored"),
    (_bad_reducer_name, "reducer 'Send Message': use lowercase"),
    (_bad_isolation, "reducer r: isolation is one of"),
    (_duplicate_reducer, "reducer r is declared twice"),
    (_duplicate_init, "@init is declared twice"),
    (_unresolvable_hint, "reducer r: a type hint cannot be resolved"),
    (_duplicate_table, "table note is declared twice"),
    (_duplicate_record, "record Thing is declared twice"),
]


@pytest.mark.parametrize(("mistake", "message"), MISTAKES, ids=[m.__name__ for m, _ in MISTAKES])
def test_mistakes_are_reported_by_name(mistake: Callable[[], None], message: str) -> None:
    with pytest.raises(DeclarationError) as caught:
        mistake()
    assert message in str(caught.value)


def test_declared_rows_are_dataclasses() -> None:
    @table
    class Note:
        id: int = primary_key(auto_inc=True)
        text: str

    note = Note(text="hi")
    assert dataclasses.asdict(note) == {"id": 0, "text": "hi"}
    with pytest.raises(TypeError):
        Note(0, "hi")  # type: ignore[misc]  # keyword-only
