"""How Postgres values become JSON for the HTTP query API.

Loaders are registered on the query connections so rows come out of psycopg already
JSON-ready (no second pass): int2/int4/int8 as exact integers, numeric as strings (no
digit lost), floats as numbers (NaN/±Infinity as strings), dates and times as ISO-8601,
intervals as ISO-8601 durations (``IntervalStyle=iso_8601``), bytea as base64, json and
jsonb as JSON, arrays as arrays, anything else as Postgres' text form.

json and jsonb values of a query result are never parsed: :func:`raw_json_adapters`
loads them as :class:`RawJson` (Postgres' own JSON text, checked for nesting depth at C
speed) and :func:`dumps` splices that text into the response. Memory stays that of the
text (a parsed ``[[],[],…]`` takes ~20 times its text), and no depth makes a recursion.
"""

from __future__ import annotations

import base64
import functools
import json
import math
from typing import Any

from psycopg import adapters as global_adapters
from psycopg import pq
from psycopg.adapt import AdaptersMap, Loader, Transformer

from ..limits import DEFAULT_JSON_DEPTH, too_deep

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


class RawJson:
    """A json/jsonb value as Postgres' JSON text, to be written into a response as is."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class JsonTooDeep(ValueError):
    """A json/jsonb value nests deeper than the limit."""


@functools.cache
def _raw_json_loader(max_depth: int) -> type[Loader]:
    class _RawJsonLoader(Loader):
        def load(self, data: Any) -> RawJson:
            raw = bytes(data)
            if too_deep(raw, max_depth):
                raise JsonTooDeep(max_depth)
            return RawJson(raw.decode())

    return _RawJsonLoader


def raw_json_adapters(base: AdaptersMap, max_depth: int) -> AdaptersMap:
    """``base`` with json and jsonb (and their arrays) loaded as :class:`RawJson`; a
    value nested more than ``max_depth`` deep raises :class:`JsonTooDeep`."""
    amap = AdaptersMap(base)
    amap.register_loader("json", _raw_json_loader(max_depth))
    amap.register_loader("jsonb", _raw_json_loader(max_depth))
    return amap


_MARK = "\x00"  # no value of a result is this string: Postgres text holds no NUL
_MARK_JSON = json.dumps(_MARK)


def dumps(body: Any) -> bytes:
    """``body`` as compact JSON (as Starlette's JSONResponse writes it), with the text of
    every :class:`RawJson` in it spliced in place."""
    raws: list[str] = []

    def mark(value: Any) -> str:
        if not isinstance(value, RawJson):
            raise TypeError(f"{type(value).__name__} is not JSON serializable")
        raws.append(value.text)
        return _MARK

    text = json.dumps(
        body, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=mark
    )
    if not raws:
        return text.encode()
    parts = text.split(_MARK_JSON)
    if len(parts) != len(raws) + 1:  # pragma: no cover - a NUL would have to be in a value
        raise ValueError("cannot splice the JSON values of this result")
    spliced = [parts[0]]
    for raw, part in zip(raws, parts[1:], strict=True):
        spliced += (raw, part)
    return "".join(spliced).encode()


class _SafeJson(Loader):
    """json/jsonb parsed, unless nested deeper than ``DEFAULT_JSON_DEPTH`` (parsing,
    matching or sending it again would recurse until it fails): then its JSON text, as a
    string."""

    def load(self, data: Any) -> Any:
        raw = bytes(data)
        if too_deep(raw, DEFAULT_JSON_DEPTH):
            return raw.decode()
        return json.loads(raw)


def register_safe_json(amap: AdaptersMap) -> None:
    """Parse json/jsonb with :class:`_SafeJson` on the connection owning ``amap``."""
    amap.register_loader("json", _SafeJson)
    amap.register_loader("jsonb", _SafeJson)


def register_json_loaders(amap: AdaptersMap) -> None:
    """Make the connection owning ``amap`` load values JSON-ready."""
    register_safe_json(amap)
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


# runs in the caller's session, after the caller's SQL (which may have set its own
# search_path, even to put its objects before pg_catalog): every name and operator is
# schema-qualified, as the names it returns are cached for every caller of the database
TYPE_NAMES_SQL = """
SELECT t.oid::pg_catalog.int8,
       CASE WHEN t.typcategory OPERATOR(pg_catalog.=) 'A' AND e.oid IS NOT NULL
            THEN pg_catalog.textcat(e.typname::pg_catalog.text, '[]')
            ELSE t.typname::pg_catalog.text END AS name
FROM pg_catalog.pg_type t
LEFT JOIN pg_catalog.pg_type e ON e.oid OPERATOR(pg_catalog.=) t.typelem
WHERE t.oid OPERATOR(pg_catalog.=) ANY(%s)
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
