"""How Postgres values become JSON for the HTTP query API.

Loaders are registered on the query connections so rows come out of psycopg already
JSON-ready (no second pass): int2/int4/int8 as exact integers, numeric as strings (no
digit lost), floats as numbers (NaN/±Infinity as strings), dates and times as ISO-8601,
intervals as ISO-8601 durations (``IntervalStyle=iso_8601``), bytea as base64, json and
jsonb as JSON, arrays as arrays, anything else as Postgres' text form.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from psycopg import adapters as global_adapters
from psycopg import pq
from psycopg.adapt import AdaptersMap, Loader, Transformer

_TEXT_TYPES = [
    "numeric",
    "money",
    "uuid",
    "inet",
    "cidr",
    "macaddr",
    "macaddr8",
    "int4range",
    "int8range",
    "numrange",
    "daterange",
    "tsrange",
    "tstzrange",
    "int4multirange",
    "int8multirange",
    "nummultirange",
    "datemultirange",
    "tsmultirange",
    "tstzmultirange",
    "interval",
    "date",
    "time",
    "timetz",
    "xml",
    "pg_lsn",
    "tsvector",
    "tsquery",
    "point",
    "line",
    "lseg",
    "box",
    "path",
    "polygon",
    "circle",
    "bit",
    "varbit",
    "oid",
    "xid",
    "cid",
    "regclass",
    "regtype",
    "regproc",
]


class _Text(Loader):
    """Postgres' own text form, as a str."""

    def load(self, data: Any) -> str:
        return bytes(data).decode()


class _Timestamp(Loader):
    """``2024-01-02 03:04:05.5+00`` → ``2024-01-02T03:04:05.5+00:00`` (ISO-8601)."""

    def load(self, data: Any) -> str:
        text = bytes(data).decode()
        if text in ("infinity", "-infinity"):
            return text
        text = text.replace(" ", "T", 1)
        sign_at = max(text.rfind("+"), text.rfind("-"))
        if sign_at > 10 and len(text) - sign_at == 3:  # +HH → +HH:00
            text += ":00"
        return text


class _Float(Loader):
    def load(self, data: Any) -> float | str:
        value = float(bytes(data))
        return value if math.isfinite(value) else bytes(data).decode()


class _Bytea(Loader):
    def load(self, data: Any) -> str:
        raw = bytes(data)
        if raw.startswith(b"\\x"):
            return base64.b64encode(bytes.fromhex(raw[2:].decode())).decode()
        return base64.b64encode(raw).decode()  # escape format is never asked for


def register_json_loaders(amap: AdaptersMap) -> None:
    """Make the connection owning ``amap`` load values JSON-ready."""
    for name in _TEXT_TYPES:
        amap.register_loader(name, _Text)
    amap.register_loader("timestamp", _Timestamp)
    amap.register_loader("timestamptz", _Timestamp)
    amap.register_loader("float4", _Float)
    amap.register_loader("float8", _Float)
    amap.register_loader("bytea", _Bytea)


def type_name(oid: int, cache: dict[int, str]) -> str | None:
    """Name of a type oid known to psycopg (builtins) or cached for this database."""
    if oid in cache:
        return cache[oid]
    info = global_adapters.types.get(oid)
    if info is not None:
        name = info.name + "[]" if oid == info.array_oid else info.name
        cache[oid] = name
        return name
    return None


TYPE_NAMES_SQL = """
SELECT t.oid::int8, CASE WHEN t.typcategory = 'A' AND e.oid IS NOT NULL
                   THEN e.typname || '[]' ELSE t.typname END AS name
FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem
WHERE t.oid = ANY(%s)
"""


def is_builtin(oid: int) -> bool:
    """A type psycopg knows (so it already loaded its values, arrays included)."""
    return global_adapters.types.get(oid) is not None


_TEXT_ARRAY = Transformer().get_loader(global_adapters.types["text"].array_oid, pq.Format.TEXT)


def parse_text_arrays(row: tuple[Any, ...], columns: list[int]) -> tuple[Any, ...]:
    """Parse the Postgres text form of arrays of user types (``{sad,happy}``) in the
    given columns into lists of their elements' text."""
    values = list(row)
    for i in columns:
        if isinstance(values[i], str):
            values[i] = _TEXT_ARRAY.load(values[i].encode())
    return tuple(values)
