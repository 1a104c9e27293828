"""Column types from data: classify each value, join the classes of a column.

Text values (CSV cells, JSON strings, spreadsheet text) are classified by their shape:

* ``bigint`` — an optional sign and digits, within 64 bits, without a leading zero
  (``007`` stays text: zip codes, ids);
* ``numeric`` — digits with a decimal point (exact), or an integer beyond 64 bits;
* ``double precision`` — exponent notation (``1.5e3``), ``NaN``, ``Infinity``;
* ``boolean`` — true/false, t/f, yes/no (any case);
* ``date`` — ``YYYY-MM-DD``; ``timestamp`` — ISO date and time (``T`` or space);
  ``timestamptz`` — the same with ``Z`` or a UTC offset;
* ``jsonb`` — a JSON object or array;
* ``text`` — anything else. The empty string is a missing value (NULL).

Typed values (JSON numbers, spreadsheet cells, SQLite and Parquet values) map to their
type directly. :func:`join` combines two classes into the narrowest type holding both
(bigint+numeric → numeric, date+timestamp → timestamp, …) and falls back to ``text``;
:func:`widen` is the next wider type, for a value Postgres refused.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from ..limits import DEFAULT_JSON_DEPTH, too_deep

BIGINT = "bigint"
NUMERIC = "numeric"
DOUBLE = "double precision"
BOOLEAN = "boolean"
DATE = "date"
TIMESTAMP = "timestamp"
TIMESTAMPTZ = "timestamptz"
JSONB = "jsonb"
TEXT = "text"
TIME = "time"
BYTEA = "bytea"

INFERRED_TYPES = (BIGINT, NUMERIC, DOUBLE, BOOLEAN, DATE, TIMESTAMP, TIMESTAMPTZ, JSONB, TEXT)

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+)")
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)[eE][+-]?\d+")
_SPECIAL_FLOATS = frozenset({"NaN", "Infinity", "-Infinity", "+Infinity"})
_BOOLS = frozenset({"true", "false", "t", "f", "yes", "no"})
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_TIMESTAMP = re.compile(
    r"(\d{4}-\d{2}-\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?"
)


def _valid_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def classify_text(value: str) -> str | None:
    """The class of one text value; None for the empty string (a missing value)."""
    if not value:
        return None
    text = value.strip()
    if not text:
        return TEXT
    first = text[0]
    if first.isdigit() or first in "+-.":
        if _INT.fullmatch(text):
            digits = text.lstrip("+-")
            if len(digits) > 1 and digits[0] == "0":
                return TEXT  # leading zeros carry meaning (codes, ids)
            return BIGINT if _INT64_MIN <= int(text) <= _INT64_MAX else NUMERIC
        if _DECIMAL.fullmatch(text):
            return NUMERIC
        if _FLOAT.fullmatch(text):
            return DOUBLE
        if text in _SPECIAL_FLOATS:
            return DOUBLE
        if len(text) >= 10 and text[4] == "-":
            if len(text) == 10:
                return DATE if _DATE.fullmatch(text) and _valid_date(text) else TEXT
            m = _TIMESTAMP.fullmatch(text)
            if m and _valid_date(m.group(1)) and _valid_clock(m):
                return TIMESTAMPTZ if m.group(5) else TIMESTAMP
        return TEXT
    if text in _SPECIAL_FLOATS:
        return DOUBLE
    if len(text) <= 5 and text.lower() in _BOOLS:
        return BOOLEAN
    if first in "{[" and text[-1] in "}]":
        if too_deep(text.encode(), DEFAULT_JSON_DEPTH):  # parsing it would recurse
            return TEXT
        try:
            json.loads(text)
        except ValueError:
            return TEXT
        return JSONB
    return TEXT


def _valid_clock(m: re.Match[str]) -> bool:
    hour, minute = int(m.group(2)), int(m.group(3))
    second = int(m.group(4) or 0)
    return hour <= 24 and minute <= 59 and second <= 60


def classify_value(value: Any, excel: bool = False) -> str | None:
    """The class of one typed value (text is classified by its shape). ``excel``: a
    spreadsheet's datetime at midnight is a date (spreadsheets store dates as datetimes)."""
    if value is None:
        return None
    if isinstance(value, str):
        return classify_text(value)
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return BIGINT if _INT64_MIN <= value <= _INT64_MAX else NUMERIC
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, Decimal):
        return NUMERIC
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return TIMESTAMPTZ
        if excel and value.time() == time(0, 0):
            return DATE
        return TIMESTAMP
    if isinstance(value, date):
        return DATE
    if isinstance(value, time):
        return TIME
    if isinstance(value, dict | list):
        return JSONB
    if isinstance(value, bytes | bytearray | memoryview):
        return BYTEA
    return TEXT


_NUMBERS = frozenset({BIGINT, NUMERIC, DOUBLE})
_TIMES = frozenset({DATE, TIMESTAMP, TIMESTAMPTZ})


def join(a: str | None, b: str | None, json_values: bool = False) -> str | None:
    """The narrowest type holding values of classes ``a`` and ``b`` (None: no value yet).
    ``json_values``: the values are JSON (a JSON file), so a column mixing objects with
    scalars is ``jsonb``."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    pair = {a, b}
    if pair <= _NUMBERS:
        return DOUBLE if DOUBLE in pair else NUMERIC
    if pair <= _TIMES:
        return TIMESTAMPTZ if TIMESTAMPTZ in pair else TIMESTAMP
    if json_values and JSONB in pair:
        return JSONB
    return TEXT


def infer_column(
    values: Iterable[Any],
    classify: Callable[[Any], str | None] = classify_value,
    json_values: bool = False,
) -> str:
    """The type of a column from sample values; ``text`` when there is no value at all."""
    kind: str | None = None
    for value in values:
        c = classify(value)
        if c is None or c == kind:
            continue
        kind = join(kind, c, json_values)
        if kind == TEXT:
            break
    return kind or TEXT


_WIDER = {
    BIGINT: NUMERIC,
    NUMERIC: TEXT,
    DOUBLE: TEXT,
    BOOLEAN: TEXT,
    DATE: TIMESTAMP,
    TIMESTAMP: TIMESTAMPTZ,
    TIMESTAMPTZ: TEXT,
    JSONB: TEXT,
    TIME: TEXT,
    BYTEA: TEXT,
}


def widen(current: str, refused_value: str | None) -> str | None:
    """The type to retry with after Postgres refused ``refused_value`` in a column of type
    ``current``; None if there is nothing wider (it already is text)."""
    if current == TEXT:
        return None
    if refused_value is not None:
        joined = join(current, classify_text(refused_value))
        if joined is not None and joined != current:
            return joined
    return _WIDER.get(current, TEXT)


# -- explicit column types ------------------------------------------------------------------

_ALIASES = {
    "bigint": BIGINT,
    "int8": BIGINT,
    "integer": "integer",
    "int": "integer",
    "int4": "integer",
    "smallint": "smallint",
    "int2": "smallint",
    "numeric": NUMERIC,
    "decimal": NUMERIC,
    "double precision": DOUBLE,
    "double": DOUBLE,
    "float8": DOUBLE,
    "float": DOUBLE,
    "real": "real",
    "float4": "real",
    "boolean": BOOLEAN,
    "bool": BOOLEAN,
    "date": DATE,
    "timestamp": TIMESTAMP,
    "timestamp without time zone": TIMESTAMP,
    "timestamptz": TIMESTAMPTZ,
    "timestamp with time zone": TIMESTAMPTZ,
    "time": TIME,
    "time without time zone": TIME,
    "interval": "interval",
    "jsonb": JSONB,
    "json": "json",
    "text": TEXT,
    "varchar": "varchar",
    "character varying": "varchar",
    "uuid": "uuid",
    "bytea": BYTEA,
}
_PARAMETRISED = re.compile(
    r"(numeric|decimal|varchar|character varying|char|character)\s*\(\s*(\d{1,4})"
    r"(?:\s*,\s*(\d{1,4}))?\s*\)"
)


def canonical_type(spelling: str) -> str | None:
    """The SQL of an explicit column type from the accepted list, or None if it is not
    one (types are composed into SQL, so only these are accepted)."""
    text = " ".join(spelling.strip().lower().split())
    if text in _ALIASES:
        return _ALIASES[text]
    m = _PARAMETRISED.fullmatch(text)
    if m:
        base = {"decimal": "numeric", "character varying": "varchar", "character": "char"}.get(
            m.group(1), m.group(1)
        )
        if base in ("varchar", "char") and m.group(3) is None and int(m.group(2)) > 0:
            return f"{base}({int(m.group(2))})"
        if base == "numeric" and 0 < int(m.group(2)) <= 1000:
            scale = int(m.group(3) or 0)
            if scale <= int(m.group(2)):
                return f"numeric({int(m.group(2))},{scale})"
    return None


def accepted_types() -> list[str]:
    return [*sorted(set(_ALIASES)), "numeric(p,s)", "varchar(n)", "char(n)"]


# -- rendering values as COPY text ---------------------------------------------------------


def render_text(value: Any, target: str, json_values: bool = False) -> str | None:
    """A typed value as the text Postgres parses into a column of type ``target``.
    ``json_values``: the value came from a JSON file, and a ``jsonb`` column takes its
    JSON (a string becomes a JSON string)."""
    if value is None:
        return None
    if target in (JSONB, "json") and json_values:
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, str):
        return value if value else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if target in (BIGINT, "integer", "smallint") and value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        if target == DATE:
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return str(value)
