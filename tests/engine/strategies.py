"""Hypothesis strategies: rows of a table with one column of each supported type (NULLs
included), and random predicates over it, well-typed (``predicates``) or not
(``loose_predicates``), written as the engine's AST (whose ``to_sql()`` is what both the
engine and Postgres are given)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from millpond.engine.predicates import (
    And,
    Between,
    Column,
    Comparison,
    Expr,
    InList,
    IsBool,
    IsDistinct,
    IsNull,
    Like,
    Literal,
    Not,
    Or,
)

COLUMNS = {
    "i2": "int2",
    "i4": "int4",
    "i8": "int8",
    "n": "numeric",
    "f4": "float4",
    "f8": "float8",
    "t": "text",
    "v": "varchar",
    "c": "char(3)",
    "b": "bool",
    "d": "date",
    "ts": "timestamp",
    "tz": "timestamptz",
    "u": "uuid",
}
NAMES = list(COLUMNS)
CATEGORY = {
    **dict.fromkeys(["i2", "i4", "i8", "n", "f4", "f8"], "N"),
    **dict.fromkeys(["t", "v", "c"], "S"),
    "b": "B",
    **dict.fromkeys(["d", "ts", "tz"], "D"),
    "u": "U",
}
TEXT_COLUMNS = ["t", "v", "c"]
INT_RANGE = {"i2": 2**15, "i4": 2**31, "i8": 2**63}
ALPHABET = "aAbB _%\\'!éÉßİ😀"
BASE_DAY = date(2024, 3, 10)
BASE_TIME = datetime(2024, 3, 10, 12, 0)
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
UUIDS = [
    uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    uuid.UUID("00000000-0000-0000-0000-000000000000"),
    uuid.UUID("ffffffff-ffff-ffff-ffff-ffffffffffff"),
]

EDGES: dict[str, list[Any]] = {
    "i2": [-32768, -1, 0, 1, 2, 32767],
    "i4": [-(2**31), -1, 0, 1, 2, 2**31 - 1],
    "i8": [-(2**63), -1, 0, 1, 2, 2**53 + 1, 2**63 - 1],
    "n": [
        Decimal(x)
        for x in ["NaN", "Infinity", "-Infinity", "0", "-0.0", "0.1", "1.50", "2", "1e20"]
    ],
    "f4": [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 0.1, 1.5, 2.0, 16777216.0],
    "f8": [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 0.1, 1.5, 2.0, 5e-324, 1e300],
    "t": ["", "a", "A", "a ", "ab", "b", "%", "_", "\\", "é", "É", "ß", "😀", "a\nb"],
    "v": ["", "a", "ab", "B", "a%", "İ", "i"],
    "c": ["", "a", "a  ", " a", "ab", "abc", "É"],
    "b": [True, False],
    "d": [BASE_DAY, BASE_DAY + timedelta(days=1), date(1000, 1, 1), date(2999, 12, 31)],
    "ts": [
        BASE_TIME,
        BASE_TIME + timedelta(hours=2),
        datetime(2024, 3, 10),
        datetime(1999, 12, 31, 23, 59, 59, 999999),
    ],
    "tz": [
        BASE_TIME.replace(tzinfo=UTC),
        datetime(2024, 3, 10, tzinfo=UTC),
        datetime(2024, 3, 10, 17, 30, tzinfo=ZONES[1]),
        datetime(2024, 11, 3, 5, 30, tzinfo=UTC),
    ],
    "u": UUIDS,
}


# -- row values ----------------------------------------------------------------------------


def _nullable(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), values, values, values)


def _column_values(name: str) -> st.SearchStrategy[Any]:
    edges = st.sampled_from(EDGES[name])
    kind = COLUMNS[name]
    if name in INT_RANGE:
        bound = INT_RANGE[name]
        wide = st.integers(-bound, bound - 1)
        return st.one_of(edges, st.integers(-3, 3), wide)
    if kind == "numeric":
        return st.one_of(edges, st.integers(-3, 3).map(Decimal), st.decimals(-1000, 1000, places=2))
    if kind == "float4":
        return st.one_of(edges, st.integers(-3, 3).map(float), st.floats(width=32))
    if kind == "float8":
        return st.one_of(edges, st.integers(-3, 3).map(float), st.floats())
    if kind in ("text", "varchar"):
        return st.one_of(edges, st.text(ALPHABET, max_size=4))
    if kind == "char(3)":
        return st.one_of(edges, st.text(ALPHABET, max_size=3))
    if kind == "bool":
        return st.booleans()
    if kind == "date":
        return st.one_of(edges, st.integers(-3, 3).map(lambda k: BASE_DAY + timedelta(days=k)))
    if kind == "timestamp":
        near = st.integers(-600, 600).map(lambda m: BASE_TIME + timedelta(minutes=m))
        return st.one_of(edges, near, st.datetimes(datetime(1000, 1, 1), datetime(2999, 1, 1)))
    if kind == "timestamptz":
        near = st.integers(-600, 600).map(lambda m: BASE_TIME + timedelta(minutes=m))
        aware = st.builds(lambda t, z: t.replace(tzinfo=z), near, st.sampled_from(ZONES))
        wide = st.datetimes(
            datetime(1000, 1, 1), datetime(2999, 1, 1), timezones=st.sampled_from(ZONES)
        )
        return st.one_of(edges, aware, wide)
    return st.one_of(edges, st.uuids())


ROW = st.fixed_dictionaries({name: _nullable(_column_values(name)) for name in NAMES})
ROWS = st.lists(ROW, min_size=1, max_size=12)


# -- literals ---------------------------------------------------------------------------------


def _quoted_int(name: str) -> st.SearchStrategy[Literal]:
    bound = INT_RANGE[name]
    values = st.one_of(st.integers(-3, 3), st.integers(-bound, bound - 1))
    forms = st.sampled_from(["{}", " {} ", "{}"])
    return st.builds(lambda v, f: Literal.string(f.format(v)), values, forms)


def _decimal_text() -> st.SearchStrategy[str]:
    plain = st.decimals(-1000, 1000, places=2).map(str)
    specials = st.sampled_from(
        ["NaN", "nan", "Infinity", "-Infinity", "inf", "+inf", " 1.5 ", ".5", "2.", "1e2", "-0"]
    )
    return st.one_of(plain, specials, st.integers(-3, 3).map(str))


def _float_text(width: int) -> st.SearchStrategy[str]:
    floats = st.floats(width=width, allow_nan=False, allow_infinity=False).map(repr)
    extra = ["1e-45", "3.4e38", "1e-320", "0.1"] if width == 32 else ["1e-320", "1e308", "0.1"]
    return st.one_of(_decimal_text(), floats, st.sampled_from(extra))


def _numbers() -> st.SearchStrategy[Literal]:
    return st.one_of(
        st.integers(-3, 3).map(Literal.integer),
        st.integers(-(2**70), 2**70).map(Literal.integer),
        st.decimals(-1000, 1000, places=2).map(Literal.numeric),
        st.sampled_from(["0.1", "1.5", "2.0", "1e20", "16777217", "9007199254740993"]).map(
            lambda text: (
                Literal.numeric(Decimal(text))
                if "." in text or "e" in text
                else Literal.integer(int(text))
            )
        ),
    )


def _iso_date(d: date, style: int) -> str:
    if style == 1:
        return f"{d.year:04d}-{d.month}-{d.day}"
    if style == 2:
        return f" {d.isoformat()} "
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


def _iso_time(t: datetime, style: int) -> str:
    day = f"{t.year:04d}-{t.month:02d}-{t.day:02d}"
    if style == 0:
        return day
    clock = f"{t.hour:02d}:{t.minute:02d}"
    if style >= 2:
        clock += f":{t.second:02d}"
    if style == 3:
        clock += f".{t.microsecond:06d}".rstrip("0").rstrip(".")
    sep = "T" if t.minute % 2 else " "
    return f"{day}{sep}{clock}"


_OFFSETS = ["", "", "Z", "+00", "+05:30", "-08", "+0530", " UTC", "-03:00"]


def _dates() -> st.SearchStrategy[date]:
    return st.one_of(
        st.sampled_from(EDGES["d"]), st.integers(-3, 3).map(lambda k: BASE_DAY + timedelta(days=k))
    )


def _times() -> st.SearchStrategy[datetime]:
    near = st.integers(-600, 600).map(lambda m: BASE_TIME + timedelta(minutes=m))
    return st.one_of(st.sampled_from(EDGES["ts"]), near)


def _uuid_text(u: uuid.UUID, style: int) -> str:
    text = str(u)
    return [
        text,
        text.upper(),
        u.hex,
        "{" + text + "}",
        "-".join(u.hex[i : i + 4] for i in range(0, 32, 4)),
    ][style]


def literals(name: str) -> st.SearchStrategy[Literal]:
    """Literals Postgres accepts in a comparison with column ``name``."""
    kind = COLUMNS[name]
    if name in INT_RANGE:
        choices = st.one_of(_numbers(), _quoted_int(name))
    elif kind == "numeric":
        choices = st.one_of(_numbers(), _decimal_text().map(Literal.string))
    elif kind in ("float4", "float8"):
        choices = st.one_of(
            _numbers(), _float_text(32 if kind == "float4" else 64).map(Literal.string)
        )
    elif CATEGORY[name] == "S":
        choices = st.one_of(st.sampled_from(EDGES[name]), st.text(ALPHABET, max_size=4)).map(
            Literal.string
        )
    elif kind == "bool":
        spellings = st.sampled_from(["t", "TRUE", " yes ", "of", "1", "n", "off", "False", "on"])
        choices = st.one_of(st.booleans().map(Literal.boolean), spellings.map(Literal.string))
    elif kind == "date":
        choices = st.builds(
            lambda d, s: Literal.string(_iso_date(d, s)), _dates(), st.integers(0, 2)
        )
    elif kind in ("timestamp", "timestamptz"):
        choices = st.builds(
            lambda t, s, z: Literal.string(_iso_time(t, s) + (z if s else "")),
            _times(),
            st.integers(0, 3),
            st.sampled_from(_OFFSETS),
        )
    else:
        uuids = st.one_of(st.sampled_from(UUIDS), st.uuids())
        choices = st.builds(lambda u, s: Literal.string(_uuid_text(u, s)), uuids, st.integers(0, 4))
    return st.one_of(choices, choices, choices, st.just(Literal.null()))


# -- predicates ---------------------------------------------------------------------------------

OPS = st.sampled_from(["=", "<>", "<", "<=", ">", ">="])
_columns = st.sampled_from(NAMES)


def _same_category(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([other for other in NAMES if CATEGORY[other] == CATEGORY[name]])


def _operand(name: str) -> st.SearchStrategy[Expr]:
    """A literal for column ``name``, or a column it can be compared with."""
    return st.one_of(literals(name), literals(name), _same_category(name).map(Column))


@st.composite
def comparisons(draw: st.DrawFn) -> Expr:
    name = draw(_columns)
    other = draw(_operand(name))
    op = draw(OPS)
    if isinstance(other, Literal) and draw(st.booleans()):
        return Comparison(op, other, Column(name))
    return Comparison(op, Column(name), other)


@st.composite
def constant_comparisons(draw: st.DrawFn) -> Expr:
    """Two literals meant for the same column: typed as Postgres types constants."""
    name = draw(_columns)
    return Comparison(draw(OPS), draw(literals(name)), draw(literals(name)))


@st.composite
def in_lists(draw: st.DrawFn) -> Expr:
    name = draw(_columns)
    items = draw(st.lists(_operand(name), min_size=1, max_size=4))
    if draw(st.booleans()):
        items.append(items[0])  # one constant twice is typed like two constants
    return InList(Column(name), tuple(items), draw(st.booleans()))


@st.composite
def betweens(draw: st.DrawFn) -> Expr:
    name = draw(_columns)
    low, high = draw(_operand(name)), draw(_operand(name))
    return Between(Column(name), low, high, draw(st.booleans()), draw(st.booleans()))


@st.composite
def distincts(draw: st.DrawFn) -> Expr:
    name = draw(_columns)
    return IsDistinct(Column(name), draw(_operand(name)), draw(st.booleans()))


@st.composite
def like_patterns(draw: st.DrawFn) -> tuple[str, str | None]:
    """A LIKE pattern and its ESCAPE (None: the default backslash), never ending in a
    lone escape character."""
    escape = draw(st.sampled_from([None, None, "", "\\", "!", "a", "A"]))
    esc = "\\" if escape is None else escape
    pieces = draw(
        st.lists(
            st.one_of(st.sampled_from(["%", "_"]), st.sampled_from(list("aAbB é\\!%_É"))),
            max_size=5,
        )
    )
    out = []
    for piece in pieces:
        if piece in "%_" and (not esc or draw(st.booleans())):
            out.append(piece)  # a wildcard
        elif esc and (piece == esc or piece in "%_" or draw(st.integers(0, 4)) == 0):
            out.append(esc + piece)  # an escaped (literal) character
        else:
            out.append(piece)
    return "".join(out), escape


@st.composite
def likes(draw: st.DrawFn) -> Expr:
    name = draw(st.sampled_from(TEXT_COLUMNS))
    pattern, escape = draw(like_patterns())
    pattern_literal = draw(st.sampled_from([Literal.string(pattern)] * 9 + [Literal.null()]))
    escape_literal = None if escape is None else Literal.string(escape)
    return Like(
        Column(name), pattern_literal, draw(st.booleans()), draw(st.booleans()), escape_literal
    )


LEAVES: st.SearchStrategy[Expr] = st.one_of(
    comparisons(),
    comparisons(),
    in_lists(),
    betweens(),
    likes(),
    distincts(),
    constant_comparisons(),
    st.builds(IsNull, _columns.map(Column), st.booleans()),
    st.just(Column("b")),
    st.sampled_from([Literal.boolean(True), Literal.boolean(False), Literal.null()]),
)


def _combine(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        st.lists(children, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(children, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
        children.map(Not),
        st.builds(IsBool, children, st.sampled_from([True, False, None]), st.booleans()),
        st.builds(IsNull, children, st.booleans()),
        st.builds(Comparison, st.sampled_from(["=", "<>", "<"]), children, children),
    )


PREDICATES: st.SearchStrategy[Expr] = st.recursive(LEAVES, _combine, max_leaves=8)


# -- ill-typed predicates --------------------------------------------------------------------------

_ODD_STRINGS = [
    "x",
    "1e3",
    "1.5",
    " ",
    "",
    "2024-01-01 10:00",
    "today",
    "24:00",
    "0x10",
    "1_000",
    "o",
    "tru",
]


@st.composite
def loose_comparisons(draw: st.DrawFn) -> Expr:
    """A column against a literal meant for any column (or an odd string)."""
    name = draw(_columns)
    other = draw(
        st.one_of(
            _columns.flatmap(literals),
            st.sampled_from(_ODD_STRINGS).map(Literal.string),
            _columns.map(Column),
        )
    )
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return InList(Column(name), (other, draw(literals(draw(_columns)))), False)
    if kind == 1:
        return Like(Column(name), Literal.string("a%"), False, False, None)
    return Comparison(draw(OPS), Column(name), other)
