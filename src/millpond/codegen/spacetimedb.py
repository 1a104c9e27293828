"""Bindings in the layout ``spacetime generate --lang python`` wrote for SpacetimeDB 0.7,
for the unmodified ``spacetimedb-sdk`` 0.7: :func:`generate_spacetimedb`.

One file per table (``user.py``: class ``User`` with ``is_table_class``,
``primary_key``, ``register_row_update``, ``iter``, ``filter_by_<column>``, a positional
``__init__``, ``encode``), one per record type, and ``<reducer>_reducer.py`` per reducer
clients may call (``reducer_name``, the call, ``register_on_<reducer>``,
``_decode_args``); no ``__init__.py``. ``SpacetimeDBAsyncClient(module_bindings)`` loads
them. Values are SpacetimeDB 0.7's JSON (``server/compat/spacetimedb/sats.py``). The code
keeps 0.7's shape (tabs, untyped helpers): it is the SDK's code style, not millpond's.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from typing import Any

from millpond.module._def import ModuleDef, RecordDef, ReducerDef, TableDef, TypeRef

from . import GenerateError, header

_SCALAR_DECODE = {
    "int2": "int({})",
    "int4": "int({})",
    "int8": "int({})",
    "float4": "float({})",
    "float8": "float({})",
    "bool": "bool({})",
    "text": "str({})",
    "numeric": "str({})",
    "date": "str({})",
    "uuid": "str({})",
    "timestamptz": "int({})",
    "bytea": "bytes.fromhex({})",
    "identity": "Identity.from_string({}[0])",
    "jsonb": "{}",
    "schedule_at": "{}",
}
_HINTS = {
    "int2": "int",
    "int4": "int",
    "int8": "int",
    "float4": "float",
    "float8": "float",
    "bool": "bool",
    "bytea": "bytes",
    "identity": "Identity",
    "timestamptz": "int",
    "jsonb": "object",
    "schedule_at": "object",
}
_IMPORTS = (
    "from spacetimedb_sdk.spacetimedb_client import SpacetimeDBClient, Identity, Address\n"
    "from spacetimedb_sdk.spacetimedb_client import ReducerEvent\n"
)


def file_name(class_name: str) -> str:
    """The module file of a table or record class: ``CleanUp`` → ``clean_up``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", class_name).lower()


def cache_name(class_name: str) -> str:
    """The name the SDK's client cache gives the class's table (it derives it from the
    file name, as 0.7's ``snake_to_camel``): what the server calls the table."""
    return file_name(class_name).replace("_", " ").title().replace(" ", "")


_TAKEN = frozenset({"data", "encode", "iter", "register_row_update", "is_table_class"})
"""Attribute names of a 0.7 table class: no column may have one."""


def _name(name: Any, what: str) -> str:
    """``name`` if it can stand in the code as an identifier; :class:`GenerateError`
    otherwise (a definition is the publisher's, and the code runs on its clients)."""
    if (
        not isinstance(name, str)
        or not name.isascii()
        or not name.isidentifier()
        or keyword.iskeyword(name)
    ):
        raise GenerateError(f"{what} {name!r} is not a Python identifier")
    return name


def _check(module: ModuleDef) -> None:
    kinds: list[TypeRef] = []
    for record in module.records:
        _name(record.name, "record")
        for f in record.fields:
            _name(f.name, f"field of {record.name}")
            kinds.append(f.type)
    for table in module.tables:
        _name(table.class_name, "table class")
        for column in table.columns:
            if _name(column.name, f"column of {table.class_name}") in _TAKEN:
                raise GenerateError(
                    f"table {table.class_name}: 0.7 bindings have no column named {column.name}"
                )
            kinds.append(column.type)
        for key in table.primary_key:
            _name(key, f"primary key of {table.class_name}")
    for reducer in _callable(module):
        _name(reducer.name, "reducer")
        for p in reducer.params:
            _name(p.name, f"parameter of {reducer.name}")
            kinds.append(p.type)
    for kind in kinds:
        if kind.record is not None:
            _name(kind.record, "record type")
            module.record(kind.record)  # KeyError for an undeclared one: malformed
        elif kind.name not in _SCALAR_DECODE:
            raise GenerateError(f"unknown type {kind.name!r}")


def generate_spacetimedb(schema: Mapping[str, Any], database: str) -> dict[str, str]:
    module = ModuleDef.from_json(dict(schema["definition"]))
    _check(module)
    top = header(schema, database)
    files: dict[str, str] = {}
    for record in module.records:
        files[f"{file_name(record.name)}.py"] = top + _record(record)
    for table in module.tables:
        name = file_name(table.class_name)
        if name.endswith("_reducer"):
            raise GenerateError(f"table {table.class_name}: 0.7 reads *_reducer files as reducers")
        files[f"{name}.py"] = top + _table(table)
    for reducer in _callable(module):
        files[f"{reducer.name}_reducer.py"] = top + _reducer(reducer)
    if len(files) != len(module.records) + len(module.tables) + len(_callable(module)):
        raise GenerateError("two of the module's tables or records have the same file name")
    return files


def _callable(module: ModuleDef) -> list[ReducerDef]:
    """The reducers clients call (the server runs lifecycle and scheduled ones)."""
    return [r for r in module.reducers if r.lifecycle is None and r.scheduled is None]


# -- values ------------------------------------------------------------------------------


def _decode(kind: TypeRef, expr: str) -> str:
    if kind.nullable:
        inner = TypeRef(kind.name, False, kind.array, kind.record)
        return f"({_decode(inner, f'{expr}[{chr(39)}0{chr(39)}]')} if '0' in {expr} else None)"
    if kind.array:
        item = TypeRef(kind.name, False, False, kind.record)
        return f"[{_decode(item, 'item')} for item in {expr}]"
    if kind.record is not None:
        return f"{kind.record}({expr})"
    return _SCALAR_DECODE[kind.name].format(expr)


def _encode(kind: TypeRef, expr: str) -> str:
    if kind.nullable:
        inner = TypeRef(kind.name, False, kind.array, kind.record)
        return f"({{'0': {_encode(inner, expr)}}} if {expr} is not None else {{'1': []}})"
    if kind.array:
        item = TypeRef(kind.name, False, False, kind.record)
        return f"[{_encode(item, 'item')} for item in {expr}]"
    if kind.record is not None:
        return f"{expr}.encode()"
    if kind.name == "identity":
        return f"[str({expr})]"
    if kind.name == "bytea":
        return f"{expr}.hex()"
    return expr


def _hint(kind: TypeRef) -> str:
    base = kind.record or _HINTS.get(kind.name, "str")
    if kind.array:
        base = f"List[{base}]"
    return base


def _record_imports(kinds: list[TypeRef], own: str | None = None) -> str:
    names = sorted({k.record for k in kinds if k.record is not None and k.record != own})
    return "".join(f"from .{file_name(n)} import {n}\n" for n in names)


# -- files -------------------------------------------------------------------------------


def _record(record: RecordDef) -> str:
    kinds = [f.type for f in record.fields]
    lines = [
        "",
        "from __future__ import annotations",
        "from typing import List",
        "",
        "from spacetimedb_sdk.spacetimedb_client import Identity, Address",
        _record_imports(kinds, record.name).rstrip("\n"),
        f"class {record.name}:",
        *_positional([(f.name, f.type) for f in record.fields]),
    ]
    return "\n".join(lines)


def _positional(fields: list[tuple[str, TypeRef]]) -> list[str]:
    """A 0.7 class's ``__init__`` from a positional row, ``encode`` and ``__getattr__``."""
    lines = ["\tdef __init__(self, data: List[object]):", "\t\tself.data = {}"]
    for i, (name, kind) in enumerate(fields):
        lines.append(f'\t\tself.data["{name}"] = {_decode(kind, f"data[{i}]")}')
    encoded = ", ".join(_encode(kind, f"self.{name}") for name, kind in fields)
    return [
        *lines,
        "",
        "\tdef encode(self) -> List[object]:",
        f"\t\treturn [{encoded}]",
        "",
        "\tdef __getattr__(self, name: str):",
        "\t\treturn self.data.get(name)",
        "",
    ]


def _table(table: TableDef) -> str:
    cls, cache = table.class_name, cache_name(table.class_name)
    kinds = [c.type for c in table.columns]
    unique = {u[0] for u in table.unique if len(u) == 1}
    if len(table.primary_key) == 1:
        unique.add(table.primary_key[0])
    lines = [
        "",
        "from __future__ import annotations",
        "from typing import List, Iterator, Callable",
        "",
        _IMPORTS.rstrip("\n"),
        _record_imports(kinds).rstrip("\n"),
        "",
        f"class {cls}:",
        "\tis_table_class = True",
        "",
    ]
    if len(table.primary_key) == 1:
        lines += [f'\tprimary_key = "{table.primary_key[0]}"', ""]
    instance = f'SpacetimeDBClient.instance._get_table_cache("{cache}")'
    lines += [
        "\t@classmethod",
        f"\tdef register_row_update(cls, callback: Callable[[str,{cls},{cls},ReducerEvent],"
        " None]):",
        f'\t\tSpacetimeDBClient.instance._register_row_update("{cache}",callback)',
        "",
        "\t@classmethod",
        f"\tdef iter(cls) -> Iterator[{cls}]:",
        f"\t\treturn {instance}.values()",
        "",
    ]
    for column in table.columns:
        name = column.name
        match = (
            f"[column_value for column_value in {instance}.values()"
            f" if column_value.{name} == {name}]"
        )
        lines.append("\t@classmethod")
        if name in unique:
            lines += [
                f"\tdef filter_by_{name}(cls, {name}) -> {cls}:",
                f"\t\treturn next(iter({match}), None)",
            ]
        else:
            lines += [f"\tdef filter_by_{name}(cls, {name}) -> List[{cls}]:", f"\t\treturn {match}"]
        lines.append("")
    lines += _positional([(c.name, c.type) for c in table.columns])
    return "\n".join(lines)


def _reducer(reducer: ReducerDef) -> str:
    name = reducer.name
    kinds = [p.type for p in reducer.params]
    params = ", ".join(f"{p.name}: {_hint(p.type)}" for p in reducer.params)
    hints = ", ".join(["Identity", "Address", "str", "str", *(_hint(k) for k in kinds)])
    decoded = ", ".join(_decode(p.type, f"data[{i}]") for i, p in enumerate(reducer.params))
    lines = [
        "",
        "from typing import List, Callable",
        "",
        "from spacetimedb_sdk.spacetimedb_client import SpacetimeDBClient",
        "from spacetimedb_sdk.spacetimedb_client import Identity",
        "from spacetimedb_sdk.spacetimedb_client import Address",
        _record_imports(kinds).rstrip("\n"),
        "",
        f'reducer_name = "{name}"',
        "",
        f"def {name}({params}):",
    ]
    lines += [f"\t{p.name} = {_encode(p.type, p.name)}" for p in reducer.params]
    call_args = "".join(f", {p.name}" for p in reducer.params)
    lines += [
        f'\tSpacetimeDBClient.instance._reducer_call("{name}"{call_args})',
        "",
        f"def register_on_{name}(callback: Callable[[{hints}], None]):",
        f'\tSpacetimeDBClient.instance._register_reducer("{name}", callback)',
        "",
        "def _decode_args(data):",
        f"\treturn [{decoded}]",
        "",
    ]
    return "\n".join(lines)
