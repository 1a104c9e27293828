"""The subscription index: a changed row is checked only against the queries it can
match (counted, not timed), it finds exactly the matching queries, and semi-join
state follows the joined table's changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from millpond.engine.predicates import (
    BoundQuery,
    Expr,
    Query,
    SemiJoinState,
    SubscriptionIndex,
    UnsupportedQuery,
    bind,
    parse_query,
)

from .strategies import COLUMNS, PREDICATES, ROW

MSGS = {"id": "int8", "room_id": "int4", "author": "text", "body": "text", "score": "float8"}


def msgs(where: str, table: str = "msgs") -> BoundQuery:
    return bind(parse_query(f"SELECT * FROM {table} WHERE {where}"), MSGS)


def message(
    room_id: int | None, author: str = "ann", body: str = "hi", score: float = 0.0
) -> dict[str, Any]:
    return {"id": 1, "room_id": room_id, "author": author, "body": body, "score": score}


def test_ten_thousand_rooms_cost_what_ten_do() -> None:
    index = SubscriptionIndex()
    for room in range(10_000):
        index.add(f"client-{room}", msgs(f"room_id = {room}"))
    assert len(index) == 10_000
    assert index.matching("public.msgs", message(4242)) == {"client-4242"}
    assert index.evaluations == 1
    assert index.matching("public.msgs", message(99_999)) == set()
    assert index.evaluations == 1
    assert index.matching("public.msgs", message(None)) == set()
    assert index.evaluations == 1
    assert index.equality_columns("public.msgs") == {"room_id"}


def test_unindexable_queries_are_scanned_and_counted() -> None:
    index = SubscriptionIndex()
    for room in range(1000):
        index.add(room, msgs(f"room_id = {room} AND body LIKE 'x%'"))
    index.add("scan-1", msgs("score > 5"))
    index.add("scan-2", msgs("room_id = 1 OR author = 'bob'"))
    index.add("scan-3", msgs("room_id <> 7"))
    found = index.matching("public.msgs", message(1, body="xy", score=9.0))
    assert found == {1, "scan-1", "scan-2", "scan-3"}
    assert index.evaluations == 4


def test_in_lists_are_filed_under_each_value() -> None:
    index = SubscriptionIndex()
    index.add("both", msgs("room_id IN (1, 2)"))
    index.add("one", msgs("room_id = 2 AND author IN ('ann', 'bob')"))
    index.add("with-null", msgs("room_id IN (3, NULL)"))
    assert index.matching("public.msgs", message(1)) == {"both"}
    assert index.matching("public.msgs", message(2)) == {"both", "one"}
    assert index.matching("public.msgs", message(2, author="cy")) == {"both"}
    assert index.matching("public.msgs", message(3)) == {"with-null"}
    assert index.evaluations == 1 + 2 + 2 + 1


def test_the_most_selective_equality_is_used() -> None:
    index = SubscriptionIndex()
    index.add("q", msgs("author IN ('a', 'b', 'c') AND room_id = 5"))
    assert index.equality_columns("public.msgs") == {"room_id"}
    assert index.candidates("public.msgs", message(5, author="z")) == {"q"}
    assert index.candidates("public.msgs", message(6, author="a")) == set()


def test_equality_keys_normalise_like_postgres_compares() -> None:
    columns = {
        "n": "numeric",
        "f": "float8",
        "r": "real",
        "c": "char(4)",
        "u": "uuid",
        "tz": "timestamptz",
        "i": "int4",
    }
    index = SubscriptionIndex()
    for name, where in {
        "numeric": "n = 2",
        "int-vs-decimal": "i = 2.0",
        "nan": "f = 'NaN'",
        "real": "r = '0.1'",
        "char": "c = 'ab'",
        "uuid": "u = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
        "instant": "tz = '2024-01-01 12:00+02'",
        "null": "i = NULL",
    }.items():
        index.add(name, bind(parse_query(f"SELECT * FROM x WHERE {where}"), columns))
    base = dict.fromkeys(columns)

    def matching(**values: Any) -> set[Any]:
        return index.matching("public.x", {**base, **values})

    assert matching(n=Decimal("2.000")) == {"numeric"}
    assert matching(i=2) == {"int-vs-decimal"}
    assert matching(f=float("nan")) == {"nan"}
    assert matching(r=0.1) == {"real"}
    assert matching(c="ab  ") == {"char"}
    assert matching(u="a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11") == {"uuid"}
    assert matching(tz=datetime(2024, 1, 1, 10, 0, tzinfo=UTC)) == {"instant"}
    assert matching(tz=datetime(2024, 1, 1, 5, 0, tzinfo=timezone(timedelta(hours=-5)))) == {
        "instant"
    }
    assert index.evaluations == 8  # and "i = NULL" was never evaluated


def test_remove_add_and_tables() -> None:
    index = SubscriptionIndex()
    assert not index.has_table("public.msgs")
    index.add("a", msgs("room_id = 1"))
    index.add("b", msgs("room_id = 1 AND author = 'bob'"))
    index.add("c", msgs("body = 'x'", table="other"))
    assert index.tables() == {"public.msgs", "public.other"}
    assert "a" in index and index.bound("a").key() == "SELECT * FROM public.msgs WHERE room_id = 1"
    index.add("a", msgs("room_id = 2"))  # replaces
    assert index.matching("public.msgs", message(1, author="bob")) == {"b"}
    assert index.matching("public.msgs", message(2)) == {"a"}
    index.remove("a")
    index.remove("a")  # no-op
    assert index.matching("public.msgs", message(2)) == set()
    assert index.equality_columns("public.msgs") == {"room_id"}
    index.remove("b")
    assert not index.has_table("public.msgs")
    assert index.equality_columns("public.msgs") == frozenset()
    assert index.candidates("public.msgs", message(1)) == set()
    assert index.has_table("public.other") and len(index) == 1


def test_semi_joins_are_not_indexed_as_one_table() -> None:
    query = parse_query("SELECT m.* FROM msgs m JOIN rooms r ON m.room_id = r.id WHERE r.open")
    bound = bind(query, MSGS, join_columns={"id": "int4", "open": "bool"})
    with pytest.raises(ValueError, match="index its joined-table part"):
        SubscriptionIndex().add("j", bound)
    assert bound.join is not None
    index = SubscriptionIndex()
    index.add("j", bound.join.right)
    assert index.matching("public.rooms", {"id": 1, "open": True}) == {"j"}


def test_semi_join_state() -> None:
    query = parse_query("SELECT m.* FROM msgs m JOIN rooms r ON m.room_id = r.id WHERE r.open")
    bound = bind(query, MSGS, join_columns={"id": "int8", "open": "bool"})
    assert bound.join is not None
    state = SemiJoinState(bound.join)
    assert state.add({"id": 1, "open": True})
    assert not state.add({"id": 2, "open": False})
    assert state.matches(message(1)) and not state.matches(message(2))
    assert not state.matches(message(None))
    # a second open row for room 1: still covered once it closes
    assert state.right_changed(None, {"id": 1, "open": True}) == (frozenset(), frozenset())
    assert state.right_changed({"id": 1, "open": True}, {"id": 1, "open": False}) == (
        frozenset(),
        frozenset(),
    )
    assert state.matches(message(1))
    assert state.right_changed({"id": 1, "open": True}, None) == (frozenset(), frozenset({1}))
    assert not state.matches(message(1))
    assert state.right_changed({"id": 2, "open": False}, {"id": 2, "open": True}) == (
        frozenset({2}),
        frozenset(),
    )
    assert state.right_changed({"id": 2, "open": True}, {"id": 3, "open": True}) == (
        frozenset({3}),
        frozenset({2}),
    )
    assert state.covered() == {3}
    assert state.left_key(message(3)) == 3
    assert state.right_changed({"id": None, "open": True}, None) == (frozenset(), frozenset())


def test_semi_join_keys_compare_across_types() -> None:
    query = parse_query("SELECT a.* FROM a JOIN b ON a.k = b.k")
    bound = bind(query, {"k": "int4"}, join_columns={"k": "numeric"})
    assert bound.join is not None
    state = SemiJoinState(bound.join)
    state.add({"k": Decimal("2.0")})
    assert state.matches({"k": 2})
    with pytest.raises(UnsupportedQuery):
        bind(query, {"k": "int4"}, join_columns={"k": "text"})


@settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    predicates=st.lists(PREDICATES, min_size=1, max_size=12),
    rows=st.lists(ROW, min_size=1, max_size=5),
)
def test_the_index_finds_exactly_the_matching_queries(
    predicates: list[Expr], rows: list[dict[str, Any]]
) -> None:
    index = SubscriptionIndex()
    bound: dict[int, BoundQuery] = {}
    for number, predicate in enumerate(predicates):
        try:
            bound[number] = bind(Query("t", predicate), COLUMNS)
        except UnsupportedQuery:
            continue
        index.add(number, bound[number])
    for row in rows:
        expected = {number for number, query in bound.items() if query.matches(row)}
        assert index.matching("public.t", row) == expected
        assert expected <= index.candidates("public.t", row)
