"""Decode replicated column values (Postgres text form) twice over: into Python values
for predicate matching (psycopg's default loaders: int, Decimal, float, str, bool, date,
datetime…), and into the JSON-ready form the wire carries (the HTTP query API's
loaders, so a row looks the same from a query, a snapshot and a change)."""

from __future__ import annotations

from typing import Any

from psycopg import abc, pq
from psycopg import adapters as default_adapters
from psycopg.adapt import AdaptersMap, Transformer

from ..query.adapters import register_json_loaders, register_safe_json
from .pgoutput import UNCHANGED, Relation, Value


class _Context:
    """The minimal adaptation context psycopg's Transformer needs."""

    def __init__(self, adapters: AdaptersMap) -> None:
        self.adapters = adapters
        self.connection = None


def _json_map() -> AdaptersMap:
    amap = AdaptersMap(default_adapters)
    register_json_loaders(amap)
    return amap


class ValueDecoder:
    def __init__(self) -> None:
        python = AdaptersMap(default_adapters)
        register_safe_json(python)  # no recursion on a deeply nested value
        self._python = Transformer(_Context(python))
        self._json = Transformer(_Context(_json_map()))
        self._loaders: dict[tuple[bool, int], abc.Loader] = {}

    def _loader(self, as_json: bool, oid: int) -> abc.Loader:
        key = (as_json, oid)
        found = self._loaders.get(key)
        if found is None:
            tx = self._json if as_json else self._python
            found = self._loaders[key] = tx.get_loader(oid, pq.Format.TEXT)
        return found

    def decode(self, relation: Relation, row: dict[str, Value], as_json: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for col in relation.columns:
            value = row.get(col.name)
            if value is None or value is UNCHANGED:
                out[col.name] = None
            else:
                out[col.name] = self._loader(as_json, col.type_oid).load(str(value).encode())
        return out
