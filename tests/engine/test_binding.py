"""Binding queries to column types: literals read the way Postgres reads them for the
column's type, mismatches refused with Postgres' message, and the BoundQuery API."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from millpond.engine.predicates import (
    EqualityConstraint,
    UnsupportedQuery,
    bind,
    canonical_type,
    parse_query,
    python_value,
    value_key,
)

from .helpers import bound, evaluate, row

NAN = float("nan")
INF = float("inf")


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("integer", "int4"),
        ("INT", "int4"),
        ("smallint", "int2"),
        ("bigint", "int8"),
        ("serial", "int4"),
        ("numeric(10,2)", "numeric"),
        ("decimal", "numeric"),
        ("real", "float4"),
        ("double precision", "float8"),
        ("character varying(20)", "varchar"),
        ("character(3)", "bpchar"),
        ("char", "bpchar"),
        ("boolean", "bool"),
        ("timestamp(3) without time zone", "timestamp"),
        ("timestamp with time zone", "timestamptz"),
        ("timestamptz", "timestamptz"),
        ("uuid", "uuid"),
        ("int4[]", "int4[]"),
        ("_int4", "int4[]"),
        ("integer[]", "integer[]"),
        ("jsonb", "jsonb"),
    ],
)
def test_type_names(name: str, canonical: str) -> None:
    assert canonical_type(name) == canonical


def test_a_referenced_column_must_exist() -> None:
    with pytest.raises(UnsupportedQuery, match='column "nope" does not exist in table t'):
        bound("nope = 1")


@pytest.mark.parametrize(
    ("where", "values", "expected"),
    [
        # integers: quoted literals read by the column type's input function
        ("i = '5'", {"i": 5}, True),
        ("i = ' -5 '", {"i": -5}, True),
        ("i = '+5'", {"i": 5}, True),
        ("s = '32767'", {"s": 32767}, True),
        ("big = '-9223372036854775808'", {"big": -(2**63)}, True),
        ("big = 9223372036854775807", {"big": 2**63 - 1}, True),
        ("i = 99999999999999999999", {"i": 5}, False),
        # int vs numeric compares exactly, not by truncating the literal
        ("i = 1.5", {"i": 1}, False),
        ("i < 1.5", {"i": 1}, True),
        ("i = 2.0", {"i": 2}, True),
        ("big = 9007199254740993", {"big": 9007199254740993}, True),
        ("big = 9007199254740992.0", {"big": 9007199254740993}, False),
        # numeric
        ("n = '1.50'", {"n": Decimal("1.5")}, True),
        ("n = 1", {"n": Decimal("1.00")}, True),
        ("n = 'NaN'", {"n": Decimal("NaN")}, True),
        ("n > 'Infinity'", {"n": Decimal("NaN")}, True),
        ("n = '-inf'", {"n": Decimal("-Infinity")}, True),
        ("n = ' 1.5e1 '", {"n": Decimal("15")}, True),
        # anything vs float compares as double precision
        ("f = 0.1", {"f": 0.1}, True),
        ("f = '0.1'", {"f": 0.1}, True),
        ("f = 'NaN'", {"f": NAN}, True),
        ("f = 'Infinity'", {"f": INF}, True),
        ("f < 'inf'", {"f": 1e308}, True),
        ("f = 9007199254740993", {"f": 9007199254740992.0}, True),
        ("f = '1e-320'", {"f": 1e-320}, True),
        # real: as stored (psycopg reads "0.1" as the double 0.1); real = 0.1 is false in
        # Postgres (compared as double precision), real = '0.1' is true (as real)
        ("r = 0.1", {"r": 0.1}, False),
        ("r = '0.1'", {"r": 0.1}, True),
        ("r IN (0.1)", {"r": 0.1}, False),
        ("r IN (0.1, 0.2)", {"r": 0.1}, True),  # two constants: their common type, real
        ("r IN (0.1, 0.1)", {"r": 0.1}, True),
        ("r = 16777217", {"r": 16777216.0}, False),
        ("r IN (16777217, 1)", {"r": 16777216.0}, True),
        ("r = '1e-45'", {"r": 1.401298464324817e-45}, True),
        ("r = f", {"r": 0.1, "f": 0.1}, False),
        # strings
        ("t = 'a'", {"t": "a"}, True),
        ("t = 'a '", {"t": "a"}, False),
        ("c = 'ab'", {"c": "ab "}, True),
        ("c = 'ab   '", {"c": "ab "}, True),
        ("c = t", {"c": "ab ", "t": "ab"}, True),
        ("c = t", {"c": "ab ", "t": "ab "}, False),
        ("c = v", {"c": "ab ", "v": "ab  "}, True),
        ("v = 'ab '", {"v": "ab"}, False),
        ("'a' = 'a'", {}, True),
        ("'a' < 'b'", {}, True),
        # booleans: any unique prefix of true/false/yes/no, on/off, 1/0
        ("b = 't'", {"b": True}, True),
        ("b = ' YES '", {"b": True}, True),
        ("b = 'of'", {"b": False}, True),
        ("b = '0'", {"b": False}, True),
        ("b", {"b": True}, True),
        ("'t'", {}, True),
        ("b = (i = 1)", {"b": True, "i": 1}, True),
        ("b > x", {"b": True, "x": False}, True),
        # dates and times
        ("d = '2024-1-2'", {"d": date(2024, 1, 2)}, True),
        ("d < ts", {"d": date(2024, 1, 2), "ts": datetime(2024, 1, 2, 0, 0, 1)}, True),
        ("d = ts", {"d": date(2024, 1, 2), "ts": datetime(2024, 1, 2)}, True),
        ("ts = '2024-01-02 03:04:05.5'", {"ts": datetime(2024, 1, 2, 3, 4, 5, 500000)}, True),
        ("ts = '2024-01-02T03:04+05'", {"ts": datetime(2024, 1, 2, 3, 4)}, True),  # zone ignored
        ("ts = '2024-01-02'", {"ts": datetime(2024, 1, 2)}, True),
        (
            "tz = '2024-01-02 03:04:05+05:30'",
            {"tz": datetime(2024, 1, 1, 21, 34, 5, tzinfo=UTC)},
            True,
        ),
        ("tz = '2024-01-02 03:04Z'", {"tz": datetime(2024, 1, 2, 3, 4, tzinfo=UTC)}, True),
        ("tz = '2024-01-02 03:04 UTC'", {"tz": datetime(2024, 1, 2, 3, 4, tzinfo=UTC)}, True),
        ("tz = '2024-01-02 03:04-0130'", {"tz": datetime(2024, 1, 2, 4, 34, tzinfo=UTC)}, True),
        ("tz = '2024-01-02'", {"tz": datetime(2024, 1, 2, tzinfo=UTC)}, True),
        ("tz = ts", {"tz": datetime(2024, 1, 2, tzinfo=UTC), "ts": datetime(2024, 1, 2)}, True),
        (
            "tz = d",
            {
                "tz": datetime(2024, 1, 2, tzinfo=timezone(timedelta(hours=1))),
                "d": date(2024, 1, 2),
            },
            False,
        ),
        # uuids: any input form, matched against str or UUID values
        (
            "u = '{A0EEBC99-9C0B4EF8-BB6D-6BB9BD380A11}'",
            {"u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
            True,
        ),
        (
            "u = 'a0eebc999c0b4ef8bb6d6bb9bd380a11'",
            {"u": uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")},
            True,
        ),
        (
            "u < 'b0000000-0000-0000-0000-000000000000'",
            {"u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
            True,
        ),
        # columns of other types can be tested for NULL
        ("j IS NULL AND arr IS NOT NULL AND iv IS NULL", {"arr": [1]}, True),
    ],
)
def test_literals_are_read_as_the_column_type(
    where: str, values: dict[str, Any], expected: bool
) -> None:
    assert evaluate(where, **values) is expected


def test_timestamptz_literals_without_offset_use_the_session_time_zone() -> None:
    value = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
    assert bound("tz = '2024-07-01 12:00'").matches(row(tz=value))
    assert bound("tz = '2024-07-01 17:30'", timezone="Asia/Kolkata").matches(row(tz=value))
    assert bound("tz = '2024-07-01 08:00'", timezone="America/New_York").matches(row(tz=value))
    # ambiguous local time (DST ends): the offset after the transition, as in Postgres
    autumn = datetime(2018, 11, 4, 6, 30, tzinfo=UTC)
    assert bound("tz = '2018-11-04 01:30'", timezone="America/New_York").matches(row(tz=autumn))
    # skipped local time (DST starts): the offset before the transition
    spring = datetime(2018, 3, 11, 7, 30, tzinfo=UTC)
    assert bound("tz = '2018-03-11 02:30'", timezone="America/New_York").matches(row(tz=spring))
    # dates and timestamps compared with timestamptz are local times too
    assert bound("d = tz", timezone="Asia/Kolkata").matches(
        row(d=date(2024, 7, 1), tz=datetime(2024, 6, 30, 18, 30, tzinfo=UTC))
    )


REFUSED = [
    ("t = 5", "operator does not exist: text = integer (in t = 5)"),
    ("t < 1.5", "operator does not exist: text < numeric"),
    ("5 = t", "operator does not exist: text = integer"),
    ("t = b", "operator does not exist: text = boolean"),
    ("b = 1", "operator does not exist: boolean = integer"),
    ("d = 5", "operator does not exist: date = integer"),
    ("d < u", "operator does not exist: date < uuid"),
    ("i = TRUE", "operator does not exist: integer = boolean"),
    ("t IN ('a', 5)", "operator does not exist: text = integer"),
    ("i = 'x'", "invalid input syntax for type integer: \"x\" (in i = 'x')"),
    ("i = '1.5'", 'invalid input syntax for type integer: "1.5"'),
    ("i = '1e3'", 'invalid input syntax for type integer: "1e3"'),
    ("i = '0x10'", 'invalid input syntax for type integer: "0x10"'),
    ("i IN (1, 'x')", 'invalid input syntax for type integer: "x"'),
    ("s = '40000'", 'value "40000" is out of range for type smallint'),
    ("i = '2147483648'", "out of range for type integer"),
    ("n = 'abc'", 'invalid input syntax for type numeric: "abc"'),
    ("f = 1e400", "out of range for type double precision"),
    ("f = '1e-400'", "out of range for type double precision"),
    ("r = '1e39'", "out of range for type real"),
    ("r = '1e-50'", "out of range for type real"),
    ("r IN (1e39, 1)", "out of range for type real"),
    ("b = 'maybe'", 'invalid input syntax for type boolean: "maybe"'),
    ("b = 'o'", 'invalid input syntax for type boolean: "o"'),
    ("d = 'today'", 'cannot read "today" as a date'),
    ("d = '2024-02-30'", 'cannot read "2024-02-30" as a date'),
    ("ts = '2024-01-01 24:00'", 'cannot read "2024-01-01 24:00" as a timestamp without time zone'),
    ("tz = 'now'", "as a timestamp with time zone"),
    ("tz = '2024-01-01 10:00 Europe/Paris'", "as a timestamp with time zone"),
    ("tz = '2024-01-01 10:00+16'", "as a timestamp with time zone"),
    ("ts = '2024-01-01 10:00:00.1234567'", "timestamp without time zone"),
    ("u = 'xyz'", 'invalid input syntax for type uuid: "xyz"'),
    ("u = 'urn:uuid:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "type uuid"),
    (
        "j = '{}'",
        'column "j" has type jsonb, which subscriptions cannot compare (only IS [NOT] NULL)',
    ),
    ("arr = '{1}'", 'column "arr" has type int4[]'),
    ("iv > '1 day'", 'column "iv" has type interval'),
    ("i", "argument of WHERE must be type boolean, not type integer (in i)"),
    ("5", "argument of WHERE must be type boolean, not type integer"),
    ("'maybe'", 'invalid input syntax for type boolean: "maybe"'),
    ("i = 1 AND t", "argument of AND must be type boolean, not type text"),
    ("b OR n", "argument of OR must be type boolean, not type numeric"),
    ("NOT t", "argument of NOT must be type boolean"),
    ("i IS TRUE", "argument of IS TRUE must be type boolean, not type integer"),
    ("t IS NOT UNKNOWN", "argument of IS UNKNOWN must be type boolean"),
    ("i LIKE '1%'", "LIKE needs a text value, not integer"),
    ("d ILIKE '2024%'", "operator does not exist: date ~~* unknown"),
    ("t LIKE v", "the LIKE pattern must be a string literal"),
    ("t LIKE 5", "the LIKE pattern must be a string literal"),
    ("t LIKE 'a' ESCAPE t", "the LIKE escape must be a string literal"),
    ("t LIKE 'a' ESCAPE 'ab'", "invalid escape string"),
    ("t LIKE 'a\\'", "LIKE pattern must not end with escape character"),
    ("t LIKE 'a!' ESCAPE '!'", "LIKE pattern must not end with escape character"),
    ("t IS DISTINCT FROM 5", "operator does not exist: text IS DISTINCT FROM integer"),
    ("i BETWEEN 'a' AND 5", 'invalid input syntax for type integer: "a"'),
]


@pytest.mark.parametrize(("where", "fragment"), REFUSED)
def test_refused_at_bind_time(where: str, fragment: str) -> None:
    with pytest.raises(UnsupportedQuery) as info:
        bound(where)
    assert fragment in info.value.message


def test_bound_query_api() -> None:
    query = parse_query("select * from MSGS where ROOM = 7 and body like 'x%' and 3 > prio")
    b = bind(query, {"room": "int4", "body": "text", "prio": "int2", "other": "jsonb"})
    assert b.table == "public.msgs"
    assert (b.schema, b.name) == ("public", "msgs")
    assert b.to_sql() == "SELECT * FROM msgs WHERE room = 7 AND body LIKE 'x%' AND prio < 3"
    assert b.key() == "SELECT * FROM public.msgs WHERE room = 7 AND body LIKE 'x%' AND prio < 3"
    assert b.where_sql() == "room = 7 AND body LIKE 'x%' AND prio < 3"
    assert b.referenced == {"room", "body", "prio"}
    assert b.columns["other"] == "jsonb"
    assert b.equalities == (EqualityConstraint("room", "int4", frozenset({7})),)
    assert b.matches({"room": 7, "body": "xy", "prio": 1, "other": None})
    assert b.evaluate({"room": 7, "body": None, "prio": 1, "other": None}) is None
    assert (
        b.key()
        == bind(
            parse_query("SELECT * FROM public.msgs WHERE room = 7 AND body LIKE 'x%' AND prio < 3"),
            b.columns,
        ).key()
    )


def test_other_schemas_are_written_out() -> None:
    b = bind(parse_query("SELECT * FROM app.t"), {"a": "int4"})
    assert b.table == "app.t"
    assert b.to_sql() == b.key() == "SELECT * FROM app.t"
    assert b.where_sql() is None
    assert b.matches({"a": None})
    other = bind(parse_query("SELECT * FROM t"), {"a": "int4"}, default_schema="app")
    assert other.key() == b.key()


def test_rows_must_hold_the_referenced_columns() -> None:
    with pytest.raises(KeyError):
        bound("i = 1").matches({})


def test_semi_join_binding() -> None:
    query = parse_query(
        "SELECT m.* FROM msgs m JOIN rooms r ON m.room = r.id WHERE r.owner = 'bob'"
    )
    with pytest.raises(UnsupportedQuery, match="needs that table's columns"):
        bind(query, {"room": "int4"})
    b = bind(query, {"room": "int4", "body": "text"}, join_columns={"id": "int8", "owner": "text"})
    assert b.table == "public.msgs"
    assert b.key() == (
        "SELECT a.* FROM public.msgs AS a JOIN public.rooms AS b ON a.room = b.id "
        "WHERE b.owner = 'bob'"
    )
    assert (
        b.to_sql()
        == "SELECT a.* FROM msgs AS a JOIN rooms AS b ON a.room = b.id WHERE b.owner = 'bob'"
    )
    assert b.join is not None
    assert b.join.right.table == "public.rooms"
    assert b.join.right.matches({"id": 1, "owner": "bob"})
    assert b.join.left_key({"room": 3, "body": "x"}) == b.join.right_key({"id": 3, "owner": "x"})
    with pytest.raises(TypeError):
        b.matches({"room": 3, "body": "x"})
    with pytest.raises(UnsupportedQuery, match="operator does not exist: integer = text"):
        bind(query, {"room": "int4"}, join_columns={"id": "text", "owner": "text"})
    with pytest.raises(UnsupportedQuery, match='column "owner" does not exist in table rooms'):
        bind(query, {"room": "int4"}, join_columns={"id": "int4"})
    with pytest.raises(UnsupportedQuery, match='column "room" does not exist in table msgs'):
        bind(query, {"body": "text"}, join_columns={"id": "int4", "owner": "text"})


@pytest.mark.parametrize(
    ("type_name", "wire", "value"),
    [
        ("numeric", "1.50", Decimal("1.50")),
        ("numeric", "NaN", Decimal("NaN")),
        ("float8", "NaN", NAN),
        ("float8", "-Infinity", -INF),
        ("float8", 1, 1.0),
        ("float4", 0.5, 0.5),
        ("int8", 12, 12),
        ("date", "2024-01-02", date(2024, 1, 2)),
        ("timestamp", "2024-01-02T03:04:05.5", datetime(2024, 1, 2, 3, 4, 5, 500000)),
        (
            "timestamptz",
            "2024-01-02T03:04:05+05:30",
            datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ),
        ("text", "2024-01-02", "2024-01-02"),
        ("uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ("bool", True, True),
        ("jsonb", {"a": 1}, {"a": 1}),
        ("int4", None, None),
    ],
)
def test_python_value_from_the_wire(type_name: str, wire: Any, value: Any) -> None:
    result = python_value(type_name, wire)
    assert type(result) is type(value)
    if isinstance(value, float | Decimal) and value != value:
        assert result != result  # NaN
    else:
        assert result == value


def test_python_value_refuses_what_python_cannot_hold() -> None:
    with pytest.raises(
        ValueError, match="cannot represent timestamp with time zone value 'infinity'"
    ):
        python_value("timestamptz", "infinity")


def test_value_key() -> None:
    assert value_key("character(3)", "ab ") == "ab"
    assert value_key("real", 0.1) == value_key("real", 0.10000000149011612)
    assert value_key("uuid", uuid.UUID(int=0)) == "00000000-0000-0000-0000-000000000000"
    assert value_key("double precision", NAN) == value_key("numeric", Decimal("NaN"))
    assert value_key("int4", None) is None
    assert value_key("jsonb", 5) == 5
