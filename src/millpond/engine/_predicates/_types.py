"""Postgres types as the engine sees them: names, categories, implicit casts, how a
comparison's operator is resolved (and so which *domain* both sides are compared in),
how untyped literals are read (each type's input function), and how row values are
normalised into a domain so Python's operators give Postgres' answers.

Python values per type (psycopg's default loaders): int (int2/int4/int8), Decimal
(numeric), float (float4/float8), str (text/varchar/bpchar, uuid), bool, date,
datetime (naive for timestamp, aware for timestamptz); uuid may also be uuid.UUID.
"""

from __future__ import annotations

import functools
import math
import re
import struct
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any

Convert = Callable[[Any], Any]

INT_TYPES = frozenset({"int2", "int4", "int8"})
FLOAT_TYPES = frozenset({"float4", "float8"})
STRING_TYPES = frozenset({"text", "varchar", "bpchar"})
DATETIME_TYPES = ("date", "timestamp", "timestamptz")  # in implicit-cast order

CATEGORY = {
    **dict.fromkeys(["int2", "int4", "int8", "numeric", "float4", "float8"], "N"),
    **dict.fromkeys(STRING_TYPES, "S"),
    "bool": "B",
    **dict.fromkeys(DATETIME_TYPES, "D"),
    "uuid": "U",
}
COMPARABLE = frozenset(CATEGORY)
PREFERRED = frozenset({"float8", "text", "bool", "timestamptz"})
IMPLICIT_CASTS: dict[str, frozenset[str]] = {
    "int2": frozenset({"int4", "int8", "numeric", "float4", "float8"}),
    "int4": frozenset({"int8", "numeric", "float4", "float8"}),
    "int8": frozenset({"numeric", "float4", "float8"}),
    "numeric": frozenset({"float4", "float8"}),
    "float4": frozenset({"float8"}),
    "float8": frozenset(),
    "text": frozenset({"varchar", "bpchar"}),
    "varchar": frozenset({"text", "bpchar"}),
    "bpchar": frozenset({"text", "varchar"}),
    "bool": frozenset(),
    "date": frozenset({"timestamp", "timestamptz"}),
    "timestamp": frozenset({"timestamptz"}),
    "timestamptz": frozenset(),
    "uuid": frozenset(),
}

UNKNOWN = "unknown"
"""The type of a quoted literal (and of NULL) until context gives it one."""

_ALIASES = {
    "smallint": "int2",
    "integer": "int4",
    "int": "int4",
    "bigint": "int8",
    "smallserial": "int2",
    "serial": "int4",
    "bigserial": "int8",
    "serial2": "int2",
    "serial4": "int4",
    "serial8": "int8",
    "decimal": "numeric",
    "real": "float4",
    "double precision": "float8",
    "float": "float8",
    "character varying": "varchar",
    "character": "bpchar",
    "char": "bpchar",
    "boolean": "bool",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
}
_DISPLAY = {
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "varchar": "character varying",
    "bpchar": "character",
    "bool": "boolean",
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
}


@functools.lru_cache(maxsize=4096)
def canonical_type(name: str) -> str:
    """``integer`` → ``int4``, ``character varying(20)`` → ``varchar``, ``int4[]`` →
    ``int4[]``; unknown names come back lower-cased. Cached: it runs for every value a
    client cache or the hub indexes."""
    text = " ".join(name.strip().lower().split())
    if text.startswith("_") or text.endswith("]"):
        return text if text.endswith("]") else text[1:] + "[]"
    text = " ".join(re.sub(r"\([^)]*\)", " ", text).split())
    return _ALIASES.get(text, text)


def display(type_name: str) -> str:
    """How Postgres names a type in its messages."""
    return _DISPLAY.get(type_name, type_name)


def category(type_name: str) -> str:
    return CATEGORY.get(type_name, "X")


# -- operator resolution ---------------------------------------------------------------------


def comparison_domain(left: str, right: str) -> tuple[str, str, str] | None:
    """The domain ``left op right`` compares in, and each side's type once a quoted
    literal (``unknown``) has taken the other side's type; None if Postgres has no such
    operator. Domains: ``int``, ``numeric``, ``float``, ``text``, ``bpchar``, ``bool``,
    ``date``, ``timestamp``, ``timestamptz``, ``uuid``."""
    if left == UNKNOWN and right == UNKNOWN:
        left = right = "text"
    elif left == UNKNOWN:
        left = right
    elif right == UNKNOWN:
        right = left
    kind = category(left)
    if kind == "X" or kind != category(right):
        return None
    return _domain(kind, left, right), left, right


def _domain(kind: str, left: str, right: str) -> str:
    pair = {left, right}
    if kind == "N":
        if pair & FLOAT_TYPES:
            return "float"
        return "numeric" if "numeric" in pair else "int"
    if kind == "S":
        return "bpchar" if "bpchar" in pair and pair <= {"bpchar", "varchar"} else "text"
    if kind == "D":
        return max(pair, key=DATETIME_TYPES.index)
    return {"B": "bool", "U": "uuid"}[kind]


def select_common_type(types: list[str]) -> str | None:
    """Postgres' ``select_common_type`` + ``verify_common_type`` (as IN lists use them)."""
    current = types[0]
    for new in types[1:]:
        if new in (UNKNOWN, current):
            continue
        if current == UNKNOWN:
            current = new
        elif category(new) != category(current) or category(new) == "X":
            return None
        elif (
            current not in PREFERRED
            and new in IMPLICIT_CASTS[current]
            and current not in IMPLICIT_CASTS[new]
        ):
            current = new
    if current == UNKNOWN:
        current = "text"
    if current not in COMPARABLE:
        return None
    ok = all(t in (UNKNOWN, current) or current in IMPLICIT_CASTS[t] for t in types)
    return current if ok else None


# -- NaN and float4 ------------------------------------------------------------------------


class _NaN:
    """Postgres' NaN (float and numeric): equal to itself, greater than any number."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return other is self

    def __ne__(self, other: object) -> bool:
        return other is not self

    def __lt__(self, other: object) -> bool:
        return False

    def __le__(self, other: object) -> bool:
        return other is self

    def __gt__(self, other: object) -> bool:
        return other is not self

    def __ge__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0x7FF8

    def __repr__(self) -> str:
        return "NaN"


NAN = _NaN()

_F4 = struct.Struct("<f")
_U32 = struct.Struct("<I")
_F4_MIN_DENORMAL = _F4.unpack(_U32.pack(1))[0]


def _nan_key(value: Any) -> Any:
    return value if value == value else NAN


def _float4(value: float) -> float:
    """A float4 value read back as a double (psycopg parses float4's text as a double)."""
    result: float = _F4.unpack(_F4.pack(value))[0]
    return result


def _float4_key(value: float) -> Any:
    return _nan_key(_float4(value))


def _number_to_float_key(value: Any) -> Any:
    return _nan_key(float(value))


def _f4_toward(value: float, target: float) -> float:
    """The float4 next to ``value`` (a float4) in the direction of ``target``."""
    if value == 0.0:
        return math.copysign(_F4_MIN_DENORMAL, target)
    bits = _U32.unpack(_F4.pack(value))[0]
    bits += 1 if (value < target) == (value > 0) else -1
    result: float = _F4.unpack(_U32.pack(bits))[0]
    return result


def exact_float4(value: Decimal) -> float:
    """``value`` correctly rounded to float4 (as ``strtof`` does; a double in between
    would round twice). Raises ValueError when out of float4's range."""
    if not value.is_finite():
        return float(value)
    double = float(value)
    try:
        nearest = _float4(double)
    except OverflowError:
        raise ValueError("out of range for type real") from None
    if nearest != double and not math.isinf(nearest):
        other = _f4_toward(nearest, double)
        with localcontext() as ctx:
            ctx.prec = 1000
            midpoint = (Decimal(nearest) + Decimal(other)) / 2
            if abs(value - Decimal(other)) < abs(value - Decimal(nearest)) or (
                value == midpoint and _U32.unpack(_F4.pack(other))[0] % 2 == 0
            ):
                nearest = other
    if math.isinf(nearest) or (nearest == 0.0 and value != 0):
        raise ValueError("out of range for type real")
    return nearest


def exact_float8(value: int | Decimal) -> float:
    result = float(value)
    if isinstance(value, Decimal) and not value.is_finite():
        return result
    if math.isinf(result) or (result == 0.0 and value != 0):
        raise ValueError("out of range for type double precision")
    return result


# -- row values into a domain ----------------------------------------------------------------


def _rstrip(value: str) -> str:
    return value.rstrip(" ")


def _uuid_key(value: Any) -> str:
    return str(value).lower()


def _utc(value: datetime) -> datetime:
    """An aware datetime in UTC: Python ignores ``fold`` between datetimes sharing a
    tzinfo, so values in a zone with DST are compared as UTC instants."""
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _date_to_timestamp(value: date) -> datetime:
    return datetime(value.year, value.month, value.day)


def value_converter(type_name: str, domain: str, tz: tzinfo) -> Convert | None:
    """How a non-NULL value of ``type_name`` becomes comparable in ``domain`` (None:
    as it is). For a type in its own domain this is :func:`natural_key`'s function."""
    if domain == "float":
        if type_name == "float4":
            return _float4_key
        return _nan_key if type_name == "float8" else _number_to_float_key
    if domain == "numeric":
        return _nan_key if type_name == "numeric" else None
    if type_name == "bpchar" or domain == "bpchar":
        return _rstrip
    if domain == "uuid":
        return _uuid_key
    if domain == "timestamptz" and type_name == domain:
        return _utc
    if domain in ("timestamp", "timestamptz") and type_name != domain:
        return _datetime_converter(type_name, domain, tz)
    return None


def _datetime_converter(type_name: str, domain: str, tz: tzinfo) -> Convert:
    if domain == "timestamp":
        return _date_to_timestamp

    def local(value: date) -> datetime:
        if not isinstance(value, datetime):
            value = _date_to_timestamp(value)
        return to_instant(value, tz)

    return local


def to_instant(local: datetime, tz: tzinfo) -> datetime:
    """A wall-clock time in ``tz`` as an aware UTC datetime, resolving DST as Postgres
    does: a time that occurs twice takes the offset after the transition, a time that
    does not occur the offset before it."""
    first = local.replace(tzinfo=tz)
    second = local.replace(tzinfo=tz, fold=1)
    chosen = first
    if first.utcoffset() != second.utcoffset():
        exists = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == local
        chosen = second if exists else first
    return chosen.astimezone(UTC)


_NATURAL_DOMAIN = {
    **dict.fromkeys(INT_TYPES, "int"),
    "numeric": "numeric",
    **dict.fromkeys(FLOAT_TYPES, "float"),
    "text": "text",
    "varchar": "text",
    "bpchar": "bpchar",
    "bool": "bool",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "uuid": "uuid",
}


def natural_key(type_name: str) -> Convert | None:
    """The normalisation under which two values of ``type_name`` are ``=`` exactly when
    their keys are equal (and hash alike): what equality indexes store."""
    domain = _NATURAL_DOMAIN.get(type_name)
    return None if domain is None else value_converter(type_name, domain, UTC)


def value_key(type_name: str, value: Any) -> Any:
    """``value`` (of a column of ``type_name``) as an equality-index key."""
    convert = natural_key(canonical_type(type_name))
    return value if value is None or convert is None else convert(value)


# -- literals: input functions and implicit casts --------------------------------------------

_INT_RANGE = {"int2": 2**15, "int4": 2**31, "int8": 2**63}
_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)
_NUMERIC_TEXT = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*", re.ASCII)
_SPECIAL_NUMBER = re.compile(r"\s*(nan|[+-]?inf|[+-]?infinity)\s*", re.ASCII | re.IGNORECASE)
_SPACE = " \t\n\r\f\v"
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_DATE = r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})"
_TIME = r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,6}))?)?"
_ZONE = r"([zZ]|[uU][tT][cC]|[+-][0-9]{1,2}(?::[0-9]{2}(?::[0-9]{2})?)?|[+-][0-9]{4})"
_DATE_TEXT = re.compile(rf"\s*{_DATE}\s*", re.ASCII)
_TIMESTAMP_TEXT = re.compile(rf"\s*{_DATE}(?:(?:\s+|T){_TIME}\s*{_ZONE}?)?\s*", re.ASCII)
_UUID_TEXT = re.compile(r"[0-9a-fA-F]{4}(-?[0-9a-fA-F]{4}){7}", re.ASCII)


def _invalid(type_name: str, text: str, hint: str = "") -> ValueError:
    return ValueError(f'invalid input syntax for type {display(type_name)}: "{text}"{hint}')


def read_int(text: str, type_name: str) -> int:
    if not _INT_TEXT.fullmatch(text):
        raise _invalid(type_name, text)
    value = int(text)
    bound = _INT_RANGE[type_name]
    if not -bound <= value < bound:
        raise ValueError(f'value "{text}" is out of range for type {display(type_name)}')
    return value


def read_decimal(text: str, type_name: str) -> Decimal:
    if _NUMERIC_TEXT.fullmatch(text):
        return Decimal(text.strip())
    if _SPECIAL_NUMBER.fullmatch(text):
        return Decimal(text.strip().lower().replace("infinity", "inf"))
    raise _invalid(type_name, text)


def read_float(text: str, type_name: str) -> float:
    value = read_decimal(text, type_name)
    try:
        return exact_float4(value) if type_name == "float4" else exact_float8(value)
    except ValueError:
        raise ValueError(
            f'"{text.strip()}" is out of range for type {display(type_name)}'
        ) from None


def read_bool(text: str) -> bool:
    """Postgres' ``parse_bool``: any unique prefix of true/false/yes/no, on/off, 1/0."""
    word = text.strip(_SPACE).lower()
    if len(word) >= 1:
        for spellings, value in ((_TRUE, True), (_FALSE, False)):
            for spelling in spellings:
                if spelling.startswith(word) and (word[0] != "o" or len(word) >= 2):
                    return value
    raise _invalid("bool", text)


def read_date(text: str) -> date:
    match = _DATE_TEXT.fullmatch(text)
    try:
        if match:
            return date(*map(int, match.groups()))
    except ValueError:
        pass
    raise ValueError(f'cannot read "{text}" as a date (write YYYY-MM-DD)')


def read_timestamp(text: str, type_name: str, tz: tzinfo) -> datetime:
    """ISO 8601. A zone is ignored by ``timestamp`` (as in Postgres); ``timestamptz``
    reads a time without zone in ``tz`` (the session time zone)."""
    match = _TIMESTAMP_TEXT.fullmatch(text)
    value: datetime | None = None
    if match:
        value = _timestamp_parts(match.groups(), type_name, tz)
    if value is None:
        raise ValueError(
            f'cannot read "{text}" as a {display(type_name)} '
            "(write YYYY-MM-DD[ HH:MM[:SS[.ffffff]]][+HH[:MM]])"
        )
    return value


def _timestamp_parts(groups: tuple[Any, ...], type_name: str, tz: tzinfo) -> datetime | None:
    year, month, day, hour, minute, second, fraction, zone = groups
    try:
        day_value = date(int(year), int(month), int(day))
        clock = time(
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")),
        )
    except ValueError:
        return None
    value = datetime.combine(day_value, clock)
    if type_name == "timestamp":
        return value
    offset = tz if zone is None else _zone(zone)
    try:
        return None if offset is None else to_instant(value, offset)
    except OverflowError:
        return None


def _zone(text: str) -> tzinfo | None:
    if text.lower() in ("z", "utc"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:]
    if ":" in digits:
        parts = [int(p) for p in digits.split(":")]
    elif len(digits) == 4:
        parts = [int(digits[:2]), int(digits[2:])]
    else:
        parts = [int(digits)]
    hours, minutes, seconds = [*parts, 0, 0][:3]
    if hours > 15 or minutes > 59 or seconds > 59:
        return None
    return timezone(sign * timedelta(hours=hours, minutes=minutes, seconds=seconds))


def read_uuid(text: str) -> str:
    body = text[1:-1] if text.startswith("{") and text.endswith("}") else text
    if not _UUID_TEXT.fullmatch(body):
        raise _invalid("uuid", text)
    h = body.replace("-", "").lower()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def read_literal(text: str, type_name: str, tz: tzinfo) -> Any:
    """A quoted literal read as ``type_name`` (its input function)."""
    if type_name in INT_TYPES:
        return read_int(text, type_name)
    if type_name == "numeric":
        return read_decimal(text, type_name)
    if type_name in FLOAT_TYPES:
        return read_float(text, type_name)
    if type_name == "bool":
        return read_bool(text)
    if type_name == "date":
        return read_date(text)
    if type_name in ("timestamp", "timestamptz"):
        return read_timestamp(text, type_name, tz)
    if type_name == "uuid":
        return read_uuid(text)
    return text


def cast_constant(value: Any, source: str, target: str) -> Any:
    """An implicit cast of a typed constant (numbers only need one)."""
    if source == target or value is None:
        return value
    if target == "float4":
        return exact_float4(Decimal(value))
    if target == "float8":
        return exact_float8(value)
    if target == "numeric":
        return Decimal(value)
    return value


def constant_in_domain(value: Any, type_name: str, domain: str, tz: tzinfo) -> Any:
    """A constant of ``type_name`` normalised into ``domain``, with Postgres' range
    checks for the casts it implies."""
    if value is None:
        return None
    if domain == "float" and type_name not in FLOAT_TYPES:
        value = exact_float8(value)
    convert = value_converter(type_name, domain, tz)
    return value if convert is None else convert(value)


def session_timezone(name: str) -> tzinfo:
    """``UTC`` without tz data; other names through :mod:`zoneinfo`."""
    if name.upper() in ("UTC", "ETC/UTC", "Z", "GMT"):
        return UTC
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


# -- wire values (the SDK's JSON rows) ---------------------------------------------------------


def python_value(type_name: str, value: Any) -> Any:
    """A value as the realtime wire carries it (the HTTP query API's JSON encoding:
    numeric as a string, dates and timestamps ISO 8601, NaN/Infinity floats as strings)
    turned into the Python value the engine compares. Raises ValueError for values
    Python cannot hold (infinite or BC dates)."""
    if value is None:
        return None
    kind = canonical_type(type_name)
    if not isinstance(value, str) or kind in STRING_TYPES or kind in ("uuid", UNKNOWN):
        return float(value) if kind in FLOAT_TYPES and isinstance(value, int) else value
    try:
        if kind == "numeric":
            return Decimal(value)
        if kind in FLOAT_TYPES:
            return float(value)
        if kind == "date":
            return date.fromisoformat(value)
        if kind in ("timestamp", "timestamptz"):
            return datetime.fromisoformat(value)
    except (ValueError, InvalidOperation):
        raise ValueError(f"cannot represent {display(kind)} value {value!r} in Python") from None
    return value
