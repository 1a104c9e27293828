"""Evaluation: SQL's three-valued logic, NULLs in IN/BETWEEN/IS DISTINCT FROM, NaN,
string order, and LIKE/ILIKE corner cases, each against the expected SQL result."""

from __future__ import annotations

import itertools
import operator
from datetime import date, datetime
from decimal import Decimal

import pytest

from millpond.engine.predicates import NAN

from .helpers import bound, evaluate, row

T, F, N = True, False, None
TRUTH = [T, F, N]

AND = {
    (T, T): T, (T, F): F, (T, N): N,
    (F, T): F, (F, F): F, (F, N): F,
    (N, T): N, (N, F): F, (N, N): N,
}  # fmt: skip
OR = {
    (T, T): T, (T, F): T, (T, N): T,
    (F, T): T, (F, F): F, (F, N): N,
    (N, T): T, (N, F): N, (N, N): N,
}  # fmt: skip
NOT = {T: F, F: T, N: N}


@pytest.mark.parametrize(("x", "y"), list(itertools.product(TRUTH, TRUTH)))
def test_and_or_truth_tables(x: bool | None, y: bool | None) -> None:
    assert evaluate("x AND y", x=x, y=y) is AND[x, y]
    assert evaluate("x OR y", x=x, y=y) is OR[x, y]
    assert evaluate("x AND y AND b", x=x, y=y, b=True) is AND[x, y]
    assert evaluate("x OR y OR b", x=x, y=y, b=False) is OR[x, y]
    assert evaluate("NOT (x AND y)", x=x, y=y) is NOT[AND[x, y]]
    assert evaluate("x = y", x=x, y=y) is (None if N in (x, y) else x == y)
    assert evaluate("x IS DISTINCT FROM y", x=x, y=y) is (x is not y)
    assert evaluate("x IS NOT DISTINCT FROM y", x=x, y=y) is (x is y)


@pytest.mark.parametrize("x", TRUTH)
def test_not_and_is_tests(x: bool | None) -> None:
    assert evaluate("NOT x", x=x) is NOT[x]
    assert evaluate("NOT NOT x", x=x) is x
    assert evaluate("x IS TRUE", x=x) is (x is T)
    assert evaluate("x IS NOT TRUE", x=x) is (x is not T)
    assert evaluate("x IS FALSE", x=x) is (x is F)
    assert evaluate("x IS NOT FALSE", x=x) is (x is not F)
    assert evaluate("x IS UNKNOWN", x=x) is (x is N)
    assert evaluate("x IS NOT UNKNOWN", x=x) is (x is not N)
    assert evaluate("x IS NULL", x=x) is (x is N)
    assert evaluate("x IS NOT NULL", x=x) is (x is not N)
    assert bound("x").matches(row(x=x)) is (x is T)
    assert bound("NOT x").matches(row(x=x)) is (x is F)


def test_constants() -> None:
    assert evaluate("TRUE") is T
    assert evaluate("NULL") is N
    assert evaluate("NULL AND FALSE") is F
    assert evaluate("NULL OR TRUE") is T
    assert evaluate("i = NULL", i=1) is N
    assert evaluate("i = NULL OR i = 1", i=1) is T
    assert evaluate("NULL IS NULL") is T
    assert evaluate("1 = 1 AND x", x=N) is N
    assert evaluate("1 = 2 OR x", x=T) is T
    assert evaluate("(1 < 2) = TRUE") is T
    assert bound("NULL").matches(row()) is False


@pytest.mark.parametrize(
    ("where", "i", "expected"),
    [
        ("i = 1", None, N),
        ("i <> 1", None, N),
        ("i IN (1, 2)", 1, T),
        ("i IN (1, 2)", 3, F),
        ("i IN (1, 2)", None, N),
        ("i IN (1, NULL)", 1, T),
        ("i IN (1, NULL)", 2, N),
        ("i NOT IN (1, NULL)", 2, N),
        ("i NOT IN (1, NULL)", 1, F),
        ("i NOT IN (1, 2)", 3, T),
        ("i IN (NULL)", 1, N),
        ("i IN (s, 5)", 5, T),
        ("i BETWEEN 1 AND 3", 2, T),
        ("i BETWEEN 1 AND 3", 3, T),
        ("i BETWEEN 3 AND 1", 2, F),
        ("i BETWEEN SYMMETRIC 3 AND 1", 2, T),
        ("i NOT BETWEEN 1 AND 3", 4, T),
        ("i BETWEEN NULL AND 3", 4, F),
        ("i BETWEEN NULL AND 3", 2, N),
        ("i BETWEEN 1 AND NULL", 0, F),
        ("i NOT BETWEEN 1 AND NULL", 0, T),
        ("i BETWEEN 1 AND 3", None, N),
        ("i IS DISTINCT FROM 1", None, T),
        ("i IS DISTINCT FROM NULL", None, F),
        ("i IS NOT DISTINCT FROM 1", 1, T),
        ("i IS NOT DISTINCT FROM NULL", 1, F),
        ("(i = 1) IS NULL", None, T),
        ("(i = 1) IS NOT TRUE", None, T),
        ("(i > 1) = (i > 2)", 3, T),
        ("(i > 1) < (i > 0)", 1, T),
    ],
)
def test_nulls_in_comparisons(where: str, i: int | None, expected: bool | None) -> None:
    assert evaluate(where, i=i, s=5) is expected


def test_nan_equals_itself_and_is_greater_than_everything() -> None:
    nan, inf = float("nan"), float("inf")
    assert evaluate("f = 'NaN'", f=nan) is T
    assert evaluate("f <> 'NaN'", f=1.0) is T
    assert evaluate("f > 'Infinity'", f=nan) is T
    assert evaluate("f < 'NaN'", f=inf) is T
    assert evaluate("f >= 'NaN'", f=nan) is T
    assert evaluate("f < 'NaN'", f=nan) is F
    assert evaluate("f = r", f=nan, r=nan) is T
    assert evaluate("f IN ('NaN', 1)", f=nan) is T
    assert evaluate("f BETWEEN 0 AND 'NaN'", f=nan) is T
    assert evaluate("n = 'NaN'", n=Decimal("NaN")) is T
    assert evaluate("n > 1e300", n=Decimal("NaN")) is T
    assert evaluate("n < 1", n=Decimal("NaN")) is F
    assert evaluate("n = f", n=Decimal("NaN"), f=nan) is T
    assert evaluate("n > i", n=Decimal("NaN"), i=5) is T
    assert evaluate("f = -0.0", f=0.0) is T
    same = NAN
    assert same == NAN and same <= NAN and not same > NAN and NAN > 1e308 and not NAN < 1
    assert operator.lt(5, NAN) and operator.lt(Decimal(5), NAN) and not operator.eq(5.0, NAN)


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [
        ("A", "a"),
        ("Z", "a"),
        ("a", "b"),
        ("", "a"),
        ("a", "a "),
        ("z", "é"),
        ("É", "é"),
        ("é", "😀"),
        ("ab", "b"),
    ],
)
def test_strings_compare_by_code_point(smaller: str, larger: str) -> None:
    """Postgres' C collation: byte order of UTF-8, which is code-point order."""
    assert evaluate("t < v", t=smaller, v=larger) is T
    assert evaluate("t > v", t=larger, v=smaller) is T


LIKES = [
    # value, pattern, escape clause, LIKE result, ILIKE result
    ("abc", "abc", "", T, T),
    ("abc", "ABC", "", F, T),
    ("abc", "a%", "", T, T),
    ("abc", "%c", "", T, T),
    ("abc", "%b%", "", T, T),
    ("abc", "%", "", T, T),
    ("", "%", "", T, T),
    ("", "", "", T, T),
    ("", "_", "", F, F),
    ("abc", "a_c", "", T, T),
    ("abc", "a__", "", T, T),
    ("abc", "a_", "", F, F),
    ("abc", "___", "", T, T),
    ("a\nc", "a_c", "", T, T),
    ("a\nc", "a%", "", T, T),
    ("éa", "_a", "", T, T),
    ("😀", "_", "", T, T),
    ("É", "é", "", F, F),  # ILIKE folds ASCII letters only (C collation)
    ("ß", "SS", "", F, F),
    ("a%c", "a\\%c", "", T, T),
    ("abc", "a\\%c", "", F, F),
    ("a_c", "a\\_c", "", T, T),
    ("abc", "a\\_c", "", F, F),
    ("a\\c", "a\\\\c", "", T, T),
    ("abc", "\\a\\b\\c", "", T, T),
    ("a%c", "a!%c", " ESCAPE '!'", T, T),
    ("a\\c", "a\\c", " ESCAPE '!'", T, T),
    ("a!c", "a!!c", " ESCAPE '!'", T, T),
    ("a\\c", "a\\c", " ESCAPE ''", T, T),
    ("a%c", "a%", " ESCAPE ''", T, T),
    ("a%", "aa%", " ESCAPE 'a'", T, T),
    ("A%", "aa%", " ESCAPE 'a'", F, T),
    ("a_", "Aa_", " ESCAPE 'A'", T, T),
    ("ab ", "ab", "", F, F),
    ("x.*y", "x.*y", "", T, T),
    ("a(b", "a(%", "", T, T),
    ("abab", "%ab%ab%", "", T, T),
    ("aXb", "a%%b", "", T, T),
]


@pytest.mark.parametrize(("value", "pattern", "escape", "like", "ilike"), LIKES)
def test_like(value: str, pattern: str, escape: str, like: bool, ilike: bool) -> None:
    literal = "'" + pattern.replace("'", "''") + "'"
    assert evaluate(f"t LIKE {literal}{escape}", t=value) is like
    assert evaluate(f"t NOT LIKE {literal}{escape}", t=value) is (not like)
    assert evaluate(f"t ILIKE {literal}{escape}", t=value) is ilike
    assert evaluate(f"t NOT ILIKE {literal}{escape}", t=value) is (not ilike)


def test_like_with_nulls_and_char() -> None:
    assert evaluate("t LIKE 'a%'") is N
    assert evaluate("t LIKE NULL", t="a") is N
    assert evaluate("t LIKE 'a' ESCAPE NULL", t="a") is N
    assert evaluate("'abc' LIKE 'a%'") is T
    assert evaluate("c LIKE 'ab'", c="ab ") is F  # char(n) keeps its padding for LIKE
    assert evaluate("c LIKE 'ab%'", c="ab ") is T
    assert evaluate("v LIKE 'a%'", v="ab") is T


def test_dates_and_times() -> None:
    assert evaluate("d < '2024-01-02'", d=date(2024, 1, 1)) is T
    assert evaluate("d BETWEEN '2024-01-01' AND '2024-01-31'", d=date(2024, 1, 31)) is T
    assert evaluate("ts >= d", ts=datetime(2024, 1, 1), d=date(2024, 1, 1)) is T
    assert evaluate("ts > d", ts=datetime(2024, 1, 1), d=date(2024, 1, 1)) is F


def test_the_predicate_is_compiled_once() -> None:
    """Evaluation runs closures made at bind time: the AST is not consulted per row."""
    b = bound("i = 1 AND (t LIKE 'a%' OR d IS NULL)")
    object.__setattr__(b, "query", None)
    assert b.matches(row(i=1, t="ab"))
