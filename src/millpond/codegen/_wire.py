"""Conversions between the realtime wire's values (the HTTP query API's JSON encoding:
numeric as a string, timestamps ISO 8601, bytea base64, identities hex) and Python's,
used by the other files of this package."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import decimal
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NewType, TypeAlias, TypeVar

from millpond.client.realtime import AsyncRealtime, Event, Realtime

T = TypeVar("T")

Identity = NewType("Identity", str)
"""Who called a reducer: 64 lowercase hex digits (``ctx.sender`` in the module)."""

Connection: TypeAlias = Realtime | AsyncRealtime
"""A realtime connection (``mp.realtime(db)``, ``await amp.realtime(db)``): the cache the
lookups read and the callbacks are registered on."""

_IDENTITY = re.compile(r"[0-9a-f]{64}")
_SPECIAL_FLOATS = ("NaN", "Infinity", "-Infinity")


class Default:
    """The type of :data:`DEFAULT`."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = Default()
"""A parameter left to the default the module declares (shown in the method's docstring)."""


def _bad(expected: str, value: Any) -> ValueError:
    return ValueError(f"expected {expected}, got {value!r}")


def int_(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad("an integer", value)
    return value


def float_(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if value in _SPECIAL_FLOATS:
        return float(value)
    raise _bad("a number", value)


def numeric(value: Any) -> decimal.Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _bad("a decimal number", value)
    try:
        return decimal.Decimal(str(value))
    except decimal.InvalidOperation:
        raise _bad("a decimal number", value) from None


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise _bad("a string", value)
    return value


def bool_(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad("true or false", value)
    return value


def bytea(value: Any) -> bytes:
    try:
        return base64.b64decode(text(value), validate=True)
    except binascii.Error:
        raise _bad("base64", value) from None


def timestamp(value: Any) -> datetime.datetime:
    result = datetime.datetime.fromisoformat(text(value))
    if result.tzinfo is None:
        raise _bad("a timestamp with a time zone", value)
    return result


def schedule_at(value: Any) -> datetime.datetime | datetime.timedelta:
    """A schedule table's ``scheduled_at``: ``{"time": …}`` or ``{"interval_us": n}``."""
    if isinstance(value, dict) and set(value) == {"time"}:
        return timestamp(value["time"])
    if isinstance(value, dict) and set(value) == {"interval_us"}:
        return datetime.timedelta(microseconds=int_(value["interval_us"]))
    raise _bad('{"time": …} or {"interval_us": n}', value)


def date(value: Any) -> datetime.date:
    return datetime.date.fromisoformat(text(value))


def uuid_(value: Any) -> uuid.UUID:
    return uuid.UUID(text(value))


def identity(value: Any) -> Identity:
    if not isinstance(value, str) or not _IDENTITY.fullmatch(value):
        raise _bad("an identity (64 lowercase hex digits)", value)
    return Identity(value)


def json(value: Any) -> Any:
    return value


def record(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(f"a {name} object", value)
    return value


def array(item: Callable[[Any], T], value: Any) -> list[T]:
    if not isinstance(value, list):
        raise _bad("an array", value)
    return [item(v) for v in value]


def optional(convert: Callable[[Any], T], value: Any) -> T | None:
    return None if value is None else convert(value)


def optional_array(item: Callable[[Any], T], value: Any) -> list[T] | None:
    return None if value is None else array(item, value)


def encode(value: Any) -> Any:
    """A Python value as JSON for a call or a lookup (records as objects)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.date):  # and datetime
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    raise TypeError(f"cannot send a {type(value).__name__} to a reducer")


def argument(value: Any, default: Any) -> Any:
    """``value`` as JSON, or the declared JSON ``default`` for :data:`DEFAULT`."""
    return default if isinstance(value, Default) else encode(value)


def bind(event: Event, names: Sequence[str], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A reducer event's arguments (as called: a list, or an object by name) by name,
    with the declared defaults of those left out."""
    args = event.reducer.args if event.reducer is not None else None
    given = dict(zip(names, args, strict=False)) if isinstance(args, list) else dict(args or {})
    bound = {}
    for name in names:
        if name in given:
            bound[name] = given[name]
        elif name in defaults:
            bound[name] = defaults[name]
        else:
            raise ValueError(f"the event of {event.reducer!r} has no argument {name!r}")
    return bound
