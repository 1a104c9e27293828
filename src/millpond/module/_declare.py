"""The decorators a module declares itself with, and the registry they fill.

Importing a module's source runs its decorators; :func:`collect` then turns what they
registered into a :class:`ModuleDef`. Declarations are checked as they are made, so a
mistake is reported with the name of the table, column or reducer at fault.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import re
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from . import _values
from ._def import (
    ColumnDef,
    IndexDef,
    ModuleDef,
    ParamDef,
    RecordDef,
    ReducerDef,
    TableDef,
    TypeRef,
)
from ._types import RECORD_MARK, type_ref

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

TABLE_MARK = "__millpond_table__"
DEFAULT_KEY = "millpond_default"
"""Field metadata holding a list or dict default (the field itself has a factory)."""
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_RESERVED_PREFIXES = ("pg_", "millpond")
ISOLATIONS = ("serializable", "read_committed")


class DeclarationError(Exception):
    """A module declares something millpond cannot build: the message names it."""


@dataclass(frozen=True)
class _ColumnOptions:
    primary_key: bool = False
    auto_inc: bool = False
    unique: bool = False
    index: bool = False


@dataclass
class Registry:
    """What the decorators registered while one module was imported."""

    tables: list[type] = dataclasses.field(default_factory=list)
    records: list[type] = dataclasses.field(default_factory=list)
    reducers: dict[str, tuple[ReducerDef, Callable[..., Any]]] = dataclasses.field(
        default_factory=dict
    )
    init: Callable[..., Any] | None = None


REGISTRY = Registry()


def reset() -> Registry:
    """Start a new registry (before importing a module); the one that was filling."""
    global REGISTRY
    old, REGISTRY = REGISTRY, Registry()
    return old


# -- columns ---------------------------------------------------------------------------


def column(
    default: Any = dataclasses.MISSING,
    *,
    primary_key: bool = False,
    auto_inc: bool = False,
    unique: bool = False,
    index: bool = False,
) -> Any:
    """Options of one column: ``id: int = column(primary_key=True, auto_inc=True)``.
    An ``auto_inc`` column is assigned by Postgres when a row is inserted with 0 (its
    default)."""
    if auto_inc and default is dataclasses.MISSING:
        default = 0
    options = _ColumnOptions(primary_key, auto_inc, unique, index)
    if isinstance(default, list | dict):  # each row gets its own copy
        factory = functools.partial(copy.deepcopy, default)
        metadata = {"millpond": options, DEFAULT_KEY: default}
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata={"millpond": options})


def primary_key(*, auto_inc: bool = False) -> Any:
    return column(primary_key=True, auto_inc=auto_inc)


def unique(default: Any = dataclasses.MISSING) -> Any:
    return column(default, unique=True)


def index(default: Any = dataclasses.MISSING) -> Any:
    return column(default, index=True)


# -- tables and records ----------------------------------------------------------------


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])|(?<=[A-Z])([A-Z])(?=[a-z])", r"_\1\2", name).lower()


def _check_name(name: str, what: str) -> None:
    if not _NAME.fullmatch(name) or name.startswith(_RESERVED_PREFIXES):
        raise DeclarationError(
            f"{what} {name!r}: use lowercase letters, digits and _ (at most 63, not "
            "starting with a digit, pg_ or millpond)"
        )


def table(
    cls: type[T] | None = None,
    *,
    name: str | None = None,
    public: bool = False,
    primary_key: Iterable[str] | None = None,
    unique: Iterable[Iterable[str]] = (),
    indexes: Iterable[Iterable[str]] = (),
    visible_if: str | None = None,
    scheduled: str | Callable[..., Any] | None = None,
) -> Any:
    """Declare a table: ``@table(public=True) class Message: ...``. The class becomes a
    keyword-only dataclass whose instances are the table's rows. ``primary_key`` names a
    composite key (otherwise one column is marked ``primary_key()``); ``unique`` and
    ``indexes`` list column groups. Private tables (the default) are readable by the
    database's owner and the module only.

    ``scheduled="reducer"`` makes it a schedule table: each row calls that reducer (with
    the row) when its ``scheduled_at: ScheduleAt`` is due; its key is ``scheduled_id: int =
    primary_key(auto_inc=True)``. See docs/modules.md, "Scheduled reducers".

    ``visible_if="owner = :sender"`` (public tables): readers see only the rows for which
    this SQL condition over the columns holds, ``:sender`` being their identity; Postgres
    enforces it (row-level security) on every path. See docs/modules.md, "Row
    visibility"."""

    def declare(cls: type[T]) -> type[T]:
        row_cls = _dataclass(cls, f"table {cls.__name__}")
        definition = _table_def(
            row_cls, name or snake_case(cls.__name__), public, primary_key, unique, indexes
        )
        if scheduled is not None:
            definition = _schedule_table(definition, scheduled)
        if visible_if is not None:
            check_visible_if(definition.name, definition.public, visible_if)
            definition = dataclasses.replace(definition, visible_if=visible_if)
        setattr(row_cls, TABLE_MARK, definition)
        REGISTRY.tables.append(row_cls)
        return row_cls

    return declare(cls) if cls is not None else declare


def _table_def(
    cls: type,
    name: str,
    public: bool,
    key: Iterable[str] | None,
    unique_groups: Iterable[Iterable[str]],
    index_groups: Iterable[Iterable[str]],
) -> TableDef:
    _check_name(name, "table")
    hints = _hints(cls, f"table {name}")
    columns: list[ColumnDef] = []
    keys, uniques, indexed = [], [], []
    for f in dataclasses.fields(cls):
        where = f"table {name}, column {f.name}"
        _check_name(f.name, f"{where}:")
        options: _ColumnOptions = f.metadata.get("millpond", _ColumnOptions())
        ref = _type_ref(hints[f.name], where)
        if options.auto_inc and (ref.name not in ("int2", "int4", "int8") or ref.array):
            raise DeclarationError(f"{where}: auto_inc needs an integer column")
        default, has_default = _default(f, ref, where)
        columns.append(ColumnDef(f.name, ref, options.auto_inc, default, has_default))
        if options.primary_key:
            keys.append(f.name)
        if options.unique:
            uniques.append((f.name,))
        if options.index:
            indexed.append((f.name,))
    names = {c.name for c in columns}
    if key is not None:
        if keys:
            raise DeclarationError(f"table {name}: primary key given twice")
        keys = list(key)
    if not keys:
        raise DeclarationError(f"table {name}: declare a primary key (primary_key())")
    if len(keys) > 1 and key is None:
        raise DeclarationError(
            f"table {name}: several primary_key() columns; a composite key is "
            "@table(primary_key=(...))"
        )
    groups = [tuple(keys), *uniques, *map(tuple, unique_groups), *indexed]
    groups += [tuple(g) for g in index_groups]
    for group in groups:
        unknown = [c for c in group if c not in names]
        if unknown or not group or len(set(group)) != len(group):
            raise DeclarationError(f"table {name}: bad column list {list(group)}")
    index_defs = tuple(
        IndexDef(f"{name}_{'_'.join(g)}_idx"[:63], tuple(g))
        for g in dict.fromkeys([*indexed, *map(tuple, index_groups)])
    )
    return TableDef(
        name=name,
        class_name=cls.__name__,
        columns=tuple(columns),
        primary_key=tuple(keys),
        public=public,
        unique=tuple(dict.fromkeys([*uniques, *(tuple(g) for g in unique_groups)])),
        indexes=index_defs,
    )


SCHEDULE_KEY = "scheduled_id"
SCHEDULE_AT = "scheduled_at"


def _schedule_table(table: TableDef, reducer: str | Callable[..., Any]) -> TableDef:
    name = reducer if isinstance(reducer, str) else getattr(reducer, "__name__", "")
    where = f"table {table.name} (scheduled={name!r})"
    _check_name(name, f"{where}: reducer")
    key = [c for c in table.columns if c.name == SCHEDULE_KEY]
    if table.primary_key != (SCHEDULE_KEY,) or not key[0].auto_inc:
        raise DeclarationError(
            f"{where}: a schedule table's key is {SCHEDULE_KEY}: int = primary_key(auto_inc=True)"
        )
    at = [c for c in table.columns if c.name == SCHEDULE_AT]
    if not at or at[0].type != TypeRef("schedule_at"):
        raise DeclarationError(f"{where}: declare {SCHEDULE_AT}: ScheduleAt")
    if any(c.type.name == "schedule_at" for c in table.columns if c.name != SCHEDULE_AT):
        raise DeclarationError(f"{where}: only {SCHEDULE_AT} is a ScheduleAt")
    return dataclasses.replace(table, scheduled=name)


VISIBLE_IF_PLACEHOLDER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
"""``:name`` in a ``visible_if`` (not ``::type``, not ``a[1:n]``): only ``:sender``."""


def check_visible_if(table_name: str, public: bool, expression: object) -> None:
    """A row visibility rule is SQL over the table's columns (Postgres checks it when the
    module is published), on a public table, with ``:sender`` its only placeholder."""
    where = f"table {table_name}: visible_if"
    if not public:
        raise DeclarationError(
            f"{where} is for public tables (public=True): a private one is the owner's"
            " and the module's only"
        )
    if not isinstance(expression, str) or not expression.strip() or "\x00" in expression:
        raise DeclarationError(f"{where}: an SQL condition over its columns, as a string")
    names = {m.group(1) for m in VISIBLE_IF_PLACEHOLDER.finditer(expression)} - {"sender"}
    if names:
        raise DeclarationError(f"{where}: unknown placeholder :{min(names)} (only :sender)")


def record(cls: type[T]) -> type[T]:
    """Declare a record type used as an argument or a column (stored as ``jsonb``)."""
    record_cls = _dataclass(cls, f"record {cls.__name__}")
    setattr(record_cls, RECORD_MARK, True)
    REGISTRY.records.append(record_cls)
    return record_cls


def _dataclass(cls: type[T], where: str) -> type[T]:
    try:
        return dataclasses.dataclass(kw_only=True)(cls)
    except (TypeError, ValueError) as exc:  # e.g. a mutable default
        raise DeclarationError(f"{where}: {exc} (or use column(default=[...]))") from None


def _hints(obj: Any, where: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except NameError as exc:
        raise DeclarationError(f"{where}: a type hint cannot be resolved ({exc})") from None


def _type_ref(hint: Any, where: str) -> Any:
    try:
        return type_ref(hint, where)
    except TypeError as exc:
        raise DeclarationError(str(exc)) from None


def _default(f: dataclasses.Field[Any], ref: TypeRef, where: str) -> tuple[Any, bool]:
    if DEFAULT_KEY in f.metadata:
        return _json_default(f.metadata[DEFAULT_KEY], ref, where), True
    if f.default is dataclasses.MISSING:
        return None, False
    return _json_default(f.default, ref, where), True


def _json_default(value: Any, ref: TypeRef, where: str) -> Any:
    """The JSON form of a declared default, checked against its type (record defaults
    are checked when the module is collected)."""
    try:
        converted = _values.to_json(value)
        if ref.record is None:
            _values.from_json(converted, ref, ModuleDef())
    except (TypeError, _values.ArgumentError) as exc:
        raise DeclarationError(f"{where}: bad default {value!r} ({exc})") from None
    return converted


# -- reducers --------------------------------------------------------------------------


def reducer(
    fn: F | None = None,
    *,
    name: str | None = None,
    private: bool = False,
    isolation: str = "serializable",
) -> Any:
    """Declare a reducer: ``@reducer def send_message(ctx: ReducerContext, text: str)``.
    One call is one Postgres transaction; arguments are checked against the type hints
    before it starts. ``private=True``: only the owner and admins may call it, and its
    arguments stay out of the events subscribers see."""

    def declare(fn: F) -> F:
        reducer_name = name or fn.__name__
        _check_name(reducer_name, "reducer")
        if isolation not in ISOLATIONS:
            raise DeclarationError(f"reducer {reducer_name}: isolation is one of {ISOLATIONS}")
        if reducer_name in REGISTRY.reducers:
            raise DeclarationError(f"reducer {reducer_name} is declared twice")
        params = _params(fn, f"reducer {reducer_name}")
        doc = inspect.getdoc(fn) or ""
        definition = ReducerDef(reducer_name, params, private, isolation, doc)
        REGISTRY.reducers[reducer_name] = (definition, fn)
        return fn

    return declare(fn) if fn is not None else declare


LIFECYCLE = ("client_connected", "client_disconnected")


def _lifecycle(kind: str, fn: F) -> F:
    reducer_name = fn.__name__
    _check_name(reducer_name, "reducer")
    if any(d.lifecycle == kind for d, _ in REGISTRY.reducers.values()):
        raise DeclarationError(f"@{kind} is declared twice")
    if reducer_name in REGISTRY.reducers:
        raise DeclarationError(f"reducer {reducer_name} is declared twice")
    if _params(fn, f"@{kind} {reducer_name}"):
        raise DeclarationError(f"@{kind} {reducer_name}: it takes the context (ctx) only")
    doc = inspect.getdoc(fn) or ""
    definition = ReducerDef(reducer_name, (), True, "serializable", doc, kind)
    REGISTRY.reducers[reducer_name] = (definition, fn)
    return fn


def client_connected(fn: F) -> F:
    """Declare the reducer run, in its own transaction, when a realtime connection to the
    database opens (``def on_connect(ctx: ReducerContext) -> None``; ``ctx.sender`` and
    ``ctx.connection_id`` name it). Raising ``SenderError`` refuses the connection with
    its message."""
    return _lifecycle("client_connected", fn)


def client_disconnected(fn: F) -> F:
    """Declare the reducer run when a realtime connection ends, for any reason (closed,
    lost, timed out, the server stopped or died): once per connection, by whichever server
    notices first."""
    return _lifecycle("client_disconnected", fn)


def init(fn: F) -> F:
    """Declare the function run once, in the transaction of the module's first publish
    (``def init(ctx: ReducerContext) -> None``); if it fails, the publish fails."""
    if REGISTRY.init is not None:
        raise DeclarationError("@init is declared twice")
    _params(fn, "init")
    REGISTRY.init = fn
    return fn


def _params(fn: Callable[..., Any], where: str) -> tuple[ParamDef, ...]:
    signature = inspect.signature(fn)
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise DeclarationError(f"{where}: the first parameter is the context (ctx)")
    hints = _hints(fn, where)
    params: list[ParamDef] = []
    for p in parameters[1:]:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise DeclarationError(f"{where}: *args and **kwargs are not supported")
        if p.name not in hints:
            raise DeclarationError(f"{where}: parameter {p.name} needs a type hint")
        table_def = getattr(hints[p.name], TABLE_MARK, None)
        if isinstance(table_def, TableDef):  # a scheduled reducer's row (checked in collect)
            params.append(ParamDef(p.name, TypeRef("jsonb", record=f"table:{table_def.name}")))
            continue
        ref = _type_ref(hints[p.name], f"{where}, parameter {p.name}")
        if p.default is inspect.Parameter.empty:
            params.append(ParamDef(p.name, ref))
        else:
            default = _json_default(p.default, ref, f"{where}, parameter {p.name}")
            params.append(ParamDef(p.name, ref, default, True))
    return tuple(params)


# -- the whole module ------------------------------------------------------------------


def _field(f: dataclasses.Field[Any], hint: Any, where: str) -> ParamDef:
    ref = _type_ref(hint, where)
    default, has_default = _default(f, ref, where)
    return ParamDef(f.name, ref, default, has_default)


def _link_schedules(tables: list[TableDef], reducers: list[ReducerDef]) -> list[ReducerDef]:
    """Mark each schedule table's reducer, checking it takes exactly that table's row;
    a row parameter anywhere else is refused."""
    by_reducer = {t.scheduled: t for t in tables if t.scheduled is not None}
    linked = []
    for definition in reducers:
        table_def = by_reducer.pop(definition.name, None)
        rows = [p for p in definition.params if (p.type.record or "").startswith("table:")]
        if table_def is None:
            if rows:
                raise DeclarationError(
                    f"reducer {definition.name}: parameter {rows[0].name} is a table row;"
                    " only a schedule table's reducer takes one (@table(scheduled=...))"
                )
            linked.append(definition)
            continue
        where = f"reducer {definition.name} (scheduled by table {table_def.name})"
        if definition.lifecycle is not None or len(definition.params) != 1 or not rows:
            raise DeclarationError(
                f"{where}: it takes the context and one {table_def.class_name} row"
            )
        if rows[0].type.record != f"table:{table_def.name}":
            raise DeclarationError(f"{where}: its parameter is a {table_def.class_name} row")
        linked.append(dataclasses.replace(definition, scheduled=table_def.name))
    for name, table_def in by_reducer.items():
        raise DeclarationError(f"table {table_def.name}: scheduled={name!r}, no such @reducer")
    return linked


def collect(registry: Registry) -> ModuleDef:
    """The :class:`ModuleDef` of what ``registry`` holds."""
    tables = [getattr(cls, TABLE_MARK) for cls in registry.tables]
    seen: set[str] = set()
    for t in tables:
        if t.name in seen:
            raise DeclarationError(f"table {t.name} is declared twice")
        seen.add(t.name)
    records: list[RecordDef] = []
    for cls in registry.records:
        if any(r.name == cls.__name__ for r in records):
            raise DeclarationError(f"record {cls.__name__} is declared twice")
        hints = _hints(cls, f"record {cls.__name__}")
        fields = tuple(
            _field(f, hints[f.name], f"record {cls.__name__}, field {f.name}")
            for f in dataclasses.fields(cls)
        )
        records.append(RecordDef(cls.__name__, fields))
    init_name = registry.init.__name__ if registry.init is not None else None
    reducers = _link_schedules(tables, [d for d, _ in registry.reducers.values()])
    for linked in reducers:  # the worker runs reducers by their registered definitions
        registry.reducers[linked.name] = (linked, registry.reducers[linked.name][1])
    return ModuleDef(
        tables=tuple(tables),
        reducers=tuple(reducers),
        records=tuple(records),
        init=init_name,
    )
