"""The migration plan between two versions of a module: what changes, which changes may
lose data, and the DDL that makes the change (run in the publish transaction).

Additive: new tables, new columns appended with a default or nullable, new indexes, new
unique constraints and NOT NULL on a nullable column (these two may fail on existing
rows), dropped unique constraints, changed defaults and ``auto_inc``. Destructive (the
publisher must pass the flag; the plan still carries the statements): dropping a table,
a column or an index, changing a column's type or the primary key, a new NOT NULL
column without a default (fails unless the table is empty), reordering columns (Postgres
keeps the old physical order; no statements). Visibility (``public``, ``private``) and
reducer changes are steps without statements: grants are the caller's. So are row
visibility rules (``visible_if``), made again by every publish (``row_visibility``); a
rule removed is a step that drops its policies and turns row-level security off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from psycopg import sql

from millpond.module._def import ColumnDef, ModuleDef, TableDef, TypeRef

from . import row_visibility, schema
from .schema import qualified


@dataclass
class Step:
    kind: str
    """``create_table``, ``drop_table``, ``add_column``, ``drop_column``, ``change_type``,
    ``set_not_null``, ``drop_not_null``, ``change_default``, ``change_auto_inc``,
    ``reorder_columns``, ``change_key``, ``add_unique``, ``drop_unique``, ``add_index``,
    ``drop_index``, ``change_visibility``, ``change_visible_if``, ``add_reducer``, ``drop_reducer``,
    ``change_reducer``."""
    description: str
    """One line of :meth:`Plan.diff_text`."""
    destructive: bool = False
    statements: list[sql.Composed] = field(default_factory=list)
    may_fail: bool = False
    """The statements may fail on existing rows (a new unique constraint, NOT NULL)."""


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)

    @property
    def destructive(self) -> bool:
        return any(s.destructive for s in self.steps)

    @property
    def statements(self) -> list[sql.Composed]:
        return [st for s in self.steps for st in s.statements]

    def diff_text(self) -> str:
        """The plan for the publisher, one line per step (``+`` added, ``-`` removed,
        ``~`` changed)."""
        return "\n".join(s.description for s in self.steps)


def plan(old: ModuleDef | None, new: ModuleDef) -> Plan:
    """The steps from ``old`` (None: nothing published yet) to ``new``, in an order the
    statements can run in."""
    schema.check_module(new)
    before = old if old is not None else ModuleDef()
    steps: list[Step] = []
    old_tables = {t.name: t for t in before.tables}
    new_names = {t.name for t in new.tables}
    for name, table in old_tables.items():
        if name not in new_names:
            steps.append(_drop_table(table))
    for table in new.tables:
        if table.name in old_tables:
            steps += _table_steps(old_tables[table.name], table, new)
        else:
            steps.append(_create_table(table, new))
    steps += _reducer_steps(before, new)
    return Plan(steps)


def _create_table(table: TableDef, module: ModuleDef) -> Step:
    line = f"+ table {table.name}"
    if table.visible_if is not None:
        line += f" visible_if {_rule(table.visible_if)}"
    return Step("create_table", line, statements=schema.table_statements(table, module))


def _drop_table(table: TableDef) -> Step:
    statement = sql.SQL("DROP TABLE {}").format(qualified(table.name))
    return Step("drop_table", f"- table {table.name} (destructive: drops data)", True, [statement])


def _table_steps(old: TableDef, new: TableDef, module: ModuleDef) -> list[Step]:
    steps = [*_drop_index_steps(old, new), *_drop_unique_steps(old, new)]
    kept = [c for c in old.columns if c.name in {n.name for n in new.columns}]
    steps += [_drop_column(new, c) for c in old.columns if c not in kept]
    for column in kept:
        steps += _column_steps(new, column, new.column(column.name), module)
    old_names = {c.name for c in old.columns}
    steps += [_add_column(new, c, module) for c in new.columns if c.name not in old_names]
    steps += _order_steps(old, new)
    if old.primary_key != new.primary_key:
        steps.append(_change_key(old, new))
    steps += _add_unique_steps(old, new)
    steps += _add_index_steps(old, new)
    if old.public != new.public:
        change = f"{_visibility(old.public)} -> {_visibility(new.public)}"
        steps.append(Step("change_visibility", f"~ table {new.name} {change}"))
    if old.visible_if != new.visible_if:
        steps.append(_change_visible_if(new.name, old.visible_if, new.visible_if))
    return steps


def _change_visible_if(table: str, old: str | None, new: str | None) -> Step:
    line = f"~ table {table} visible_if {_rule(old)} -> {_rule(new)}"
    statements = row_visibility.drop_statements(table) if new is None else []
    return Step("change_visible_if", line, statements=statements)


def _rule(expression: str | None) -> str:
    return "none" if expression is None else json.dumps(expression)


def _visibility(public: bool) -> str:
    return "public" if public else "private"


def _alter(table: TableDef, action: sql.Composable) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} {}").format(qualified(table.name), action)


# -- columns ---------------------------------------------------------------------------


def _type_text(ref: TypeRef) -> str:
    name = ref.record if ref.record is not None else ref.name
    return name + ("[]" if ref.array else "") + (" NULL" if ref.nullable else "")


def _column_text(column: ColumnDef) -> str:
    text = _type_text(column.type)
    if column.auto_inc:
        text += " auto_inc"
    elif column.has_default:
        text += f" DEFAULT {json.dumps(column.default)}"
    return text


def _add_column(table: TableDef, column: ColumnDef, module: ModuleDef) -> Step:
    definition = schema.column_definition(table, column, module)
    statement = _alter(table, sql.SQL("ADD COLUMN {}").format(definition))
    line = f"+ {table.name}.{column.name} {_column_text(column)}"
    if column.type.nullable or column.has_default:
        return Step("add_column", line, statements=[statement])
    line += " (destructive: NOT NULL without a default, fails unless the table is empty)"
    return Step("add_column", line, True, [statement])


def _drop_column(table: TableDef, column: ColumnDef) -> Step:
    statement = _alter(table, sql.SQL("DROP COLUMN {}").format(sql.Identifier(column.name)))
    line = f"- {table.name}.{column.name} (destructive: drops data)"
    return Step("drop_column", line, True, [statement])


def _column_steps(table: TableDef, old: ColumnDef, new: ColumnDef, module: ModuleDef) -> list[Step]:
    where = f"{table.name}.{new.name}"
    kind_of = (old.type.name, old.type.array, old.type.record)
    if kind_of != (new.type.name, new.type.array, new.type.record):
        return [_change_type(table, old, new, module)]
    steps = []
    if old.type.nullable and not new.type.nullable:
        action = sql.SQL("ALTER COLUMN {} SET NOT NULL").format(sql.Identifier(new.name))
        line = f"~ {where} NULL -> NOT NULL (may fail on existing rows)"
        steps.append(Step("set_not_null", line, statements=[_alter(table, action)], may_fail=True))
    elif new.type.nullable and not old.type.nullable:
        action = sql.SQL("ALTER COLUMN {} DROP NOT NULL").format(sql.Identifier(new.name))
        steps.append(
            Step("drop_not_null", f"~ {where} NOT NULL -> NULL", statements=[_alter(table, action)])
        )
    if old.auto_inc != new.auto_inc:
        steps.append(_change_auto_inc(table, old, new))
    if _default_of(old) != _default_of(new) and not new.auto_inc:
        steps.append(_change_default(table, old, new, module))
    return steps


def _default_of(column: ColumnDef) -> tuple[bool, str]:
    if column.auto_inc or not column.has_default:
        return (False, "")
    return (True, json.dumps(column.default, sort_keys=True))


def _change_default(table: TableDef, old: ColumnDef, new: ColumnDef, module: ModuleDef) -> Step:
    expression = schema.default_expression(table, new, module)
    col = sql.Identifier(new.name)
    if expression is None:
        action = sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(col)
    else:
        action = sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(col, expression)
    before = json.dumps(old.default) if old.has_default and not old.auto_inc else "none"
    after = json.dumps(new.default) if new.has_default else "none"
    line = f"~ {table.name}.{new.name} DEFAULT {before} -> {after}"
    return Step("change_default", line, statements=[_alter(table, action)])


def _change_auto_inc(table: TableDef, old: ColumnDef, new: ColumnDef) -> Step:
    col = sql.Identifier(new.name)
    line = f"~ {table.name}.{new.name} auto_inc {str(old.auto_inc).lower()} -> "
    line += str(new.auto_inc).lower()
    if not new.auto_inc:
        statements = [_alter(table, sql.SQL("ALTER COLUMN {} DROP IDENTITY").format(col))]
        return Step("change_auto_inc", line, statements=statements)
    statements = [
        _alter(table, sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(col)),
        _alter(table, sql.SQL("ALTER COLUMN {} ADD GENERATED BY DEFAULT AS IDENTITY").format(col)),
        _restart_identity(table, new.name),
    ]
    return Step("change_auto_inc", line, statements=statements)


def _restart_identity(table: TableDef, column: str) -> sql.Composed:
    """Start the new identity after the largest value already in the column."""
    return sql.SQL(
        "SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence("
        "pg_catalog.quote_ident({s}) || '.' || pg_catalog.quote_ident({t}), {c}),"
        " coalesce(max({col}), 0) + 1, false)"
        " FROM {table}"
    ).format(
        s=sql.Literal(schema.SCHEMA),
        t=sql.Literal(table.name),
        c=sql.Literal(column),
        col=sql.Identifier(column),
        table=qualified(table.name),
    )


def _change_type(table: TableDef, old: ColumnDef, new: ColumnDef, module: ModuleDef) -> Step:
    col = sql.Identifier(new.name)
    statements = []
    if old.type.name == "identity":
        check = sql.Identifier(schema.check_name(table.name, old.name))
        statements.append(_alter(table, sql.SQL("DROP CONSTRAINT IF EXISTS {}").format(check)))
    if old.auto_inc:
        statements.append(_alter(table, sql.SQL("ALTER COLUMN {} DROP IDENTITY").format(col)))
    statements.append(_alter(table, sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(col)))
    new_type = schema.column_type(new.type)
    statements.append(
        _alter(
            table,
            sql.SQL("ALTER COLUMN {c} TYPE {t} USING {c}::{t}").format(c=col, t=new_type),
        )
    )
    statements += _column_constraints(table, new, module)
    line = f"~ {table.name}.{new.name} {_type_text(old.type)} -> {_type_text(new.type)}"
    return Step("change_type", line + " (destructive)", True, statements)


def _column_constraints(table: TableDef, new: ColumnDef, module: ModuleDef) -> list[sql.Composed]:
    """What a column of the new type needs after its type changed."""
    col = sql.Identifier(new.name)
    null = "DROP NOT NULL" if new.type.nullable else "SET NOT NULL"
    statements = [_alter(table, sql.SQL("ALTER COLUMN {} " + null).format(col))]
    default = schema.default_expression(table, new, module)
    if default is not None:
        action = sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(col, default)
        statements.append(_alter(table, action))
    if new.auto_inc:
        action = sql.SQL("ALTER COLUMN {} ADD GENERATED BY DEFAULT AS IDENTITY").format(col)
        statements += [_alter(table, action), _restart_identity(table, new.name)]
    check = schema.identity_check(table, new)
    if check is not None:
        statements.append(_alter(table, sql.SQL("ADD {}").format(check)))
    return statements


def _order_steps(old: TableDef, new: TableDef) -> list[Step]:
    """Columns stay in declaration order: kept columns keep their relative order and new
    ones come last."""
    old_names = [c.name for c in old.columns]
    new_names = [c.name for c in new.columns]
    kept = [n for n in new_names if n in old_names]
    expected = [n for n in old_names if n in new_names] + [n for n in new_names if n not in kept]
    if expected == new_names:
        return []
    line = f"~ table {new.name} columns reordered ({', '.join(new_names)})"
    line += " (destructive: Postgres keeps the old order, clients reading by position break)"
    return [Step("reorder_columns", line, True)]


# -- keys, unique constraints and indexes ----------------------------------------------


def _change_key(old: TableDef, new: TableDef) -> Step:
    name = sql.Identifier(schema.primary_key_name(new.name))
    statements = [
        _alter(new, sql.SQL("DROP CONSTRAINT IF EXISTS {}").format(name)),
        _alter(new, sql.SQL("ADD {}").format(schema.primary_key_constraint(new))),
    ]
    line = f"~ table {new.name} primary key ({', '.join(old.primary_key)}) -> "
    line += f"({', '.join(new.primary_key)}) (destructive)"
    return Step("change_key", line, True, statements)


def _drop_unique_steps(old: TableDef, new: TableDef) -> list[Step]:
    steps = []
    for group in old.unique:
        if group in new.unique:
            continue
        name = sql.Identifier(schema.unique_name(old.name, group))
        statement = _alter(old, sql.SQL("DROP CONSTRAINT IF EXISTS {}").format(name))
        steps.append(
            Step("drop_unique", f"- {old.name} unique ({', '.join(group)})", statements=[statement])
        )
    return steps


def _add_unique_steps(old: TableDef, new: TableDef) -> list[Step]:
    steps = []
    for group in new.unique:
        if group in old.unique:
            continue
        statement = _alter(new, sql.SQL("ADD {}").format(schema.unique_constraint(new, group)))
        line = f"+ {new.name} unique ({', '.join(group)}) (may fail on existing rows)"
        steps.append(Step("add_unique", line, statements=[statement], may_fail=True))
    return steps


def _drop_index_steps(old: TableDef, new: TableDef) -> list[Step]:
    steps = []
    for index in old.indexes:
        if index in new.indexes:
            continue
        statement = sql.SQL("DROP INDEX IF EXISTS {}").format(
            sql.Identifier(schema.SCHEMA, index.name)
        )
        line = f"- {old.name} index {index.name} ({', '.join(index.columns)}) (destructive)"
        steps.append(Step("drop_index", line, True, [statement]))
    return steps


def _add_index_steps(old: TableDef, new: TableDef) -> list[Step]:
    return [
        Step(
            "add_index",
            f"+ {new.name} index {index.name} ({', '.join(index.columns)})",
            statements=[schema.create_index(new, index)],
        )
        for index in new.indexes
        if index not in old.indexes
    ]


# -- reducers ----------------------------------------------------------------------------


def _reducer_steps(old: ModuleDef, new: ModuleDef) -> list[Step]:
    before = {r.name: r for r in old.reducers}
    after = {r.name: r for r in new.reducers}
    steps = [Step("drop_reducer", f"- reducer {n}") for n in before if n not in after]
    for name, reducer in after.items():
        previous = before.get(name)
        if previous is None:
            steps.append(Step("add_reducer", f"+ reducer {name}"))
        elif previous.private != reducer.private:
            change = f"{_privacy(previous.private)} -> {_privacy(reducer.private)}"
            steps.append(Step("change_visibility", f"~ reducer {name} {change}"))
        elif previous != reducer:
            steps.append(Step("change_reducer", f"~ reducer {name}"))
    return steps


def _privacy(private: bool) -> str:
    return "private" if private else "public"
