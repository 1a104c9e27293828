"""Python types a module can use for columns and arguments, and how each maps to a
:class:`~millpond.module._def.TypeRef`."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import re
import types
import typing
import uuid
from typing import Annotated, Any

from ._def import TypeRef


class Identity(str):
    """Who called: 64 lowercase hex digits (a 32-byte identity, as SpacetimeDB shows one).
    Stored as ``text``."""

    _PATTERN = re.compile(r"[0-9a-f]{64}")

    def __new__(cls, value: str) -> Identity:
        if not isinstance(value, str) or not cls._PATTERN.fullmatch(value):
            raise ValueError(f"an identity is 64 lowercase hex digits, not {value!r}")
        return super().__new__(cls, value)


Timestamp = datetime.datetime
"""A point in time (timezone-aware); ``timestamptz`` in Postgres."""

ScheduleAt = datetime.datetime | datetime.timedelta
"""When a schedule table's row is due (``scheduled_at``): a time (one run) or an interval
(a run every interval, the first one interval after the row was inserted). Stored as
``jsonb``: ``{"time": "<ISO 8601>"}`` or ``{"interval_us": <microseconds>}``."""


@dataclasses.dataclass(frozen=True)
class PgType:
    """``Annotated[int, PgType("int4")]``: a narrower Postgres type than the default."""

    name: str


I16 = Annotated[int, PgType("int2")]
I32 = Annotated[int, PgType("int4")]
I64 = int
F32 = Annotated[float, PgType("float4")]
F64 = float

_DEFAULTS: dict[Any, str] = {
    int: "int8",
    float: "float8",
    decimal.Decimal: "numeric",
    str: "text",
    bool: "bool",
    bytes: "bytea",
    datetime.datetime: "timestamptz",
    datetime.date: "date",
    uuid.UUID: "uuid",
    Identity: "identity",
    dict: "jsonb",
    Any: "jsonb",
}
_NARROWER = {"int2": int, "int4": int, "float4": float}

RECORD_MARK = "__millpond_record__"


def type_ref(hint: Any, where: str) -> TypeRef:
    """The :class:`TypeRef` of a type hint (resolved, with extras); a ``TypeError`` naming
    ``where`` when the type cannot be stored."""
    if hint == ScheduleAt:
        return TypeRef("schedule_at")
    nullable = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1 or len(args) == len(typing.get_args(hint)):
            raise TypeError(f"{where}: only `X | None` unions are supported, not {hint!r}")
        nullable, hint, origin = True, args[0], typing.get_origin(args[0])
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        inner = _scalar(item, where)
        if inner.name == "jsonb" or inner.nullable:
            return TypeRef("jsonb", nullable)  # a list of records, of JSON, …: JSON
        return TypeRef(inner.name, nullable, array=True)
    ref = _scalar(hint, where)
    return TypeRef(ref.name, nullable, record=ref.record)


def _scalar(hint: Any, where: str) -> TypeRef:
    if typing.get_origin(hint) is Annotated:
        base, *extras = typing.get_args(hint)
        for extra in extras:
            if isinstance(extra, PgType):
                if _NARROWER.get(extra.name) is not base:
                    raise TypeError(f"{where}: {extra.name} is not a kind of {base!r}")
                return TypeRef(extra.name)
        hint = base
    if typing.get_origin(hint) is dict:
        return TypeRef("jsonb")
    if isinstance(hint, type) and getattr(hint, RECORD_MARK, False):
        return TypeRef("jsonb", record=hint.__name__)
    try:
        name = _DEFAULTS.get(hint)
    except TypeError:  # unhashable hints
        name = None
    if name is None:
        raise TypeError(f"{where}: type {hint!r} cannot be stored (see docs/modules.md)")
    return TypeRef(name)
