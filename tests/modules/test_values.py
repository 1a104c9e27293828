"""Values of module types: JSON → Python validation, Python → JSON, call arguments, and
the round trip through a real Postgres column of the type the DDL declares."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import logging
import random
import struct
import uuid
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from millpond.module import I16, Identity, Timestamp, _declare
from millpond.module._def import ColumnDef, ModuleDef, TableDef, TypeRef
from millpond.module._values import (
    MAX_JSON_DEPTH,
    ArgumentError,
    bind_args,
    float4,
    from_db,
    from_json,
    to_db,
    to_json,
)
from millpond.server.modules import schema
from millpond.server.modules.runtime import Context, TableAccess, Tables
from millpond.server.modules.statements import Prepared, connect
from millpond.server.postgres.embedded import EmbeddedPostgres

EMPTY = ModuleDef()
IDENT = "ab" * 32
UTC = datetime.UTC


# A module with records (one nested) and reducers, declared with the decorators at the
# top level, as a module file does (the hints are strings resolved in this namespace).
_declare.reset()


@_declare.record
class Point:
    x: int
    y: int


@_declare.record
class Line:
    a: Point
    b: Point
    label: str | None = None


@_declare.reducer
def send(ctx: Any, text: str, tags: list[str], when: Timestamp | None = None) -> None: ...


@_declare.reducer
def draw(ctx: Any, line: Line, width: I16 = 1) -> None: ...


@_declare.reducer
def nothing(ctx: Any) -> None: ...


MODULE = _declare.collect(_declare.reset())
RECORDS: dict[str, type] = {"Point": Point, "Line": Line}


def check(value: Any, name: str, **ref: Any) -> Any:
    return from_json(value, TypeRef(name, **ref), MODULE, RECORDS, where="v")


def rejects(value: Any, name: str, fragment: str, **ref: Any) -> None:
    with pytest.raises(ArgumentError) as caught:
        check(value, name, **ref)
    assert str(caught.value).startswith("argument v")
    assert fragment in str(caught.value)


# -- scalars ---------------------------------------------------------------------------

VALID = [
    ("int2", -(2**15), -(2**15)),
    ("int2", 2**15 - 1, 2**15 - 1),
    ("int4", 2**31 - 1, 2**31 - 1),
    ("int8", -(2**63), -(2**63)),
    ("float4", 1.5, 1.5),
    ("float8", 3, 3.0),
    ("numeric", 3, decimal.Decimal(3)),
    ("numeric", 0.1, decimal.Decimal("0.1")),
    ("numeric", "-12.50", decimal.Decimal("-12.50")),
    ("numeric", "1E+2", decimal.Decimal(100)),
    ("text", "héllo", "héllo"),
    ("text", "", ""),
    ("bool", False, False),
    ("bytea", "AAE=", b"\x00\x01"),
    (
        "timestamptz",
        "2024-05-01T10:00:00Z",
        datetime.datetime(2024, 5, 1, 10, tzinfo=UTC),
    ),
    (
        "timestamptz",
        "2024-05-01T12:00:00.5+02:00",
        datetime.datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC),
    ),
    ("date", "2024-02-29", datetime.date(2024, 2, 29)),
    (
        "uuid",
        "12345678-1234-5678-1234-567812345678",
        uuid.UUID(int=0x12345678123456781234567812345678),
    ),
    ("identity", IDENT, IDENT),
    ("jsonb", {"a": [1, None, True, "x", 1.5]}, {"a": [1, None, True, "x", 1.5]}),
    ("jsonb", "just a string", "just a string"),
]


@pytest.mark.parametrize(("name", "value", "expected"), VALID)
def test_valid_scalars(name: str, value: Any, expected: Any) -> None:
    result = check(value, name)
    assert result == expected
    assert type(result) is type(expected) or name == "identity"


def test_identity_is_an_identity() -> None:
    assert isinstance(check(IDENT, "identity"), Identity)


INVALID = [
    ("int2", 2**15, "out of range for int2"),
    ("int2", -(2**15) - 1, "out of range for int2"),
    ("int4", 2**31, "out of range for int4"),
    ("int8", 2**63, "out of range for int8"),
    ("int8", True, "expected an integer, got True"),
    ("int8", 1.0, "expected an integer"),
    ("int8", "1", "expected an integer"),
    ("float8", True, "expected a number"),
    ("float8", "1.5", "expected a number"),
    ("float8", float("nan"), "finite"),
    ("float8", float("inf"), "finite"),
    ("float4", 1e39, "out of range for float4"),
    ("float4", 1e-50, "out of range for float4"),
    ("numeric", True, "expected a number or a decimal string"),
    ("numeric", "1,5", "expected a decimal number"),
    ("numeric", "NaN", "expected a decimal number"),
    ("numeric", " 1", "expected a decimal number"),
    ("numeric", "1e200000", "out of range for numeric"),
    ("numeric", "1e-20000", "out of range for numeric"),
    ("text", 3, "expected a string, got 3"),
    ("text", "a\x00b", "NUL"),
    ("text", "\ud800", "lone surrogates"),
    ("bool", 1, "expected true or false"),
    ("bool", "true", "expected true or false"),
    ("bytea", "not base64!", "expected base64"),
    ("bytea", "AAE", "expected base64"),
    ("bytea", b"\x00", "expected a base64 string"),
    ("timestamptz", "2024-05-01T10:00:00", "with an offset"),
    ("timestamptz", "2024-05-01", "with an offset"),
    ("timestamptz", "yesterday", "ISO 8601"),
    ("timestamptz", "2024-13-01T00:00:00Z", "ISO 8601"),
    ("timestamptz", 1714557600, "ISO 8601"),
    ("date", "2023-02-29", "ISO date"),
    ("date", "20240101", "ISO date"),
    ("date", "2024-01-01T00:00:00", "ISO date"),
    ("uuid", "not-a-uuid", "expected a UUID"),
    ("uuid", "{12345678-1234-5678-1234-567812345678}", "expected a UUID"),
    ("uuid", 5, "expected a UUID"),
    ("identity", IDENT.upper(), "64 lowercase hex"),
    ("identity", IDENT[:-1], "64 lowercase hex"),
    ("identity", 5, "64 lowercase hex"),
    ("jsonb", {"a": "\x00"}, "NUL"),
    ("jsonb", {"a": float("nan")}, "expected JSON"),
    ("jsonb", {1: 2}, "object keys are strings"),
    ("jsonb", {"a": {1, 2}}, "expected JSON"),
]


@pytest.mark.parametrize(("name", "value", "fragment"), INVALID)
def test_invalid_scalars(name: str, value: Any, fragment: str) -> None:
    rejects(value, name, fragment)


def test_the_message_names_the_argument() -> None:
    with pytest.raises(ArgumentError) as caught:
        from_json(3, TypeRef("text"), EMPTY, where="text")
    assert str(caught.value) == "argument text: expected a string, got 3"
    assert caught.value.where == "text"


def test_json_depth_is_limited() -> None:
    deep: Any = 1
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = [deep]
    rejects(deep, "jsonb", "deeper than")
    shallow: Any = 1
    for _ in range(MAX_JSON_DEPTH - 1):
        shallow = {"k": shallow}
    assert check(shallow, "jsonb") == shallow


def test_null_only_when_nullable() -> None:
    for name in ("int8", "text", "jsonb", "identity"):
        rejects(None, name, "must not be null")
        assert check(None, name, nullable=True) is None


def test_arrays() -> None:
    assert check([1, 2], "int4", array=True) == [1, 2]
    assert check([], "text", array=True) == []
    assert check(None, "text", array=True, nullable=True) is None
    rejects("ab", "text", "expected a list", array=True)
    rejects([1, None], "int4", "must not be null", array=True)
    with pytest.raises(ArgumentError) as caught:
        check(["a", "b", "c", 4], "text", array=True)
    assert caught.value.where == "v[3]"
    assert check([IDENT], "identity", array=True) == [IDENT]


# -- records ---------------------------------------------------------------------------


def test_records_become_instances_or_dicts() -> None:
    line = {"a": {"x": 1, "y": 2}, "b": {"x": 3, "y": 4}}
    ref = TypeRef("jsonb", record="Line")
    made = from_json(line, ref, MODULE, RECORDS)
    point = RECORDS["Point"]
    assert made == RECORDS["Line"](a=point(x=1, y=2), b=point(x=3, y=4), label=None)
    assert from_json(line, ref, MODULE) == {**line, "label": None}
    assert to_json(made) == {**line, "label": None}


def test_record_errors_name_the_field() -> None:
    ref = TypeRef("jsonb", record="Line")
    cases = [
        ({"a": {"x": 1, "y": 2}}, "p.b", "missing"),
        ({"a": {"x": 1}, "b": {"x": 1, "y": 2}}, "p.a.y", "missing"),
        ({"a": {"x": 1, "y": 2, "z": 3}, "b": {"x": 1, "y": 2}}, "p.a", "unknown field 'z'"),
        ({"a": {"x": "1", "y": 2}, "b": {"x": 1, "y": 2}}, "p.a.x", "expected an integer"),
        ({"a": [1, 2], "b": {"x": 1, "y": 2}}, "p.a", "expected an object (Point)"),
        ("line", "p", "expected an object (Line)"),
    ]
    for value, where, fragment in cases:
        with pytest.raises(ArgumentError) as caught:
            from_json(value, ref, MODULE, RECORDS, where="p")
        assert caught.value.where == where
        assert fragment in str(caught.value)


# -- call arguments --------------------------------------------------------------------


def test_bind_args_as_list_and_object() -> None:
    send = MODULE.reducer("send")
    expected = {"text": "hi", "tags": ["a"], "when": None}
    assert bind_args(send, ["hi", ["a"]], MODULE) == expected
    assert bind_args(send, {"tags": ["a"], "text": "hi"}, MODULE) == expected
    when = bind_args(send, ["hi", [], "2024-01-01T00:00:00Z"], MODULE)["when"]
    assert when == datetime.datetime(2024, 1, 1, tzinfo=UTC)
    assert bind_args(MODULE.reducer("nothing"), [], MODULE) == {}
    assert bind_args(MODULE.reducer("nothing"), {}, MODULE) == {}


def test_bind_args_defaults_and_records() -> None:
    draw = MODULE.reducer("draw")
    line = {"a": {"x": 1, "y": 2}, "b": {"x": 3, "y": 4}}
    bound = bind_args(draw, {"line": line}, MODULE, RECORDS)
    assert bound["width"] == 1
    assert isinstance(bound["line"], RECORDS["Line"])
    assert bind_args(draw, [line, 5], MODULE)["width"] == 5


@pytest.mark.parametrize(
    ("args", "where", "message"),
    [
        (["hi"], "tags", "argument tags: missing"),
        ({"text": "hi"}, "tags", "argument tags: missing"),
        (["hi", [], None, 4], "", "send takes 3 arguments, got 4"),
        ({"text": "hi", "tags": [], "colour": 1}, "colour", "argument colour: unknown"),
        ([3, []], "text", "argument text: expected a string, got 3"),
        (["hi", "a"], "tags", "argument tags: expected a list"),
        ("hi", "", "arguments are a JSON list or object"),
    ],
)
def test_bind_args_errors(args: Any, where: str, message: str) -> None:
    with pytest.raises(ArgumentError) as caught:
        bind_args(MODULE.reducer("send"), args, MODULE)
    assert caught.value.where == where
    assert str(caught.value).startswith(message)


def test_bind_args_range_of_narrow_ints() -> None:
    line = {"a": {"x": 1, "y": 2}, "b": {"x": 3, "y": 4}}
    with pytest.raises(ArgumentError, match="argument width: 40000 is out of range for int2"):
        bind_args(MODULE.reducer("draw"), [line, 40000], MODULE)


# -- to_json ---------------------------------------------------------------------------


def test_to_json_forms() -> None:
    when = datetime.datetime(2024, 1, 1, 12, tzinfo=UTC)
    value = {
        "t": when,
        "d": datetime.date(2024, 1, 2),
        "n": decimal.Decimal("1.50"),
        "b": b"\x00\x01",
        "u": uuid.UUID(int=1),
        "i": Identity(IDENT),
        "l": (1, 2),
    }
    assert to_json(value) == {
        "t": "2024-01-01T12:00:00+00:00",
        "d": "2024-01-02",
        "n": "1.50",
        "b": "AAE=",
        "u": "00000000-0000-0000-0000-000000000001",
        "i": IDENT,
        "l": [1, 2],
    }
    assert type(to_json(Identity(IDENT))) is str
    with pytest.raises(TypeError, match="cannot convert object"):
        to_json(object())


# -- round trips -----------------------------------------------------------------------

ZONES = st.sampled_from(
    [
        UTC,
        datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
        datetime.timezone(-datetime.timedelta(hours=8)),
    ]
)
FLOAT4 = st.floats(width=32, allow_nan=False, allow_infinity=False).map(float4)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00")),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet="abcxyz", max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
).filter(lambda v: v is not None)  # null is not a value of a NOT NULL jsonb
STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "int2": st.integers(-(2**15), 2**15 - 1),
    "int4": st.integers(-(2**31), 2**31 - 1),
    "int8": st.integers(-(2**63), 2**63 - 1),
    "float4": FLOAT4,
    "float8": st.floats(allow_nan=False, allow_infinity=False),
    "numeric": st.decimals(
        allow_nan=False, allow_infinity=False, places=4, min_value=-(10**20), max_value=10**20
    ),
    "text": st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00")),
    "bool": st.booleans(),
    "bytea": st.binary(),
    "timestamptz": st.datetimes(timezones=ZONES),
    "date": st.dates(),
    "uuid": st.uuids(),
    "identity": st.binary(min_size=32, max_size=32).map(lambda b: Identity(b.hex())),
    "jsonb": JSON,
}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_json_round_trip(name: str) -> None:
    @settings(max_examples=60, deadline=None)
    @given(STRATEGIES[name])
    def round_trip(value: Any) -> None:
        assert from_json(to_json(value), TypeRef(name), EMPTY) == value

    round_trip()


def test_float4_is_what_postgres_returns() -> None:
    assert check(0.1, "float4") == 0.1
    assert check(struct.unpack("f", struct.pack("f", 0.1))[0], "float4") == 0.1
    assert check(16777217, "float4") == 16777216.0
    assert check(1e-40, "float4") == 1e-40  # a subnormal float4


DB_CASES: list[tuple[TypeRef, Any]] = [
    (TypeRef("int2"), -(2**15)),
    (TypeRef("int4"), 2**31 - 1),
    (TypeRef("int8"), -(2**63)),
    (TypeRef("float4"), 0.1),
    (TypeRef("float4"), 3.4028235e38),
    (TypeRef("float4"), 1e-40),
    (TypeRef("float8"), 0.1),
    (TypeRef("numeric"), decimal.Decimal("-123456789012345678901234567890.000001")),
    (TypeRef("text"), "héllo 🦆 'quoted' \"x\""),
    (TypeRef("bool"), True),
    (TypeRef("bytea"), bytes(range(256))),
    (TypeRef("timestamptz"), datetime.datetime(1, 1, 1, tzinfo=UTC)),
    (TypeRef("timestamptz"), datetime.datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
    (TypeRef("date"), datetime.date(9999, 12, 31)),
    (TypeRef("uuid"), uuid.UUID(int=2**128 - 1)),
    (TypeRef("identity"), Identity(IDENT)),
    (TypeRef("jsonb"), {"a": [1, 2.5, None, "x"], "b": {"c": False}}),
    (TypeRef("jsonb"), [1, "two"]),
    (TypeRef("text", nullable=True), None),
    (TypeRef("int8", array=True), [1, -(2**63), 2**63 - 1]),
    (TypeRef("int2", array=True), [1, 2]),
    (TypeRef("float4", array=True), [1.5, -2.0]),
    (TypeRef("text", array=True), ["a", "b,c", 'd"e', "", "NULL"]),
    (TypeRef("text", array=True), []),
    (TypeRef("bool", array=True), [True, False]),
    (TypeRef("identity", array=True), [Identity(IDENT), Identity("0" * 64)]),
    (TypeRef("timestamptz", array=True), [datetime.datetime(2024, 1, 1, tzinfo=UTC)]),
    (TypeRef("uuid", array=True), [uuid.UUID(int=5)]),
    (TypeRef("numeric", array=True), [decimal.Decimal("1.5")]),
    (TypeRef("bytea", array=True), [b"\x00", b""]),
    (TypeRef("date", array=True, nullable=True), None),
]


def _ids(case: tuple[TypeRef, Any]) -> str:
    ref = case[0]
    return ref.name + ("[]" if ref.array else "") + ("?" if ref.nullable else "")


@pytest.mark.parametrize("case", DB_CASES, ids=[_ids(c) for c in DB_CASES])
def test_postgres_round_trip(db: psycopg.Connection[Any], case: tuple[TypeRef, Any]) -> None:
    ref, value = case
    assert _through_postgres(db, ref, value, EMPTY, {}) == value


def test_postgres_round_trip_of_records(db: psycopg.Connection[Any]) -> None:
    point = RECORDS["Point"]
    line = RECORDS["Line"](a=point(x=1, y=2), b=point(x=3, y=-4), label="diagonal")
    ref = TypeRef("jsonb", record="Line")
    assert _through_postgres(db, ref, line, MODULE, RECORDS) == line
    assert _through_postgres(db, TypeRef("jsonb", record="Line"), line, MODULE, None) == (
        to_json(line)
    )


def test_identity_column_refuses_other_text(db: psycopg.Connection[Any]) -> None:
    table = _table(TypeRef("identity"))
    for statement in schema.create_statements(ModuleDef(tables=(table,))):
        db.execute(statement)
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("INSERT INTO t (v) VALUES (%s)", [IDENT.upper()])


def _table(ref: TypeRef) -> TableDef:
    columns = (ColumnDef("id", TypeRef("int8"), auto_inc=True), ColumnDef("v", ref))
    return TableDef("t", "T", columns, ("id",))


def _through_postgres(
    db: psycopg.Connection[Any],
    ref: TypeRef,
    value: Any,
    module: ModuleDef,
    records: dict[str, type] | None,
) -> Any:
    db.execute("DROP TABLE IF EXISTS t")
    for statement in schema.create_statements(
        ModuleDef(tables=(_table(ref),), records=module.records)
    ):
        db.execute(statement)
    query = sql.SQL("INSERT INTO t (v) VALUES (%s) RETURNING v")
    stored = db.execute(query, [to_db(value, ref)]).fetchone()
    assert stored is not None
    again = db.execute("SELECT v FROM t").fetchone()
    assert again is not None and again == stored
    return from_db(stored[0], ref, records)


def test_base64_is_standard() -> None:
    assert to_json(b"\xfb\xff") == base64.b64encode(b"\xfb\xff").decode()
    assert check("+/8=", "bytea") == b"\xfb\xff"


@dataclasses.dataclass
class T:
    """The row class of the table ``t`` of :func:`_table`."""

    id: int = 0
    v: Any = None


def _made(db: psycopg.Connection[Any], ref: TypeRef) -> TableDef:
    """The table ``t`` (``id``, ``v`` of type ``ref``) made anew in ``db``."""
    table = _table(ref)
    db.execute("DROP TABLE IF EXISTS t")
    for statement in schema.create_statements(ModuleDef(tables=(table,))):
        db.execute(statement)
    return table


@pytest.mark.parametrize("case", DB_CASES, ids=[_ids(c) for c in DB_CASES])
def test_table_handle_round_trip(db: psycopg.Connection[Any], case: tuple[TypeRef, Any]) -> None:
    """Through ``ctx.db``'s handles (prepared statements run through libpq directly, their
    parameter types inferred by Postgres): insert, find, update, filter, delete."""
    ref, value = case
    table = _made(db, ref)
    handle = TableAccess(db, table, T, {})
    stored = handle.insert(T(v=value))
    assert stored.v == value and stored.id > 0
    found = handle.find(stored.id)
    assert found is not None and found.v == value
    assert handle.update(T(id=stored.id, v=value)).v == value
    if not ref.name.startswith("float"):  # (equality of floats is not the point here)
        assert [row.id for row in handle.filter_by(v=value)] == [stored.id]
    assert handle.count() == 1 and [row.v for row in handle] == [value]
    assert handle.delete(stored) is True and handle.find(stored.id) is None
    assert handle.delete(stored) is False


def test_a_module_that_deallocates_the_prepared_statements(db: psycopg.Connection[Any]) -> None:
    """``DEALLOCATE`` through ``ctx.sql`` (told: prepared anew at once), or some other way
    (a DO block: the statement fails, and is prepared anew for the next call)."""
    table = _made(db, TypeRef("text"))
    prepared = Prepared(db)
    tables = Tables({"t": TableAccess(db, table, T, {}, prepared)}, prepared)
    row = tables.t.insert(T(v="kept"))
    ctx = Context(
        sender=Identity("0" * 64),
        connection_id=None,
        sender_auth=None,
        timestamp=datetime.datetime.now(datetime.UTC),
        rng=random.Random(1),
        db=tables,
        log=logging.getLogger("test"),
        _conn=db,
    )
    ctx.sql("DEALLOCATE ALL")
    assert tables.t.find(row.id) == row
    db.execute("DO $$ BEGIN DEALLOCATE ALL; END $$")
    with pytest.raises(psycopg.errors.InvalidSqlStatementName):
        tables.t.find(row.id)
    assert tables.t.find(row.id) == row


def test_psycopg_prepares_nothing_on_a_workers_connection(
    db: psycopg.Connection[Any], pg_cluster: EmbeddedPostgres
) -> None:
    """psycopg answers a ROLLBACK (or DROP, ALTER…) with ``DEALLOCATE ALL`` once it has
    prepared statements of its own, which dropped the handles' too (a call after a failed
    one failed with "prepared statement does not exist"): a worker's connection lets
    psycopg prepare nothing."""
    table = _made(db, TypeRef("text"))
    with connect(pg_cluster.url(db.info.dbname)) as conn:
        handle = TableAccess(conn, table, T, {})
        row = handle.insert(T(v="one"))
        assert handle.find(row.id) == row  # prepared now
        for _ in range(10):  # often enough for psycopg to prepare it, if it would
            conn.execute("SELECT v FROM t WHERE id = %s", [row.id])
        conn.execute("BEGIN")
        conn.execute("ROLLBACK")
        conn.execute("SELECT 1")  # psycopg's maintenance would run here
        assert handle.find(row.id) == row
