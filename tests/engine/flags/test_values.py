"""Trait comparisons: numbers compare as numbers (also when written as strings), everything
else as text; empty values; the comparator with a fixed right side (what compiled trait
conditions use) agrees with the general one; and through a compiled trait condition."""

from __future__ import annotations

import operator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from millpond.engine._flags._values import comparator
from millpond.engine.flags import (
    CompanyContext,
    EvalContext,
    as_number,
    as_text,
    compare,
    compile_flag,
    is_empty,
)
from millpond.models.flags import Condition, Flag, Rule

PROPERTY = settings(max_examples=200, deadline=None, database=None)
OPS = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (10, 10),
        ("10", 10),
        ("-3", -3),
        ("+3", 3),
        ("007", 7),
        ("9.5", 9.5),
        ("1e3", 1000.0),
        ("1E-2", 0.01),
        (".5", 0.5),
        ("5.", 5.0),
        (2.5, 2.5),
        (Decimal("2.50"), 2.5),
        (Decimal("4"), 4),
        ("12345678901234567891", 12345678901234567891),
        (True, None),
        (False, None),
        ("", None),
        (" 5", None),
        ("5 ", None),
        ("1_000", None),
        ("٣", None),  # non-ASCII digit
        ("²", None),
        ("nan", None),
        ("inf", None),
        ("1e999", None),
        (float("nan"), None),
        (float("inf"), None),
        ("abc", None),
        ("-", None),
        ("1e", None),
        ("0x10", None),
        (None, None),
        ([1], None),
        ("9" * 5000, None),
    ],
)
def test_as_number(value: Any, expected: Any) -> None:
    got = as_number(value)
    assert got == expected and type(got) is type(expected)


def test_as_text() -> None:
    assert [as_text(v) for v in ("a", True, False, 1, 1.5, 1e20, None)] == [
        "a",
        "true",
        "false",
        "1",
        "1.5",
        "1e+20",
        "None",
    ]


def test_empty() -> None:
    assert is_empty(None) and is_empty("")
    assert not any(is_empty(v) for v in (0, False, " ", [], "0"))


@pytest.mark.parametrize(
    ("left", "op", "right", "expected"),
    [
        ("10", "gt", "9", True),  # numeric, not "10" < "9" as text
        (10, "gt", "9", True),
        ("10", "gt", 9, True),
        ("10", "eq", "10.0", True),
        ("1e1", "eq", 10, True),
        ("007", "eq", "7", True),
        ("9.5", "lt", 10, True),
        ("-3", "lt", "2", True),
        ("10", "lt", "9a", True),  # one side not a number: text, "1" < "9"
        ("b", "gt", "a", True),
        ("B", "lt", "a", True),  # by code point
        ("abc", "eq", "abc", True),
        ("abc", "ne", "abd", True),
        (True, "eq", "true", True),
        (False, "eq", "false", True),
        (True, "eq", True, True),
        ("True", "eq", True, False),  # case matters
        (True, "eq", 1, False),  # booleans are not numbers
        (1.5, "eq", "1.5", True),
        (0.1, "eq", "0.1", True),
        (12345678901234567891, "gt", "12345678901234567890", True),  # exact integers
        (None, "eq", None, True),
        (None, "eq", "", True),
        ("", "ne", "x", True),
        (None, "ne", "x", True),
        ("x", "ne", None, True),
        (None, "lt", 5, False),
        ("", "gte", "", False),
        (None, "is_empty", None, True),
        ("", "is_empty", None, True),
        (0, "is_empty", None, False),
        (0, "not_empty", None, True),
        ("x", "bogus", "x", False),
    ],
)
def test_compare(left: Any, op: str, right: Any, expected: bool) -> None:
    assert compare(op, left, right) is expected
    assert comparator(op, right)(left) is expected


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.integers(-1000, 1000).map(str),
    st.floats(-1e6, 1e6).map(repr),
    st.sampled_from(["", "10", "9", "9a", "true", "1e3", "-0", "007", ".5"]),
)


@PROPERTY
@given(scalars, st.sampled_from([*OPS, "is_empty", "not_empty"]), scalars)
def test_fixed_right_comparator_agrees_with_compare(left: Any, op: str, right: Any) -> None:
    assert comparator(op, right)(left) is compare(op, left, right)


@PROPERTY
@given(st.integers(-(10**30), 10**30), st.integers(-(10**30), 10**30), st.sampled_from(list(OPS)))
def test_integers_compare_as_numbers_in_any_form(a: int, b: int, op: str) -> None:
    expected = OPS[op](a, b)
    for left in (a, str(a)):
        for right in (b, str(b)):
            assert compare(op, left, right) is expected


@PROPERTY
@given(
    st.floats(-1e12, 1e12, allow_nan=False),
    st.floats(-1e12, 1e12, allow_nan=False),
    st.sampled_from(list(OPS)),
)
def test_floats_compare_as_numbers_in_any_form(a: float, b: float, op: str) -> None:
    expected = OPS[op](a, b)
    for left in (a, repr(a)):
        for right in (b, repr(b)):
            assert compare(op, left, right) is expected


non_numeric = st.text(min_size=1, max_size=8).filter(lambda s: as_number(s) is None)


@PROPERTY
@given(non_numeric, st.one_of(non_numeric, st.integers().map(str)), st.sampled_from(list(OPS)))
def test_otherwise_strings_compare_as_text(a: str, b: str, op: str) -> None:
    assert compare(op, a, b) is OPS[op](a, b)
    assert compare(op, b, a) is OPS[op](b, a)


@PROPERTY
@given(
    st.one_of(st.integers(-50, 50), st.integers(-50, 50).map(str), st.sampled_from(["x", ""])),
    st.sampled_from(list(OPS)),
    st.one_of(st.integers(-50, 50), st.integers(-50, 50).map(str), st.none()),
)
def test_trait_condition_uses_these_semantics(left: Any, op: str, right: Any) -> None:
    rule = Rule(
        id="r",
        value=True,
        conditions=[
            Condition(condition_type="trait", operator=op, trait_key="seats", trait_value=right)
        ],
    )
    compiled = compile_flag(Flag(key="f"), [rule])
    ctx = EvalContext(CompanyContext("c", traits={"seats": left}))
    assert compiled.evaluate(ctx).value is compare(op, left, right)
