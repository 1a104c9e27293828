"""The module definition: what a published module declares, as plain data.

A :class:`ModuleDef` is extracted by importing the module's source in a worker (the server
never imports user code) and stored as JSON with each published version; the migration
planner, argument validation, ``generate`` and the worker's table access all read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT = 1
"""Version of the JSON shape below; stored with every published module version."""

SCALARS = (
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "numeric",
    "text",
    "bool",
    "bytea",
    "timestamptz",
    "date",
    "uuid",
    "jsonb",
    "identity",
    "schedule_at",
)
"""Column and argument types. ``identity`` is stored as ``text`` (64 lowercase hex digits,
checked by a constraint); a record type and ``schedule_at`` (the ``scheduled_at`` column of a
schedule table) are stored as ``jsonb``."""


@dataclass(frozen=True)
class TypeRef:
    """One column's or argument's type: a scalar from :data:`SCALARS`, maybe an array of
    it, maybe nullable; or a record declared in the module (``record`` names it, ``name``
    is ``"jsonb"``)."""

    name: str
    nullable: bool = False
    array: bool = False
    record: str | None = None


@dataclass(frozen=True)
class ColumnDef:
    name: str
    type: TypeRef
    auto_inc: bool = False
    default: Any = None
    """A JSON value (converted like an argument), used for new rows and for the column when
    a migration appends it; ``has_default`` says whether there is one (``None`` is a valid
    default of a nullable column)."""
    has_default: bool = False


@dataclass(frozen=True)
class IndexDef:
    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class TableDef:
    name: str
    """The Postgres table's name and the accessor on ``ctx.db`` (snake_case of the class)."""
    class_name: str
    columns: tuple[ColumnDef, ...]
    primary_key: tuple[str, ...]
    public: bool = False
    unique: tuple[tuple[str, ...], ...] = ()
    indexes: tuple[IndexDef, ...] = ()
    visible_if: str | None = None
    """A public table's row visibility rule: SQL over its columns, ``:sender`` the
    caller's identity; enforced by row-level security (server/modules/row_visibility.py)."""
    scheduled: str | None = None
    """A schedule table: the reducer each row calls when its ``scheduled_at`` is due."""

    def column(self, name: str) -> ColumnDef:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


@dataclass(frozen=True)
class ParamDef:
    name: str
    type: TypeRef
    default: Any = None
    has_default: bool = False


@dataclass(frozen=True)
class ReducerDef:
    name: str
    params: tuple[ParamDef, ...]
    private: bool = False
    """Private reducers are callable by the database's owner and admins only, and their
    arguments are left out of the events subscribers receive."""
    isolation: str = "serializable"
    """``serializable`` (serialization failures retried with the same context) or
    ``read_committed``."""
    doc: str = ""
    lifecycle: str | None = None
    """``client_connected`` or ``client_disconnected``: run by the server when a realtime
    connection opens or ends, never called by clients."""
    scheduled: str | None = None
    """The schedule table whose due rows this reducer is run with (its one argument is the
    row); run by the server, never called by clients."""


@dataclass(frozen=True)
class RecordDef:
    name: str
    fields: tuple[ParamDef, ...]


@dataclass(frozen=True)
class ModuleDef:
    tables: tuple[TableDef, ...] = ()
    reducers: tuple[ReducerDef, ...] = ()
    records: tuple[RecordDef, ...] = ()
    init: str | None = None
    """Name of the ``@init`` function, run once in the transaction of the first publish."""
    format: int = field(default=FORMAT)

    def table(self, name: str) -> TableDef:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)

    def reducer(self, name: str) -> ReducerDef:
        for reducer in self.reducers:
            if reducer.name == name:
                return reducer
        raise KeyError(name)

    def lifecycle(self, kind: str) -> ReducerDef | None:
        """The reducer run at ``client_connected`` or ``client_disconnected``, if any."""
        for reducer in self.reducers:
            if reducer.lifecycle == kind:
                return reducer
        return None

    @property
    def tracks_connections(self) -> bool:
        """Whether realtime connections are recorded (``millpond_connections``) so that
        every one gets its ``client_disconnected``, even after a crash."""
        return any(r.lifecycle is not None for r in self.reducers)

    @property
    def schedule_tables(self) -> tuple[TableDef, ...]:
        """The tables whose rows schedule reducer runs (``@table(scheduled=...)``)."""
        return tuple(t for t in self.tables if t.scheduled is not None)

    def record(self, name: str) -> RecordDef:
        for record in self.records:
            if record.name == name:
                return record
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModuleDef:
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown module definition format {data.get('format')!r}")
        return cls(
            tables=tuple(_table(t) for t in data.get("tables", ())),
            reducers=tuple(_reducer(r) for r in data.get("reducers", ())),
            records=tuple(
                RecordDef(r["name"], tuple(_param(p) for p in r["fields"]))
                for r in data.get("records", ())
            ),
            init=data.get("init"),
        )


def _type(data: dict[str, Any]) -> TypeRef:
    return TypeRef(data["name"], data["nullable"], data["array"], data.get("record"))


def _param(data: dict[str, Any]) -> ParamDef:
    return ParamDef(data["name"], _type(data["type"]), data.get("default"), data["has_default"])


def _table(data: dict[str, Any]) -> TableDef:
    return TableDef(
        name=data["name"],
        class_name=data["class_name"],
        columns=tuple(
            ColumnDef(
                c["name"], _type(c["type"]), c["auto_inc"], c.get("default"), c["has_default"]
            )
            for c in data["columns"]
        ),
        primary_key=tuple(data["primary_key"]),
        public=data["public"],
        unique=tuple(tuple(u) for u in data["unique"]),
        indexes=tuple(IndexDef(i["name"], tuple(i["columns"])) for i in data["indexes"]),
        visible_if=data.get("visible_if"),
        scheduled=data.get("scheduled"),
    )


def _reducer(data: dict[str, Any]) -> ReducerDef:
    return ReducerDef(
        name=data["name"],
        params=tuple(_param(p) for p in data["params"]),
        private=data["private"],
        isolation=data["isolation"],
        doc=data.get("doc", ""),
        lifecycle=data.get("lifecycle"),
        scheduled=data.get("scheduled"),
    )
