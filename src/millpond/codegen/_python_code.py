"""The pieces :mod:`millpond.codegen.python` writes code with: the definition's tables,
records and reducers as Python sees them (types, annotations, converters, defaults as
literals), and formatting the way ruff's formatter does (brackets, docstrings, imports).
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import GenerateError

WIDTH = 100

_SCALARS: dict[str, tuple[str, str]] = {
    "int2": ("int", "_wire.int_"),
    "int4": ("int", "_wire.int_"),
    "int8": ("int", "_wire.int_"),
    "float4": ("float", "_wire.float_"),
    "float8": ("float", "_wire.float_"),
    "numeric": ("_decimal.Decimal", "_wire.numeric"),
    "text": ("str", "_wire.text"),
    "bool": ("bool", "_wire.bool_"),
    "bytea": ("bytes", "_wire.bytea"),
    "timestamptz": ("_dt.datetime", "_wire.timestamp"),
    "date": ("_dt.date", "_wire.date"),
    "uuid": ("_uuid.UUID", "_wire.uuid_"),
    "jsonb": ("_t.Any", "_wire.json"),
    "identity": ("_wire.Identity", "_wire.identity"),
    "schedule_at": ("_dt.datetime | _dt.timedelta", "_wire.schedule_at"),
}
_IMPORTS = {
    "_abc": "import collections.abc as _abc",
    "_dc": "import dataclasses as _dc",
    "_dt": "import datetime as _dt",
    "_decimal": "import decimal as _decimal",
    "_t": "import typing as _t",
    "_uuid": "import uuid as _uuid",
}
_RESERVED = frozenset({*_IMPORTS, "_b", "_wire", "_rt", "_client", "_models"})
BUILTINS = ("int", "float", "str", "bool", "bytes", "list")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class Type:
    """A column's, parameter's or record field's type (``TypeRef`` of the definition)."""

    name: str
    nullable: bool
    array: bool
    record: str | None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Type:
        name = data["name"]
        if name not in _SCALARS:
            raise GenerateError(f"unknown type {name!r}: a newer millpond may know it")
        record = data.get("record")
        if record is not None:
            _class_name(record)
        return cls(name, bool(data["nullable"]), bool(data["array"]), record)

    def annotation(self, shadowed: Iterable[str] = (), argument: bool = False) -> str:
        """The Python type; as an ``argument``, identities are any ``str`` and arrays any
        sequence."""
        base = self.record or _SCALARS[self.name][0]
        if argument and self.name == "identity":
            base = "str"
        if base in shadowed:
            base = f"_b.{base}"
        if self.array:
            seq = "_abc.Sequence" if argument else ("_b.list" if "list" in shadowed else "list")
            base = f"{seq}[{base}]"
        return f"{base} | None" if self.nullable else base

    def decode(self, value: str) -> str:
        """An expression converting the wire value ``value`` to :meth:`annotation`."""
        item = f"{self.record}.from_json" if self.record else _SCALARS[self.name][1]
        if self.array:
            kind = "_wire.optional_array" if self.nullable else "_wire.array"
            return f"{kind}({item}, {value})"
        if self.nullable:
            return f"_wire.optional({item}, {value})"
        return f"{item}({value})"

    def literal(self, default: Any) -> str | None:
        """A default as a Python expression, or None when it has none that is immutable."""
        if default is None:
            return "None" if self.nullable else None
        if self.array:
            if not isinstance(default, list):
                return None
            items = [Type(self.name, False, False, None).literal(v) for v in default]
            if any(i is None for i in items):
                return None
            return f"({items[0]},)" if len(items) == 1 else f"({', '.join(map(str, items))})"
        return _scalar_literal(self.name if self.record is None else "record", default)


def _scalar_literal(name: str, value: Any) -> str | None:
    if name == "bool" and isinstance(value, bool):
        return repr(value)
    if name.startswith("int") and isinstance(value, int) and not isinstance(value, bool):
        return repr(value)
    if name.startswith("float") and isinstance(value, int | float) and not isinstance(value, bool):
        return repr(float(value)) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    text = json.dumps(value)
    calls = {
        "text": text,
        "identity": text,
        "numeric": f"_decimal.Decimal({text})",
        "timestamptz": f"_dt.datetime.fromisoformat({text})",
        "date": f"_dt.date.fromisoformat({text})",
        "uuid": f"_uuid.UUID({text})",
    }
    if name == "bytea":
        return _bytes_literal(base64.b64decode(value))
    return calls.get(name)


def _bytes_literal(data: bytes) -> str:
    """``b"..."`` (the formatter's quotes), printable ASCII as itself."""
    chars = [chr(c) if 32 <= c < 127 and chr(c) not in '"\\' else f"\\x{c:02x}" for c in data]
    return 'b"' + "".join(chars) + '"'


@dataclass(frozen=True)
class Field:
    """A column, parameter or record field: its name, type and declared default."""

    name: str
    type: Type
    default: Any = None
    has_default: bool = False

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Field:
        name = data["name"]
        if not _NAME.fullmatch(name) or name in _RESERVED:
            raise GenerateError(f"cannot generate bindings for a name like {name!r}")
        return cls(name, Type.of(data["type"]), data.get("default"), bool(data["has_default"]))


# -- writing code ------------------------------------------------------------------------


def bracketed(
    indent: str, head: str, items: Sequence[str], tail: str, explode: bool = False
) -> str:
    """``head item, item tail`` as ruff's formatter writes it: on one line if it fits,
    else the items on one indented line (unless ``explode``), else one per line."""
    one = f"{indent}{head}{', '.join(items)}{tail}"
    if (len(one) <= WIDTH and "\n" not in one) or not items:
        return one
    inner = f"{indent}    {', '.join(items)}"
    if len(inner) <= WIDTH and not explode and "\n" not in inner:
        return f"{indent}{head}\n{inner}\n{indent}{tail}"
    body = "".join(f"{indent}    {item},\n" for item in items)
    return f"{indent}{head}\n{body}{indent}{tail}"


def docstring(indent: str, text: str) -> str:
    """A docstring, wrapped, with quotes, backslashes and non-ASCII escaped."""
    text = text.strip().replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    text = text.encode("ascii", "backslashreplace").decode()
    if text.endswith('"'):
        text = text[:-1] + '\\"'
    lines = _wrap(text, WIDTH - len(indent))
    if len(lines) == 1 and len(indent) + len(lines[0]) + 6 <= WIDTH:
        return f'{indent}"""{lines[0]}"""\n'
    body = "\n".join(f"{indent}{line}" if line else "" for line in lines)
    return f'{indent}"""{body.lstrip()}\n{indent}"""\n'


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines():
        if len(paragraph) <= width - 3:
            lines.append(paragraph)
            continue
        words, line = paragraph.split(), ""
        if not words:
            lines.append("")
        for word in words:
            if line and len(line) + 1 + len(word) > width - 3:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        if line:
            lines.append(line)
    return lines or [""]


def from_import(module: str, names: Sequence[str]) -> str:
    one = f"from {module} import {', '.join(names)}"
    if len(one) <= WIDTH:
        return one
    return bracketed("", f"from {module} import (", names, ")", explode=True)


def imports(body: str, extra: Sequence[str] = ()) -> str:
    """The import block of a file: the standard modules ``body`` uses, then ``extra``."""
    std = sorted(line for alias, line in _IMPORTS.items() if f"{alias}." in body)
    if "_b." in body:
        std.insert(0, "import builtins as _b")
    blocks = ["from __future__ import annotations", "\n".join(std), *extra]
    return "\n\n".join(b for b in blocks if b) + "\n"


def fresh(name: str, taken: Iterable[str]) -> str:
    """``name``, with underscores appended until it is not ``taken``."""
    taken = set(taken)
    while name in taken:
        name += "_"
    return name


def py_literal(value: Any, indent: str = "", lead: int = 0) -> str:
    """A JSON value as a Python literal (strings escaped to ASCII), starting ``lead``
    columns into a line indented by ``indent``: exploded, one item a line, if too long."""
    if isinstance(value, dict | list) and value:
        one = _one_line(value)
        if lead + len(one) + 1 <= WIDTH:
            return one
        inner = indent + "    "
        if isinstance(value, dict):
            items = [
                f"{json.dumps(str(k))}: "
                + py_literal(v, inner, len(inner) + len(json.dumps(str(k))) + 2)
                for k, v in value.items()
            ]
        else:
            items = [py_literal(v, inner, len(inner)) for v in value]
        ends = "{}" if isinstance(value, dict) else "[]"
        return ends[0] + "\n" + "".join(f"{inner}{i},\n" for i in items) + indent + ends[1]
    return _one_line(value)


def _one_line(value: Any) -> str:
    if isinstance(value, dict):
        items = [f"{json.dumps(str(k))}: {_one_line(v)}" for k, v in value.items()]
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_one_line(v) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    return json.dumps(value)


# -- the definition ----------------------------------------------------------------------


def _class_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.startswith("_"):
        raise GenerateError(f"cannot generate a class named {name!r}")
    return name


@dataclass(frozen=True)
class Record:
    class_name: str
    fields: tuple[Field, ...]

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Record:
        fields = tuple(Field.of(f) for f in data["fields"])
        if any(f.name == "from_json" for f in fields):
            raise GenerateError(f"record {data['name']}: a field named from_json")
        return cls(_class_name(data["name"]), fields)


@dataclass(frozen=True)
class Table:
    name: str
    class_name: str
    columns: tuple[Field, ...]
    key: tuple[str, ...]
    public: bool
    lookups: tuple[tuple[str, ...], ...]
    """The column groups of its unique constraints and indexes (not the primary key)."""

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Table:
        name = data["name"]
        if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
            raise GenerateError(f"cannot generate bindings of a table named {name!r}")
        key = tuple(data["primary_key"])
        groups = [tuple(u) for u in data.get("unique", ())]
        groups += [tuple(i["columns"]) for i in data.get("indexes", ())]
        lookups = tuple(g for g in dict.fromkeys(groups) if g != key)
        columns = tuple(Field.of(c) for c in data["columns"])
        names = {c.name for c in columns}
        if not key or any(c not in names for group in (key, *lookups) for c in group):
            raise GenerateError(f"table {name}: a key or index names an unknown column")
        return cls(name, _class_name(data["class_name"]), columns, key, data["public"], lookups)

    def column(self, name: str) -> Field:
        return next(c for c in self.columns if c.name == name)


@dataclass(frozen=True)
class Reducer:
    name: str
    params: tuple[Field, ...]
    private: bool
    doc: str

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Reducer:
        name = data["name"]
        if not _NAME.fullmatch(name) or name in _RESERVED:
            raise GenerateError(f"cannot generate a method named {name!r}")
        params = tuple(Field.of(p) for p in data["params"])
        return cls(name, params, bool(data["private"]), data.get("doc") or "")


def tuple_literal(indent: str, items: Sequence[str]) -> str:
    """A tuple literal whose first line starts at ``indent`` (exploded when too long)."""
    if len(items) == 1:
        return f"({items[0]},)"
    text = f"({', '.join(items)})"
    if len(indent) + len(text) + 1 <= WIDTH:
        return text
    return "(\n" + "".join(f"{indent}    {i},\n" for i in items) + f"{indent})"
