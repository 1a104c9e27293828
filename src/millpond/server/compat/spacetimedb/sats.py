"""SpacetimeDB 0.7's JSON values (SATS-JSON) from millpond's wire values, and back.

A row is a JSON array of its values in column order. Each value by its module type:

- ``identity``: ``[hex]`` (SpacetimeDB's ``Identity`` is a product of its bytes);
- nullable: ``{"0": value}`` when set, ``{"1": []}`` when null (an ``Option``);
- ``timestamptz``: microseconds since the Unix epoch (SpacetimeDB's ``Timestamp``);
- ``bytea``: hex digits;
- a record: the array of its fields' values, in declaration order;
- arrays: arrays of their items; everything else as millpond's wire has it (numbers,
  text, booleans; numeric, date and uuid as strings; jsonb as JSON).

Pure functions: :mod:`.translate` applies them to whole messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from millpond.module._def import ModuleDef, ParamDef, ReducerDef, TypeRef

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NO_IDENTITY = "00" * 32
"""The caller of a transaction no reducer made (SQL, the gateway, an import)."""


class SatsError(ValueError):
    """A value that does not have the shape its SATS type needs."""


def micros(iso: str) -> int:
    """Microseconds since the epoch of an ISO 8601 timestamp."""
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def iso(us: int) -> str:
    return (_EPOCH + timedelta(microseconds=us)).isoformat()


def encode(value: Any, kind: TypeRef, module: ModuleDef | None) -> Any:
    """The SATS-JSON of one wire value of type ``kind``."""
    if kind.nullable:
        if value is None:
            return {"1": []}
        return {"0": _encode_set(value, kind, module)}
    return _encode_set(value, kind, module)


def _encode_set(value: Any, kind: TypeRef, module: ModuleDef | None) -> Any:
    if kind.array and isinstance(value, list):
        item = TypeRef(kind.name, False, False, kind.record)
        return [None if v is None else _scalar(v, item, module) for v in value]
    return _scalar(value, kind, module)


def _fields(record: str, module: ModuleDef | None) -> list[tuple[str, TypeRef]] | None:
    """The fields of a record type, or of a table's row (``table:NAME``, a scheduled
    reducer's argument); None for one the module does not declare."""
    if module is None:
        return None
    try:
        if record.startswith("table:"):
            return [(c.name, c.type) for c in module.table(record[6:]).columns]
        return [(f.name, f.type) for f in module.record(record).fields]
    except KeyError:
        return None


def _scalar(value: Any, kind: TypeRef, module: ModuleDef | None) -> Any:
    if value is None:
        return None
    fields = _fields(kind.record, module) if kind.record is not None else None
    if fields is not None and isinstance(value, dict):
        return [encode(value.get(name), type_, module) for name, type_ in fields]
    if kind.name == "identity":
        return [value]
    if kind.name == "timestamptz" and isinstance(value, str):
        return micros(value)
    if kind.name == "bytea" and isinstance(value, str):
        return base64.b64decode(value).hex()
    return value


def decode(value: Any, kind: TypeRef, module: ModuleDef | None) -> Any:
    """The millpond value (an argument's JSON) of a SATS-JSON value; lenient: a plain
    value where SATS would wrap it (``"ab…"`` for ``["ab…"]``, ``None`` for an empty
    option) is taken as it is."""
    if kind.nullable:
        if isinstance(value, dict) and set(value) <= {"0", "1"} and len(value) == 1:
            return _decode_set(value["0"], kind, module) if "0" in value else None
        if value is None:
            return None
    return _decode_set(value, kind, module)


def _decode_set(value: Any, kind: TypeRef, module: ModuleDef | None) -> Any:
    if kind.array and isinstance(value, list):
        item = TypeRef(kind.name, False, False, kind.record)
        return [_unscalar(v, item, module) for v in value]
    return _unscalar(value, kind, module)


def _unscalar(value: Any, kind: TypeRef, module: ModuleDef | None) -> Any:
    fields = _fields(kind.record, module) if kind.record is not None else None
    if fields is not None and isinstance(value, list):
        if len(value) != len(fields):
            raise SatsError(f"record {kind.record} has {len(fields)} fields, not {len(value)}")
        pairs = zip(fields, value, strict=True)
        return {name: decode(v, type_, module) for (name, type_), v in pairs}
    if kind.name == "identity" and isinstance(value, list) and len(value) == 1:
        return value[0]
    if kind.name == "timestamptz" and isinstance(value, int) and not isinstance(value, bool):
        return iso(value)
    if kind.name == "bytea" and isinstance(value, str):
        try:
            return base64.b64encode(bytes.fromhex(value)).decode()
        except ValueError:
            raise SatsError("bytes are hex digits") from None
    return value


def args_to_sats(reducer: ReducerDef | None, args: Any, module: ModuleDef | None) -> list[Any]:
    """A reducer event's arguments as SpacetimeDB sends them: a positional array."""
    if reducer is None:
        return list(args) if isinstance(args, list) else []
    params = reducer.params
    if args is None:  # a private reducer's arguments are not shown: nulls in their place
        return [None for _ in params]
    if isinstance(args, dict):
        args = [args.get(p.name) for p in params]
    if not isinstance(args, list):
        return []
    padded = _padded(params, len(args))
    return [encode(a, p.type, module) for a, p in zip(args, padded, strict=True)]


def _padded(params: tuple[ParamDef, ...], n: int) -> list[ParamDef]:
    extra = ParamDef("", TypeRef("jsonb"))
    return list(params[:n]) + [extra] * max(0, n - len(params))


def args_from_sats(reducer: ReducerDef, args: list[Any], module: ModuleDef) -> list[Any]:
    """A 0.7 client's positional arguments as millpond's (checked by the call itself)."""
    params = _padded(reducer.params, len(args))
    return [decode(a, p.type, module) for a, p in zip(args, params, strict=True)]


def row_pk(table: str, key: list[Any] | None, row: list[Any]) -> str:
    """The row's id on the wire (``row_pk``): a hash of the table's primary key values,
    or of the whole row when it has none, so that a row's delete names the insert."""
    data = json.dumps([table, key if key is not None else row], separators=(",", ":"))
    return hashlib.blake2b(data.encode(), digest_size=16).hexdigest()


def address_of(connection_id: str | None) -> str:
    """A connection's 16-byte address (hex) from its millpond connection id
    (``c_`` and 16 hex digits): left-padded with zeros; all zeros for none."""
    if connection_id and connection_id.startswith("c_"):
        digits = connection_id[2:]
        try:
            binascii.unhexlify(digits)
        except (binascii.Error, ValueError):
            return "00" * 16
        if len(digits) <= 32:
            return digits.rjust(32, "0")
    return "00" * 16
