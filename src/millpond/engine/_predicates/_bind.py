"""Binding a parsed query to its table's column types, and compiling the predicate
into nested closures (once, at bind time) that evaluate a row with SQL's three-valued
logic: each returns True, False or None (unknown)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import tzinfo
from decimal import Decimal
from typing import Any

from ._ast import (
    MIRRORED,
    And,
    Between,
    Column,
    Comparison,
    ComparisonOp,
    Expr,
    InList,
    IsBool,
    IsDistinct,
    IsNull,
    Like,
    Literal,
    Not,
    Or,
    Query,
)
from ._errors import UnsupportedQuery
from ._like import compile_like
from ._types import (
    UNKNOWN,
    Convert,
    canonical_type,
    cast_constant,
    category,
    comparison_domain,
    constant_in_domain,
    display,
    natural_key,
    read_literal,
    select_common_type,
    session_timezone,
    value_converter,
)

Row = Mapping[str, Any]
Eval = Callable[[Row], Any]

_OPERATORS: dict[ComparisonOp, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "<>": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True, slots=True)
class EqualityConstraint:
    """A top-level conjunct ``column = constant`` or ``column IN (constants)``: a row
    can only match if its column's :func:`value_key` is in ``keys``."""

    column: str
    type: str
    keys: frozenset[Any]


@dataclass(frozen=True, slots=True)
class _Value:
    """A bound expression: its Postgres type and an evaluator, or a constant."""

    type: str
    fn: Eval | None = None
    const: Any = None
    column: str | None = None
    equalities: tuple[EqualityConstraint, ...] = ()


@dataclass(frozen=True, slots=True)
class _Side:
    """One side of a comparison, in the comparison's domain."""

    fn: Eval | None
    convert: Convert | None = None
    const: Any = None


def _constant(value: bool | None, *equalities: EqualityConstraint) -> _Value:
    return _Value("bool", const=value, equalities=equalities)


def _integer_type(value: int) -> str:
    if -(2**31) <= value < 2**31:
        return "int4"
    return "int8" if -(2**63) <= value < 2**63 else "numeric"


class Binder:
    """Binds predicates over one table (``columns``: name → Postgres type name)."""

    def __init__(self, label: str, columns: Mapping[str, str], tz: tzinfo) -> None:
        self.label = label
        self.types = {name: canonical_type(type_name) for name, type_name in columns.items()}
        self.tz = tz
        self.referenced: set[str] = set()

    def where(self, expr: Expr | None) -> _Value:
        if expr is None:
            return _constant(True)
        return self.predicate(expr, "WHERE")

    def predicate(self, expr: Expr, context: str) -> _Value:
        value = self.bind(expr)
        if value.type == "bool":
            return value
        if value.type == UNKNOWN:
            return _constant(self.read(value.const, "bool", expr))
        raise UnsupportedQuery(
            f"argument of {context} must be type boolean, not type {display(value.type)}"
            f" (in {expr.to_sql()})"
        )

    def bind(self, expr: Expr) -> _Value:
        method: Callable[[Any], _Value] = getattr(self, "bind_" + type(expr).__name__.lower())
        return method(expr)

    def read(self, text: Any, type_name: str, where: Expr) -> Any:
        """A quoted literal (None: NULL) read as ``type_name``."""
        if text is None:
            return None
        try:
            return read_literal(text, type_name, self.tz)
        except ValueError as exc:
            raise UnsupportedQuery(f"{exc} (in {where.to_sql()})") from None

    # -- leaves ---------------------------------------------------------------------------

    def bind_column(self, expr: Column) -> _Value:
        if expr.name not in self.types:
            raise UnsupportedQuery(f'column "{expr.name}" does not exist in table {self.label}')
        self.referenced.add(expr.name)
        return _Value(self.types[expr.name], fn=operator.itemgetter(expr.name), column=expr.name)

    def bind_literal(self, expr: Literal) -> _Value:
        if expr.kind in ("string", "null"):
            return _Value(UNKNOWN, const=expr.value)
        if expr.kind == "boolean":
            return _Value("bool", const=expr.value)
        if expr.kind == "numeric":
            return _Value("numeric", const=Decimal(str(expr.value)))
        assert isinstance(expr.value, int)
        kind = _integer_type(expr.value)
        return _Value(kind, const=Decimal(expr.value) if kind == "numeric" else expr.value)

    # -- comparisons ------------------------------------------------------------------------

    def bind_comparison(self, expr: Comparison) -> _Value:
        return self.compare(expr.op, self.bind(expr.left), self.bind(expr.right), expr)

    def resolve(self, left: _Value, right: _Value, op: str, where: Expr) -> tuple[str, str, str]:
        resolved = comparison_domain(left.type, right.type)
        if resolved is not None:
            return resolved
        for side in (left, right):
            if side.column is not None and category(side.type) == "X":
                raise UnsupportedQuery(
                    f'column "{side.column}" has type {side.type}, which subscriptions cannot '
                    "compare (only IS [NOT] NULL)"
                )
        raise UnsupportedQuery(
            f"operator does not exist: {display(left.type)} {op} {display(right.type)}"
            f" (in {where.to_sql()})"
        )

    def side(self, value: _Value, type_name: str, domain: str, where: Expr) -> _Side:
        if value.fn is not None:
            return _Side(value.fn, value_converter(value.type, domain, self.tz))
        const = value.const
        if value.type == UNKNOWN:
            const = self.read(const, type_name, where)
        return _Side(None, const=self.in_domain(const, type_name, domain, where))

    def in_domain(self, const: Any, type_name: str, domain: str, where: Expr) -> Any:
        try:
            return constant_in_domain(const, type_name, domain, self.tz)
        except ValueError as exc:
            raise UnsupportedQuery(f"{exc} (in {where.to_sql()})") from None

    def compare(self, op: ComparisonOp, left: _Value, right: _Value, where: Expr) -> _Value:
        domain, left_type, right_type = self.resolve(left, right, op, where)
        a = self.side(left, left_type, domain, where)
        b = self.side(right, right_type, domain, where)
        if a.fn is None and b.fn is None:
            if a.const is None or b.const is None:
                return _constant(None)
            return _constant(_OPERATORS[op](a.const, b.const))
        if a.fn is None:
            a, b, left, op = b, a, right, MIRRORED[op]
        assert a.fn is not None
        if b.fn is not None:
            return _Value("bool", fn=_both_sides(_OPERATORS[op], _evaluator(a), _evaluator(b)))
        equalities = self.equality(op, left, a, frozenset({b.const} - {None}))
        if b.const is None:
            return _constant(None, *equalities)
        fn = _with_constant(_OPERATORS[op], a.fn, a.convert, b.const)
        return _Value("bool", fn=fn, equalities=equalities)

    def equality(
        self, op: str, value: _Value, side: _Side, keys: frozenset[Any]
    ) -> tuple[EqualityConstraint, ...]:
        """The index constraint ``column = constant(s)`` gives, if any."""
        if op != "=" or value.column is None or side.convert is not natural_key(value.type):
            return ()
        return (EqualityConstraint(value.column, value.type, keys),)

    def bind_isdistinct(self, expr: IsDistinct) -> _Value:
        left, right = self.bind(expr.left), self.bind(expr.right)
        op = "IS NOT DISTINCT FROM" if expr.negated else "IS DISTINCT FROM"
        domain, left_type, right_type = self.resolve(left, right, op, expr)
        a = self.side(left, left_type, domain, expr)
        b = self.side(right, right_type, domain, expr)
        if a.fn is None and b.fn is None:
            return _constant(_distinct(a.const, b.const) != expr.negated)
        fa, fb, negated = _evaluator(a), _evaluator(b), expr.negated

        def distinct(row: Row) -> bool:
            return _distinct(fa(row), fb(row)) != negated

        equalities: tuple[EqualityConstraint, ...] = ()
        if negated and b.fn is None and b.const is not None:
            equalities = self.equality("=", left, a, frozenset({b.const}))
        return _Value("bool", fn=distinct, equalities=equalities)

    def bind_between(self, expr: Between) -> _Value:
        def within(low: Expr, high: Expr) -> And:
            return And((Comparison(">=", expr.expr, low), Comparison("<=", expr.expr, high)))

        test: Expr = within(expr.low, expr.high)
        if expr.symmetric:
            test = Or((test, within(expr.high, expr.low)))
        return self.bind(Not(test) if expr.negated else test)

    # -- IN -------------------------------------------------------------------------------

    def bind_inlist(self, expr: InList) -> _Value:
        """As Postgres does: with two or more constant items of a common type, one
        ``= ANY (array)`` over that type; every other item its own ``=``."""
        lhs = self.bind(expr.expr)
        items = [self.bind(item) for item in expr.items]
        constants = [item for item in items if item.fn is None]
        common = None
        if len(constants) > 1:
            common = select_common_type([lhs.type] + [item.type for item in constants])
        parts: list[_Value] = []
        if common is not None:
            parts.append(self.membership(lhs, constants, common, expr))
            items = [item for item in items if item.fn is not None]
        parts.extend(self.compare("=", lhs, item, expr) for item in items)
        result = _or(parts)
        return _not(result) if expr.negated else result

    def membership(self, lhs: _Value, constants: list[_Value], common: str, expr: Expr) -> _Value:
        operand = _Value(common, const=None)
        domain, left_type, _ = self.resolve(lhs, operand, "=", expr)
        values = [self.cast(item, common, expr) for item in constants]
        keys = frozenset(self.in_domain(v, common, domain, expr) for v in values if v is not None)
        has_null = any(v is None for v in values)
        side = self.side(lhs, left_type, domain, expr)
        if side.fn is None:
            if side.const is None:
                return _constant(None)
            return _constant(True if side.const in keys else None if has_null else False)
        equalities = self.equality("=", lhs, side, keys)
        return _Value(
            "bool", fn=_member(side.fn, side.convert, keys, has_null), equalities=equalities
        )

    def cast(self, item: _Value, common: str, expr: Expr) -> Any:
        if item.type == UNKNOWN:
            return self.read(item.const, common, expr)
        try:
            return cast_constant(item.const, item.type, common)
        except ValueError as exc:
            raise UnsupportedQuery(f"{exc} (in {expr.to_sql()})") from None

    # -- tests ------------------------------------------------------------------------------

    def bind_isnull(self, expr: IsNull) -> _Value:
        value, negated = self.bind(expr.expr), expr.negated
        if value.fn is None:
            return _constant((value.const is None) != negated)
        get = value.fn
        if negated:
            return _Value("bool", fn=lambda row: get(row) is not None)
        return _Value("bool", fn=lambda row: get(row) is None)

    def bind_isbool(self, expr: IsBool) -> _Value:
        words = {True: "IS TRUE", False: "IS FALSE", None: "IS UNKNOWN"}
        value = self.predicate(expr.expr, words[expr.value])
        target, negated = expr.value, expr.negated
        if value.fn is None:
            return _constant((value.const is target) != negated)
        get = value.fn
        if negated:
            return _Value("bool", fn=lambda row: get(row) is not target)
        return _Value("bool", fn=lambda row: get(row) is target)

    def bind_like(self, expr: Like) -> _Value:
        value = self.bind(expr.expr)
        if value.type != UNKNOWN and category(value.type) != "S":
            op = "~~*" if expr.case_insensitive else "~~"
            raise UnsupportedQuery(
                f"LIKE needs a text value, not {display(value.type)} (operator does not exist: "
                f"{display(value.type)} {op} unknown, in {expr.to_sql()})"
            )
        pattern = self.like_constant(expr.pattern, expr, "pattern")
        escape = None if expr.escape is None else self.like_constant(expr.escape, expr, "escape")
        if pattern is None or (expr.escape is not None and escape is None):
            return _constant(None)
        try:
            matcher = compile_like(pattern, escape, expr.case_insensitive)
        except ValueError as exc:
            raise UnsupportedQuery(f"{exc} (in {expr.to_sql()})") from None
        negated = expr.negated
        if value.fn is None:
            return _constant(None if value.const is None else matcher(value.const) != negated)
        get = value.fn

        def like(row: Row) -> bool | None:
            text = get(row)
            return None if text is None else matcher(text) != negated

        return _Value("bool", fn=like)

    def like_constant(self, part: Expr, expr: Like, what: str) -> str | None:
        value = self.bind(part)
        if value.fn is not None or value.type != UNKNOWN:
            raise UnsupportedQuery(f"the LIKE {what} must be a string literal (in {expr.to_sql()})")
        text: str | None = value.const
        return text

    # -- logic ------------------------------------------------------------------------------

    def bind_and(self, expr: And) -> _Value:
        return _and([self.predicate(item, "AND") for item in expr.items])

    def bind_or(self, expr: Or) -> _Value:
        return _or([self.predicate(item, "OR") for item in expr.items])

    def bind_not(self, expr: Not) -> _Value:
        return _not(self.predicate(expr.item, "NOT"))


# -- closures ------------------------------------------------------------------------------------


def _evaluator(side: _Side) -> Eval:
    """The side's value in the comparison domain (None for NULL)."""
    if side.fn is None:
        const = side.const
        return lambda row: const
    get, convert = side.fn, side.convert
    if convert is None:
        return get

    def converted(row: Row) -> Any:
        value = get(row)
        return None if value is None else convert(value)

    return converted


def _with_constant(
    test: Callable[[Any, Any], bool], get: Eval, convert: Convert | None, const: Any
) -> Eval:
    if convert is None:

        def compare(row: Row) -> bool | None:
            value = get(row)
            return None if value is None else test(value, const)

        return compare

    def compare_converted(row: Row) -> bool | None:
        value = get(row)
        return None if value is None else test(convert(value), const)

    return compare_converted


def _both_sides(test: Callable[[Any, Any], bool], left: Eval, right: Eval) -> Eval:
    def compare(row: Row) -> bool | None:
        a = left(row)
        if a is None:
            return None
        b = right(row)
        return None if b is None else test(a, b)

    return compare


def _member(get: Eval, convert: Convert | None, keys: frozenset[Any], has_null: bool) -> Eval:
    missing = None if has_null else False

    def member(row: Row) -> bool | None:
        value = get(row)
        if value is None:
            return None
        if convert is not None:
            value = convert(value)
        return True if value in keys else missing

    return member


def _distinct(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    return bool(a != b)


def _and(items: list[_Value]) -> _Value:
    fns: list[Eval] = []
    unknown = False
    equalities: list[EqualityConstraint] = []
    for item in items:
        equalities.extend(item.equalities)
        if item.fn is not None:
            fns.append(item.fn)
        elif item.const is False:
            return _constant(False)
        elif item.const is None:
            unknown = True
    if not fns:
        return _constant(None if unknown else True, *equalities)
    if unknown:
        fns.append(lambda row: None)
    fn = fns[0] if len(fns) == 1 else _all(tuple(fns))
    return _Value("bool", fn=fn, equalities=tuple(equalities))


def _all(fns: tuple[Eval, ...]) -> Eval:
    if len(fns) == 2:
        first, second = fns

        def both(row: Row) -> bool | None:
            a = first(row)
            if a is False:
                return False
            b = second(row)
            if b is False:
                return False
            return None if a is None or b is None else True

        return both

    def every(row: Row) -> bool | None:
        result: bool | None = True
        for fn in fns:
            value = fn(row)
            if value is False:
                return False
            if value is None:
                result = None
        return result

    return every


def _or(items: list[_Value]) -> _Value:
    if len(items) == 1:
        return items[0]
    fns: list[Eval] = []
    unknown = False
    for item in items:
        if item.fn is not None:
            fns.append(item.fn)
        elif item.const is True:
            return _constant(True)
        elif item.const is None:
            unknown = True
    if not fns:
        return _constant(None if unknown else False)
    if unknown:
        fns.append(lambda row: None)
    return _Value("bool", fn=fns[0] if len(fns) == 1 else _any(tuple(fns)))


def _any(fns: tuple[Eval, ...]) -> Eval:
    def some(row: Row) -> bool | None:
        result: bool | None = False
        for fn in fns:
            value = fn(row)
            if value is True:
                return True
            if value is None:
                result = None
        return result

    return some


def _not(value: _Value) -> _Value:
    if value.fn is None:
        return _constant(None if value.const is None else not value.const)
    get = value.fn

    def negation(row: Row) -> bool | None:
        result = get(row)
        return None if result is None else not result

    return _Value("bool", fn=negation)


# -- bound queries ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BoundSemiJoin:
    """The join part of a bound semi-join: a subscribed row matches when some row of
    ``right.table`` with the same key satisfies ``right`` (see ``SemiJoinState``)."""

    right: BoundQuery
    left_column: str
    right_column: str
    left_key: Eval = field(repr=False)
    """A subscribed row's join key (None: NULL, which joins nothing)."""
    right_key: Eval = field(repr=False)
    """A joined row's join key, comparable with ``left_key``'s."""


@dataclass(frozen=True, eq=False)
class BoundQuery:
    """A query bound to its table's columns, ready to evaluate rows."""

    query: Query
    schema: str
    name: str
    columns: Mapping[str, str]
    """Column name → canonical type name, for the columns the query may see."""
    referenced: frozenset[str]
    equalities: tuple[EqualityConstraint, ...]
    join: BoundSemiJoin | None
    _predicate: Eval | None = field(repr=False)
    _constant: bool | None = field(repr=False)

    @property
    def table(self) -> str:
        """``schema.name`` (as the realtime layer names relations)."""
        return f"{self.schema}.{self.name}"

    def evaluate(self, row: Row) -> bool | None:
        """The WHERE clause's value for ``row``: True, False or None (unknown)."""
        if self.join is not None:
            raise TypeError("a semi-join's rows match through SemiJoinState, not one row alone")
        if self._predicate is None:
            return self._constant
        result: bool | None = self._predicate(row)
        return result

    def matches(self, row: Row) -> bool:
        """Whether ``row`` is in the query's result (the WHERE clause is TRUE)."""
        return self.evaluate(row) is True

    def to_sql(self) -> str:
        """Canonical SQL (schemas written out unless ``public``)."""
        return self._canonical(explicit=False)

    def key(self) -> str:
        """A string identifying the query: equal for equivalent query texts (schemas
        resolved, so ``FROM t`` and ``FROM public.t`` share a key)."""
        return self._canonical(explicit=True)

    def where_sql(self) -> str | None:
        """The canonical WHERE condition over this table (None: every row). For a
        semi-join, the joined table's condition is ``join.right.where_sql()``."""
        where = self.query.where
        return None if where is None else where.to_sql()

    def _canonical(self, explicit: bool) -> str:
        def shown(schema: str) -> str | None:
            return schema if explicit or schema != "public" else None

        query = replace(self.query, schema=shown(self.schema))
        if self.join is not None and query.join is not None:
            query = replace(query, join=replace(query.join, schema=shown(self.join.right.schema)))
        return query.to_sql()


def bind(
    query: Query,
    columns: Mapping[str, str],
    *,
    join_columns: Mapping[str, str] | None = None,
    timezone: str = "UTC",
    default_schema: str = "public",
) -> BoundQuery:
    """Check ``query`` against its table's ``columns`` (name → Postgres type name) and
    compile it. ``join_columns`` are the joined table's, for a semi-join; ``timezone``
    is the session time zone quoted timestamptz literals without an offset are read
    in (the snapshot query must run with the same). Raises :class:`UnsupportedQuery`."""
    tz = session_timezone(timezone)
    schema = query.schema or default_schema
    if query.join is None:
        return _bind_table(query, schema, columns, tz)
    join = query.join
    if join_columns is None:
        raise UnsupportedQuery(
            f"the query joins table {join.table}; binding it needs that table's columns"
        )
    right = _bind_table(
        Query(join.table, join.where, join.schema), join.schema or default_schema, join_columns, tz
    )
    keys = _join_keys(query, columns, join_columns, tz)
    return BoundQuery(
        query=query,
        schema=schema,
        name=query.table,
        columns={name: canonical_type(t) for name, t in columns.items()},
        referenced=frozenset({join.left_column}),
        equalities=(),
        join=BoundSemiJoin(right, join.left_column, join.right_column, *keys),
        _predicate=None,
        _constant=None,
    )


def _bind_table(query: Query, schema: str, columns: Mapping[str, str], tz: tzinfo) -> BoundQuery:
    binder = Binder(query.table, columns, tz)
    value = binder.where(query.where)
    return BoundQuery(
        query=query,
        schema=schema,
        name=query.table,
        columns=binder.types,
        referenced=frozenset(binder.referenced),
        equalities=value.equalities,
        join=None,
        _predicate=value.fn,
        _constant=value.const,
    )


def _join_keys(
    query: Query, columns: Mapping[str, str], join_columns: Mapping[str, str], tz: tzinfo
) -> tuple[Eval, Eval]:
    assert query.join is not None
    join = query.join
    left = Binder(query.table, columns, tz).bind_column(Column(join.left_column))
    right = Binder(join.table, join_columns, tz).bind_column(Column(join.right_column))
    condition = Comparison("=", Column(join.left_column), Column(join.right_column))
    binder = Binder(query.table, columns, tz)
    domain, left_type, right_type = binder.resolve(left, right, "=", condition)
    return (
        _evaluator(binder.side(left, left_type, domain, condition)),
        _evaluator(binder.side(right, right_type, domain, condition)),
    )
