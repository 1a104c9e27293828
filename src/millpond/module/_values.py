"""Values of module types: JSON (calls, defaults, events) ↔ Python (reducers, rows) ↔
Postgres (psycopg parameters and results).

Conversions are strict: a value that does not fit its type is an :class:`ArgumentError`
naming where it is (``argument text: expected a string, got 3``), never coerced.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import decimal
import math
import re
import struct
import typing
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from psycopg.types.json import Jsonb
from psycopg.types.numeric import Float4, Float8, Int2, Int4, Int8

from ._def import ModuleDef, ParamDef, RecordDef, ReducerDef, TypeRef
from ._types import Identity, type_ref

MAX_JSON_DEPTH = 64
"""How deeply a ``jsonb`` value (or a record) may nest."""

_INT_BOUNDS = {"int2": 2**15, "int4": 2**31, "int8": 2**63}
_NUMERIC = re.compile(r"-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_UUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMERIC_MAX_INT_DIGITS = 131072  # Postgres numeric: digits before the point
_NUMERIC_MAX_SCALE = 16383  # and after it

RecordLookup = Callable[[str], RecordDef]


class ArgumentError(ValueError):
    """A value does not fit its type; ``where`` names it (``text``, ``p.x``, ``tags[3]``)."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"argument {where}: {problem}" if where else problem)


# -- JSON -> Python --------------------------------------------------------------------


def from_json(
    value: Any,
    ref: TypeRef,
    module: ModuleDef,
    records: Mapping[str, type] | None = None,
    where: str = "",
) -> Any:
    """The Python value of JSON ``value`` as type ``ref``, validated (records are
    instances of ``records[name]`` when given, else dicts)."""
    return _convert(value, ref, _module_lookup(module), records, where, 0)


def _module_lookup(module: ModuleDef) -> RecordLookup:
    def lookup(name: str) -> RecordDef:
        try:
            return module.record(name)
        except KeyError:
            raise ArgumentError("", f"unknown record type {name}") from None

    return lookup


def _convert(
    value: Any,
    ref: TypeRef,
    lookup: RecordLookup,
    records: Mapping[str, type] | None,
    where: str,
    depth: int,
) -> Any:
    if value is None:
        if ref.nullable:
            return None
        raise ArgumentError(where, "must not be null")
    if ref.array:
        if not isinstance(value, list):
            raise ArgumentError(where, f"expected a list, got {_show(value)}")
        item = TypeRef(ref.name, record=ref.record)
        return [
            _convert(v, item, lookup, records, f"{where}[{i}]", depth + 1)
            for i, v in enumerate(value)
        ]
    if ref.record is not None:
        return _record(value, lookup(ref.record), lookup, records, where, depth)
    return _scalar(value, ref.name, where, depth)


def _record(
    value: Any,
    definition: RecordDef,
    lookup: RecordLookup,
    records: Mapping[str, type] | None,
    where: str,
    depth: int,
) -> Any:
    if depth >= MAX_JSON_DEPTH:
        raise ArgumentError(where, f"nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(value, dict):
        raise ArgumentError(where, f"expected an object ({definition.name}), got {_show(value)}")
    known = {f.name for f in definition.fields}
    extra = sorted(k for k in value if k not in known)
    if extra:
        raise ArgumentError(where, f"unknown field {extra[0]!r} of {definition.name}")
    fields: dict[str, Any] = {}
    for f in definition.fields:
        inner = f"{where}.{f.name}" if where else f.name
        if f.name in value:
            raw = value[f.name]
        elif f.has_default:
            raw = f.default
        else:
            raise ArgumentError(inner, f"missing (a field of {definition.name})")
        fields[f.name] = _convert(raw, f.type, lookup, records, inner, depth + 1)
    cls = records.get(definition.name) if records is not None else None
    return cls(**fields) if cls is not None else fields


def _scalar(value: Any, name: str, where: str, depth: int) -> Any:
    if name in _INT_BOUNDS:
        return _int(value, name, where)
    if name in ("float4", "float8"):
        return _float(value, name, where)
    converter = _CONVERTERS.get(name)
    if converter is not None:
        return converter(value, where)
    if name == "jsonb":
        _check_json(value, where, depth)
        return value
    raise ArgumentError(where, f"unknown type {name}")


def _int(value: Any, name: str, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ArgumentError(where, f"expected an integer, got {_show(value)}")
    bound = _INT_BOUNDS[name]
    if not -bound <= value < bound:
        raise ArgumentError(where, f"{value} is out of range for {name}")
    return value


def _float(value: Any, name: str, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ArgumentError(where, f"expected a number, got {_show(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ArgumentError(where, f"expected a finite number, got {_show(value)}")
    if name == "float4":
        try:
            return float4(number)
        except OverflowError:
            raise ArgumentError(where, f"{value} is out of range for float4") from None
    return number


def float4(number: float) -> float:
    """``number`` as Postgres stores it in a ``float4`` and returns it: rounded to single
    precision, then the shortest decimal that rounds to the same (0.1 stays 0.1);
    ``OverflowError`` when it does not fit (too large, or so small it would be 0)."""
    (rounded,) = struct.unpack("f", struct.pack("f", number))
    if math.isinf(rounded) or (rounded == 0.0 and number != 0.0):
        raise OverflowError(number)
    for digits in range(1, 10):
        shortest = float(f"{rounded:.{digits}g}")
        if struct.unpack("f", struct.pack("f", shortest))[0] == rounded:
            return shortest
    return float(rounded)


def _numeric(value: Any, where: str) -> decimal.Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ArgumentError(where, f"expected a number or a decimal string, got {_show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ArgumentError(where, f"expected a finite number, got {_show(value)}")
    if isinstance(value, str) and not _NUMERIC.fullmatch(value):
        raise ArgumentError(where, f"expected a decimal number, got {_show(value)}")
    number = decimal.Decimal(str(value) if isinstance(value, float) else value)
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    if number.adjusted() >= _NUMERIC_MAX_INT_DIGITS or -exponent > _NUMERIC_MAX_SCALE:
        raise ArgumentError(where, f"{_show(value)} is out of range for numeric")
    return number


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ArgumentError(where, f"expected a string, got {_show(value)}")
    _check_text(value, where)
    return value


def _check_text(value: str, where: str) -> None:
    if "\x00" in value:
        raise ArgumentError(where, "text must not contain NUL (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ArgumentError(where, "text must be valid Unicode (no lone surrogates)") from None


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ArgumentError(where, f"expected true or false, got {_show(value)}")
    return value


def _bytea(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise ArgumentError(where, f"expected a base64 string, got {_show(value)}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ArgumentError(where, f"expected base64, got {_show(value)}") from None


def _timestamptz(value: Any, where: str) -> datetime.datetime:
    problem = f"expected an ISO 8601 time with an offset or Z, got {_show(value)}"
    if not isinstance(value, str) or not _DATE.match(value):
        raise ArgumentError(where, problem)
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ArgumentError(where, problem) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ArgumentError(where, problem)
    return parsed


def _date(value: Any, where: str) -> datetime.date:
    problem = f"expected an ISO date (YYYY-MM-DD), got {_show(value)}"
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ArgumentError(where, problem)
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise ArgumentError(where, problem) from None


def _uuid(value: Any, where: str) -> uuid.UUID:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise ArgumentError(where, f"expected a UUID, got {_show(value)}")
    return uuid.UUID(value)


def _identity(value: Any, where: str) -> Identity:
    try:
        return Identity(value)
    except ValueError:
        raise ArgumentError(
            where, f"expected an identity (64 lowercase hex digits), got {_show(value)}"
        ) from None


def schedule_at(value: Any, where: str) -> datetime.datetime | datetime.timedelta:
    """A ``scheduled_at`` from JSON: ``{"time": "<ISO 8601>"}`` or ``{"interval_us": n}``
    (n > 0); a time or an interval given as such is taken as it is."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ArgumentError(where, "a scheduled time needs a timezone (e.g. UTC)")
        return value
    if isinstance(value, datetime.timedelta):
        if value <= datetime.timedelta(0):
            raise ArgumentError(where, f"an interval must be positive, not {value}")
        return value
    problem = f'expected {{"time": "<ISO 8601>"}} or {{"interval_us": n}}, got {_show(value)}'
    if not isinstance(value, dict) or len(value) != 1:
        raise ArgumentError(where, problem)
    if "time" in value:
        return _timestamptz(value["time"], where)
    micros = value.get("interval_us")
    if not isinstance(micros, int) or isinstance(micros, bool):
        raise ArgumentError(where, problem)
    return schedule_at(datetime.timedelta(microseconds=micros), where)


def schedule_json(value: datetime.datetime | datetime.timedelta) -> dict[str, Any]:
    """The stored (JSON) form of a ``scheduled_at``."""
    if isinstance(value, datetime.timedelta):
        return {"interval_us": value // datetime.timedelta(microseconds=1)}
    return {"time": value.isoformat()}


_CONVERTERS: dict[str, Callable[[Any, str], Any]] = {
    "numeric": _numeric,
    "text": _text,
    "bool": _bool,
    "bytea": _bytea,
    "timestamptz": _timestamptz,
    "date": _date,
    "uuid": _uuid,
    "identity": _identity,
    "schedule_at": schedule_at,
}


def _check_json(value: Any, where: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ArgumentError(where, f"nests deeper than {MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ArgumentError(where, f"expected JSON, got {_show(value)}")
    elif isinstance(value, str):
        _check_text(value, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ArgumentError(where, f"object keys are strings, not {_show(key)}")
            _check_text(key, where)
            _check_json(item, f"{where}.{key}" if where else key, depth + 1)
    else:
        raise ArgumentError(where, f"expected JSON, got {_show(value)}")


def _show(value: Any) -> str:
    shown = "null" if value is None else repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


# -- Python -> JSON --------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """The JSON form of a Python value (times ISO 8601, Decimal a string, bytes base64,
    UUID a string, records objects)."""
    if value is None or isinstance(value, bool | int | float | str):
        return str(value) if isinstance(value, Identity) else value
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return schedule_json(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    raise TypeError(f"cannot convert {type(value).__name__} to JSON")


# -- call arguments --------------------------------------------------------------------


def bind_args(
    reducer: ReducerDef,
    args: list[Any] | dict[str, Any],
    module: ModuleDef,
    records: Mapping[str, type] | None = None,
) -> dict[str, Any]:
    """The reducer's arguments as Python values by parameter name, from a JSON list (in
    parameter order) or object (by name); defaults fill what is left out."""
    params = reducer.params
    if isinstance(args, list):
        if len(args) > len(params):
            raise ArgumentError(
                "", f"{reducer.name} takes {len(params)} arguments, got {len(args)}"
            )
        given = {p.name: v for p, v in zip(params, args, strict=False)}
    elif isinstance(args, dict):
        names = {p.name for p in params}
        unknown = sorted(k for k in args if k not in names)
        if unknown:
            raise ArgumentError(
                unknown[0],
                f"unknown (the parameters of {reducer.name} are "
                f"{', '.join(p.name for p in params) or 'none'})",
            )
        given = dict(args)
    else:
        raise ArgumentError("", "arguments are a JSON list or object")
    return {p.name: _bind(p, given, module, records) for p in params}


def _bind(
    param: ParamDef, given: dict[str, Any], module: ModuleDef, records: Mapping[str, type] | None
) -> Any:
    if param.name in given:
        value = given[param.name]
    elif param.has_default:
        value = param.default
    else:
        raise ArgumentError(param.name, "missing")
    return from_json(value, param.type, module, records, param.name)


# -- Python <-> Postgres ---------------------------------------------------------------

_WRAPPERS: dict[str, Callable[[Any], Any]] = {
    "int2": Int2,
    "int4": Int4,
    "int8": Int8,
    "float4": Float4,
    "float8": Float8,
    "identity": str,
}


def to_db(value: Any, ref: TypeRef) -> Any:
    """The psycopg parameter of a Python value of type ``ref`` (typed so that Postgres
    sees the column's type; records and JSON as ``Jsonb``)."""
    if value is None:
        return None
    if ref.name == "jsonb":
        return Jsonb(to_json(value))
    if ref.name == "schedule_at":
        return Jsonb(schedule_json(schedule_at(value, "scheduled_at")))
    wrap = _WRAPPERS.get(ref.name)
    if wrap is None:
        return list(value) if ref.array else value
    return [wrap(v) for v in value] if ref.array else wrap(value)


def from_db(value: Any, ref: TypeRef, records: Mapping[str, type] | None = None) -> Any:
    """The Python value of what psycopg returned for a column of type ``ref``."""
    if value is None:
        return None
    if ref.array:
        item = TypeRef(ref.name, record=ref.record)
        return [from_db(v, item, records) for v in value]
    if ref.name == "identity":
        return Identity(value)
    if ref.name == "schedule_at":
        return schedule_at(value, "scheduled_at")
    if ref.record is not None and records is not None and ref.record in records:
        return _convert(value, ref, _class_lookup(records), records, ref.record, 0)
    return value


def _class_lookup(records: Mapping[str, type]) -> RecordLookup:
    def lookup(name: str) -> RecordDef:
        if name not in records:
            raise ArgumentError("", f"unknown record type {name}")
        return record_def(records[name])

    return lookup


def record_def(cls: type) -> RecordDef:
    """The :class:`RecordDef` of a record class (a dataclass declared with ``@record``)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = []
    for f in dataclasses.fields(cls):
        ref = type_ref(hints[f.name], f"record {cls.__name__}, field {f.name}")
        default = f.metadata.get("millpond_default", f.default)
        has_default = default is not dataclasses.MISSING
        fields.append(ParamDef(f.name, ref, to_json(default) if has_default else None, has_default))
    return RecordDef(cls.__name__, tuple(fields))
