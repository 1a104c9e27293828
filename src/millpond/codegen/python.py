"""Typed Python bindings of a published module: :func:`generate_python`.

The output is a package (relative path → text): ``tables.py`` (a frozen dataclass per
table and record, with typed cache lookups and row callbacks), ``reducers.py``
(``Module``/``AsyncModule`` with a method per reducer, and typed reducer callbacks),
``_wire.py`` (the value conversions: a copy of :mod:`millpond.codegen._wire`) and
``__init__.py``. The code passes ``mypy --strict`` and ruff; it imports only the SDK.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

from . import GenerateError, header
from ._python_code import (
    BUILTINS,
    WIDTH,
    Field,
    Record,
    Reducer,
    Table,
    bracketed,
    docstring,
    fresh,
    from_import,
    imports,
    py_literal,
    tuple_literal,
)

# -- tables.py ---------------------------------------------------------------------------

TABLES_DOC = '"""The rows of {db}\'s tables and its record types (see the package\'s docstring)."""'
_CALLBACKS = {
    "on_insert": ("insert", "new", "[{row}, _rt.Event]", "cls.from_row(new), event"),
    "on_delete": ("delete", "old", "[{row}, _rt.Event]", "cls.from_row(old), event"),
    "on_update": (
        "update",
        "old is not None and new",
        "[{row}, {row}, _rt.Event]",
        "cls.from_row(old), cls.from_row(new), event",
    ),
}
_CALLBACK_DOCS = {
    "on_insert": "``callback(row, event)`` for each row that enters the cache.",
    "on_delete": "``callback(row, event)`` for each row that leaves the cache.",
    "on_update": "``callback(old, new, event)`` for each cached row that changes.",
}


def tables_file(database: str, records: Sequence[Record], tables: Sequence[Table]) -> str:
    classes = [_record_class(r) for r in records] + [_table_class(t) for t in tables]
    body = "\n\n".join(classes)
    extra = ["from millpond.client import realtime as _rt", "from . import _wire"]
    used = [e for e in extra if f"{e.rsplit(' ', 1)[-1]}." in body]
    top = imports(body, used)
    return f"{TABLES_DOC.format(db=database)}\n\n{top}\n\n{body}"


def _record_class(record: Record) -> str:
    names = [f.name for f in record.fields]
    shadowed = [b for b in BUILTINS if b in names]
    lines = ["@_dc.dataclass(frozen=True, kw_only=True)", f"class {record.class_name}:"]
    lines.append(docstring("    ", f"Record ``{record.class_name}`` (a JSON object)."))
    for f in record.fields:
        default = f.type.literal(f.default) if f.has_default else None
        suffix = "" if default is None else f" = {default}"
        lines.append(f"    {f.name}: {f.type.annotation(shadowed)}{suffix}")
    lines += [
        "",
        "    @classmethod",
        f"    def from_json(cls, value: _t.Any) -> {record.class_name}:",
        docstring("        ", f"A ``{record.class_name}`` from its JSON object.").rstrip(),
        f'        data = _wire.record(value, "{record.class_name}")',
    ]
    args = [f"{f.name}={f.type.decode(f'data[{json.dumps(f.name)}]')}" for f in record.fields]
    lines.append(bracketed("        ", "return cls(", args, ")"))
    return "\n".join(lines) + "\n"


def _table_class(table: Table) -> str:
    names = [c.name for c in table.columns]
    shadowed = [b for b in BUILTINS if b in names]
    if "from_row" in names:
        raise GenerateError(f"table {table.name}: a column named from_row")
    m = {n: fresh(n, names) for n in ("iter", "count", "find", *_CALLBACKS)}
    key = ", ".join(f"``{k}``" for k in table.key)
    what = "public" if table.public else "private: its owner's"
    doc = f"A row of table ``{table.name}`` ({what}; primary key {key})."
    lines = ["@_dc.dataclass(frozen=True)", f"class {table.class_name}:", docstring("    ", doc)]
    lines += [f"    {c.name}: {c.type.annotation(shadowed)}" for c in table.columns]
    methods = [
        _from_row(table, shadowed),
        _iter_count(table, m["iter"], m["count"], shadowed),
        _find(table, m["find"], names),
        *(_filter(table, group, names, shadowed) for group in table.lookups),
        *(_callback(table, m[name], name) for name in _CALLBACKS),
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(methods)


def _from_row(table: Table, shadowed: Sequence[str]) -> str:
    text = "_b.str" if "str" in shadowed else "str"
    args = [f"{c.name}={c.type.decode(f'row[{json.dumps(c.name)}]')}" for c in table.columns]
    doc = f'A row of the realtime cache (``rt.table("{table.name}")``), typed.'
    return "\n".join(
        [
            "    @classmethod",
            f"    def from_row(cls, row: _abc.Mapping[{text}, _t.Any]) -> {table.class_name}:",
            docstring("        ", doc).rstrip(),
            bracketed("        ", "return cls(", args, ")"),
            "",
        ]
    )


def _iter_count(table: Table, iter_name: str, count_name: str, shadowed: Sequence[str]) -> str:
    integer = "_b.int" if "int" in shadowed else "int"
    return f'''    @classmethod
    def {iter_name}(cls, rt: _wire.Connection) -> _abc.Iterator[{table.class_name}]:
        """The cached rows (a snapshot)."""
        return (cls.from_row(row) for row in rt.table("{table.name}").iter())

    @classmethod
    def {count_name}(cls, rt: _wire.Connection) -> {integer}:
        """How many rows are cached."""
        return rt.table("{table.name}").count()
'''


def _find(table: Table, name: str, names: Sequence[str]) -> str:
    rt, found, cls = fresh("rt", names), fresh("found", names), fresh("cls", names)
    params = [f"{rt}: _wire.Connection"]
    params += [f"{k}: {table.column(k).type.annotation(argument=True)}" for k in table.key]
    values = [f"_wire.encode({k})" for k in table.key]
    call = f'{rt}.table("{table.name}").find('
    return "\n".join(
        [
            "    @classmethod",
            bracketed("    ", f"def {name}(", [cls, *params], f") -> {table.class_name} | None:"),
            docstring("        ", "The cached row with this primary key, or None.").rstrip(),
            bracketed("        ", f"{found} = {call}", values, ")"),
            f"        return None if {found} is None else {cls}.from_row({found})",
            "",
        ]
    )


def _filter(
    table: Table, group: Sequence[str], names: Sequence[str], shadowed: Sequence[str]
) -> str:
    rt, rows, cls = fresh("rt", names), fresh("rows", names), fresh("cls", names)
    params = [f"{rt}: _wire.Connection"]
    params += [f"{c}: {table.column(c).type.annotation(argument=True)}" for c in group]
    values = [f"{c}=_wire.encode({c})" for c in group]
    result = ("_b.list" if "list" in shadowed else "list") + f"[{table.class_name}]"
    method = fresh("filter_by_" + "_and_".join(group), names)
    doc = "The cached rows with these values (through the cache's index when it has one)."
    return "\n".join(
        [
            "    @classmethod",
            bracketed("    ", f"def {method}(", [cls, *params], f") -> {result}:"),
            docstring("        ", doc).rstrip(),
            bracketed("        ", f'{rows} = {rt}.table("{table.name}").filter_by(', values, ")"),
            f"        return [{cls}.from_row(row) for row in {rows}]",
            "",
        ]
    )


def _callback(table: Table, name: str, kind: str) -> str:
    op, present, signature, args = _CALLBACKS[kind]
    callback = f"_abc.Callable[{signature.format(row=table.class_name)}, object]"
    params = ["cls", "rt: _wire.Connection", f"callback: {callback}"]
    run = "def run(op: str, old: _rt.Row | None, new: _rt.Row | None, event: _rt.Event) -> None:"
    return "\n".join(
        [
            "    @classmethod",
            bracketed("    ", f"def {name}(", params, ") -> _rt.CallbackHandle:"),
            docstring("        ", _CALLBACK_DOCS[kind]),
            f"        {run}",
            f'            if op == "{op}" and {present} is not None:',
            f"                callback({args})",
            "",
            f'        return rt.table("{table.name}").on_row_update(run)',
            "",
        ]
    )


# -- reducers.py -------------------------------------------------------------------------

REDUCERS_DOC = '"""Calls of {db}\'s reducers and their callbacks (see the package\'s docstring)."""'
_CLIENTS = (
    ("Module", "Millpond", "mp", "", ""),
    ("AsyncModule", "AsyncMillpond", "amp", "async ", "await "),
)


def reducers_file(database: str, records: Sequence[Record], reducers: Sequence[Reducer]) -> str:
    constants = _default_constants(reducers)
    parts = [_module_class(database, reducers, *client) for client in _CLIENTS]
    parts += [_reducer_callback(r) for r in reducers]
    body = "\n\n".join(parts)
    used = sorted(r.class_name for r in records if re.search(rf"\b{r.class_name}\b", body))
    millpond = [
        "from millpond import client as _client",
        "from millpond.client import realtime as _rt",
        "from millpond.models import modules as _models",
    ]
    local = ["from . import _wire"]
    if used:
        local.append(from_import(".tables", used))
    top = imports(body + constants, ["\n".join(millpond), "\n".join(local)])
    if constants:
        top += f"\n{constants}\n"
    return f"{REDUCERS_DOC.format(db=database)}\n\n{top}\n\n{body}"


def default_name(reducer: Reducer, param: Field) -> str:
    """The constant holding a parameter's JSON default (one without a Python literal)."""
    return f"_DEFAULT_{reducer.name.upper()}_{param.name.upper()}"


def _default_constants(reducers: Sequence[Reducer]) -> str:
    lines = []
    for r in reducers:
        for p in r.params:
            if p.has_default and p.type.literal(p.default) is None:
                head = f"{default_name(r, p)}: _t.Any = "
                lines.append(head + py_literal(p.default, "", len(head)))
    return "\n".join(lines)


def _module_class(
    database: str, reducers: Sequence[Reducer], name: str, client: str, var: str, a: str, aw: str
) -> str:
    taken = [r.name for r in reducers]
    mp, db = fresh(var, taken), fresh("db", taken)
    article = "an" if a else "a"
    doc = f"The reducers of {database}'s module, called with {article} ``{client}`` client::"
    doc += f'\n\n    module = {name}({var}, "{database}")\n\nA method per reducer, of its name.'
    lines = [f"class {name}:", docstring("    ", doc)]
    lines += [
        f"    def __init__(self, {var}: _client.{client}, db: str) -> None:",
        f"        self.{mp} = {var}",
        f"        self.{db} = db",
        "",
    ]
    lines += [_method(r, mp, db, a, aw) for r in reducers]
    return "\n".join(lines).rstrip() + "\n"


def _method(reducer: Reducer, mp: str, db: str, a: str, aw: str) -> str:
    me = fresh("self", [p.name for p in reducer.params])
    params, values, notes = [me], [], []
    for p in reducer.params:
        annotation = p.type.annotation(argument=True)
        literal = p.type.literal(p.default) if p.has_default else None
        if p.has_default and literal is None:
            params.append(f"{p.name}: {annotation} | _wire.Default = _wire.DEFAULT")
            values.append(f"_wire.argument({p.name}, {default_name(reducer, p)})")
            notes.append(f"``{p.name}`` defaults to ``{json.dumps(p.default)}``.")
        else:
            params.append(f"{p.name}: {annotation}" + (f" = {literal}" if literal else ""))
            values.append(f"_wire.encode({p.name})")
    if reducer.private:
        notes.append("Private: only the database's owner and admins may call it.")
    doc = "\n\n".join(x for x in (reducer.doc.strip(), " ".join(notes)) if x)
    call = [f"{me}.{db}", json.dumps(reducer.name), *values]
    return "\n".join(
        [
            bracketed("    ", f"{a}def {reducer.name}(", params, ") -> _models.CallResult:"),
            docstring("        ", doc or f"Call ``{reducer.name}``.").rstrip(),
            bracketed("        ", f"return {aw}{me}.{mp}.call(", call, ")"),
            "",
        ]
    )


def _reducer_callback(reducer: Reducer) -> str:
    params = () if reducer.private else reducer.params
    kinds = ["_rt.Event", *(p.type.annotation() for p in params)]
    callable_ = f"_abc.Callable[[{', '.join(kinds)}], object]"
    if len(f"    callback: {callable_},") > WIDTH:
        inner = "".join(f"            {k},\n" for k in kinds)
        callable_ = f"_abc.Callable[\n        [\n{inner}        ],\n        object,\n    ]"
    head = ["rt: _wire.Connection", f"callback: {callable_}"]
    names = ", ".join(p.name for p in params)
    if reducer.private:
        doc = f"``callback(event)`` for each transaction ``{reducer.name}`` made (private: no "
        doc += "arguments in its events), after the row callbacks."
    else:
        doc = f"``callback(event{', ' if names else ''}{names})`` for each transaction "
        doc += f"``{reducer.name}`` made, after the row callbacks."
    lines = [
        bracketed("", f"def on_{reducer.name}(", head, ") -> _rt.CallbackHandle:"),
        docstring("    ", doc),
    ]
    if not params:
        lines.append(f'    return rt.on_reducer("{reducer.name}", callback)')
        return "\n".join(lines) + "\n"
    order = [json.dumps(p.name) for p in params]
    defaults = {p.name: p.default for p in params if p.has_default}
    args = ["event", *(p.type.decode(f"args[{json.dumps(p.name)}]") for p in params)]
    lines += [
        "    def run(event: _rt.Event) -> None:",
        bracketed(
            "        ",
            "args = _wire.bind(",
            ["event", tuple_literal("            ", order), py_literal(defaults, " " * 12, 12)],
            ")",
        ),
        bracketed("        ", "callback(", args, ")"),
        "",
        f'    return rt.on_reducer("{reducer.name}", run)',
    ]
    return "\n".join(lines) + "\n"


# -- the package -------------------------------------------------------------------------


def generate_python(schema: Mapping[str, Any], database: str) -> dict[str, str]:
    """The bindings of ``schema`` (``{"version", "definition"}``, as ``GET
    /v1/databases/{db}/module`` answers) of ``database``: relative path → file text."""
    definition = schema["definition"]
    top = header(schema, database)
    records = [Record.of(r) for r in definition.get("records", ())]
    tables = [Table.of(t) for t in definition.get("tables", ())]
    # lifecycle and scheduled reducers are run by the server, never called: no bindings
    reducers = [
        Reducer.of(r)
        for r in definition.get("reducers", ())
        if not r.get("lifecycle") and not r.get("scheduled")
    ]
    _check_names([r.class_name for r in records] + [t.class_name for t in tables])
    _check_records(records, tables, reducers)
    wire = resources.files(__package__).joinpath("_wire.py").read_text()
    return {
        "__init__.py": top + _package(database, schema["version"], records, tables, reducers),
        "_wire.py": top + wire,
        "tables.py": top + tables_file(database, records, tables),
        "reducers.py": top + reducers_file(database, records, reducers),
    }


def _check_records(
    records: Sequence[Record], tables: Sequence[Table], reducers: Sequence[Reducer]
) -> None:
    known = {r.class_name for r in records}
    fields = [f for r in records for f in r.fields] + [c for t in tables for c in t.columns]
    fields += [p for r in reducers for p in r.params]
    for field in fields:
        if field.type.record is not None and field.type.record not in known:
            raise GenerateError(f"{field.name}: unknown record type {field.type.record}")


def _check_names(names: Sequence[str]) -> None:
    for name in names:
        if name in ("Module", "AsyncModule") or names.count(name) > 1:
            raise GenerateError(f"two generated classes would be named {name}")


def _package(
    database: str,
    version: int,
    records: Sequence[Record],
    tables: Sequence[Table],
    reducers: Sequence[Reducer],
) -> str:
    classes = sorted([*(r.class_name for r in records), *(t.class_name for t in tables)])
    callbacks = sorted(f"on_{r.name}" for r in reducers)
    names = ["DEFAULT", "AsyncModule", "Connection", "Identity", "Module", *classes, *callbacks]
    lines = [
        docstring("", PACKAGE_DOC.format(db=database, version=version)),
        "from ._wire import DEFAULT, Connection, Identity",
        from_import(".reducers", ["AsyncModule", "Module", *callbacks]),
    ]
    if classes:
        lines.append(from_import(".tables", classes))
    all_ = bracketed("", "__all__ = [", [json.dumps(n) for n in sort_all(names)], "]", True)
    return "\n".join(lines) + "\n\n" + all_ + "\n"


def sort_all(names: Iterable[str]) -> list[str]:
    """``__all__``'s order (ruff RUF022): constants, classes, then the rest."""

    def key(name: str) -> tuple[int, str]:
        kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
        return kind, name

    return sorted(set(names), key=key)


PACKAGE_DOC = """Typed bindings of the module of {db} (version {version}), generated by
``millpond generate``: regenerate them after publishing a new version.

- ``tables``: a frozen dataclass per table (``from_row(row)`` converts a cached row) with
  typed reads of a realtime connection's cache: ``Table.iter(rt)``, ``Table.count(rt)``,
  ``Table.find(rt, *key)`` (the primary key) and ``Table.filter_by_<columns>(rt, ...)`` for
  each index and unique constraint; and typed row callbacks ``Table.on_insert(rt,
  cb(row, event))``, ``on_delete`` and ``on_update(rt, cb(old, new, event))``, each
  returning the SDK's ``CallbackHandle``. Records are frozen dataclasses too.
- ``reducers``: ``Module(mp, db)`` (a ``Millpond`` client) and ``AsyncModule(amp, db)`` (an
  ``AsyncMillpond``) have one method per reducer, with its typed parameters and defaults
  (``DEFAULT`` for a JSON or record default); each returns the ``CallResult`` of a
  committed call and raises ``ReducerError`` for one that did not commit.
  ``on_<reducer>(rt, cb)`` runs ``cb(event, *arguments)`` for each transaction the reducer
  made, its arguments decoded (a private reducer's events have none: ``cb(event)``).

Values are Python's: ``int``, ``float``, ``Decimal``, ``str``, ``bool``, ``bytes``, aware
``datetime``, ``date``, ``UUID``, ``Identity`` (a ``str``), records, ``list``. A name that
clashes with a generated method gets a trailing underscore (``count_``). Example::

    with Millpond() as mp, mp.realtime("{db}") as rt:
        module = Module(mp, "{db}")
        rt.subscribe(["SELECT * FROM some_table"])
        SomeTable.on_insert(rt, lambda row, event: print(row))
        module.some_reducer(...)
        rt.update(1.0)
"""
