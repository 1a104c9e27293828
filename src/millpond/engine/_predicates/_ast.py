"""The query AST: frozen, hashable plain data, each node with a canonical ``to_sql()``.

Canonical SQL puts keywords in upper case, quotes identifiers only where Postgres needs
it, spells ``<>`` for ``!=``, and parenthesises every operand that is not a column or a
literal, and AND/OR/NOT operands by precedence, so that the text parses back to the
same tree, in this parser and in Postgres.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, TypeAlias
from typing import Literal as TypingLiteral

from ._keywords import QUOTE_AS_IDENTIFIER

ComparisonOp = TypingLiteral["=", "<>", "<", "<=", ">", ">="]
LiteralKind = TypingLiteral["string", "integer", "numeric", "boolean", "null"]

MIRRORED: dict[ComparisonOp, ComparisonOp] = {
    "=": "=",
    "<>": "<>",
    "<": ">",
    "<=": ">=",
    ">": "<",
    ">=": "<=",
}

# precedence levels, loosest first (Postgres: OR < AND < NOT < everything else)
P_OR, P_AND, P_NOT, P_ATOM = 1, 2, 3, 9

_PLAIN_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_$]*")


def quote_ident(name: str) -> str:
    """``name`` as Postgres needs it written: bare when it folds to itself and is not a
    keyword, else double-quoted with ``"`` doubled."""
    if _PLAIN_IDENTIFIER.fullmatch(name) and name not in QUOTE_AS_IDENTIFIER:
        return name
    return '"' + name.replace('"', '""') + '"'


def quote_string(text: str) -> str:
    """A standard-conforming SQL string literal (``'`` doubled, backslashes literal)."""
    return "'" + text.replace("'", "''") + "'"


def qualified_name(schema: str | None, name: str) -> str:
    table = quote_ident(name)
    return table if schema is None else f"{quote_ident(schema)}.{table}"


@dataclass(frozen=True, slots=True)
class Column:
    """A column of the table the predicate is over."""

    name: str
    precedence: ClassVar[int] = P_ATOM

    def to_sql(self, qualifier: str | None = None) -> str:
        prefix = "" if qualifier is None else qualifier + "."
        return prefix + quote_ident(self.name)


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant. ``kind`` decides its Postgres type: ``string`` is an untyped literal
    (``unknown``, which takes the type of what it is compared with), ``integer`` is
    int4 or int8 by size (numeric beyond), ``numeric`` has a decimal point or exponent
    (``value`` is its canonical text), ``boolean`` is TRUE/FALSE, ``null`` is NULL."""

    kind: LiteralKind
    value: str | int | bool | None
    precedence: ClassVar[int] = P_ATOM

    @staticmethod
    def string(text: str) -> Literal:
        return Literal("string", text)

    @staticmethod
    def integer(value: int) -> Literal:
        return Literal("integer", value)

    @staticmethod
    def numeric(value: Decimal | str) -> Literal:
        return Literal("numeric", numeric_text(Decimal(value)))

    @staticmethod
    def boolean(value: bool) -> Literal:
        return Literal("boolean", value)

    @staticmethod
    def null() -> Literal:
        return Literal("null", None)

    def to_sql(self, qualifier: str | None = None) -> str:
        if self.kind == "string":
            assert isinstance(self.value, str)
            return quote_string(self.value)
        if self.kind == "null":
            return "NULL"
        if self.kind == "boolean":
            return "TRUE" if self.value else "FALSE"
        return str(self.value)


def numeric_text(value: Decimal) -> str:
    """Canonical text of a numeric literal that still reads as numeric (never as an
    integer): ``5.`` → ``5.0``, ``.5`` → ``0.5``, ``1e3`` → ``1E+3``."""
    text = str(value)
    if not any(c in text for c in ".E"):
        text += ".0"
    return text


@dataclass(frozen=True, slots=True)
class Comparison:
    """``left op right``; the parser puts a column (if any) on the left."""

    op: ComparisonOp
    left: Expr
    right: Expr
    precedence: ClassVar[int] = P_ATOM - 1

    def to_sql(self, qualifier: str | None = None) -> str:
        return f"{_operand(self.left, qualifier)} {self.op} {_operand(self.right, qualifier)}"


@dataclass(frozen=True, slots=True)
class InList:
    """``expr [NOT] IN (items…)``; the parser sorts ``items`` (keeping duplicates, which
    can change how Postgres types the list)."""

    expr: Expr
    items: tuple[Expr, ...]
    negated: bool = False
    precedence: ClassVar[int] = P_ATOM - 1

    def to_sql(self, qualifier: str | None = None) -> str:
        items = ", ".join(item.to_sql(qualifier) for item in self.items)
        keyword = "NOT IN" if self.negated else "IN"
        return f"{_operand(self.expr, qualifier)} {keyword} ({items})"


@dataclass(frozen=True, slots=True)
class IsNull:
    """``expr IS [NOT] NULL`` (also written ``ISNULL`` / ``NOTNULL``)."""

    expr: Expr
    negated: bool = False
    precedence: ClassVar[int] = P_ATOM - 1

    def to_sql(self, qualifier: str | None = None) -> str:
        keyword = "IS NOT NULL" if self.negated else "IS NULL"
        return f"{_operand(self.expr, qualifier)} {keyword}"


@dataclass(frozen=True, slots=True)
class IsBool:
    """``expr IS [NOT] TRUE | FALSE | UNKNOWN`` (``value`` None is UNKNOWN)."""

    expr: Expr
    value: bool | None
    negated: bool = False
    precedence: ClassVar[int] = P_ATOM - 1

    def to_sql(self, qualifier: str | None = None) -> str:
        what = {True: "TRUE", False: "FALSE", None: "UNKNOWN"}[self.value]
        keyword = "IS NOT" if self.negated else "IS"
        return f"{_operand(self.expr, qualifier)} {keyword} {what}"


@dataclass(frozen=True, slots=True)
class IsDistinct:
    """``left IS [NOT] DISTINCT FROM right``: comparison where NULL equals NULL."""

    left: Expr
    right: Expr
    negated: bool = False
    precedence: ClassVar[int] = P_ATOM - 1

    def to_sql(self, qualifier: str | None = None) -> str:
        keyword = "IS NOT DISTINCT FROM" if self.negated else "IS DISTINCT FROM"
        return f"{_operand(self.left, qualifier)} {keyword} {_operand(self.right, qualifier)}"


@dataclass(frozen=True, slots=True)
class Like:
    """``expr [NOT] LIKE | ILIKE pattern [ESCAPE escape]``."""

    expr: Expr
    pattern: Expr
    negated: bool = False
    case_insensitive: bool = False
    escape: Expr | None = None
    precedence: ClassVar[int] = P_ATOM - 1

    def to_sql(self, qualifier: str | None = None) -> str:
        keyword = ("NOT " if self.negated else "") + ("ILIKE" if self.case_insensitive else "LIKE")
        text = f"{_operand(self.expr, qualifier)} {keyword} {_operand(self.pattern, qualifier)}"
        if self.escape is not None:
            text += f" ESCAPE {_operand(self.escape, qualifier)}"
        return text


@dataclass(frozen=True, slots=True)
class Between:
    """``expr [NOT] BETWEEN [SYMMETRIC] low AND high``."""

    expr: Expr
    low: Expr
    high: Expr
    negated: bool = False
    symmetric: bool = False
    precedence: ClassVar[int] = P_ATOM - 1

    def to_sql(self, qualifier: str | None = None) -> str:
        keyword = ("NOT " if self.negated else "") + "BETWEEN"
        if self.symmetric:
            keyword += " SYMMETRIC"
        return (
            f"{_operand(self.expr, qualifier)} {keyword} {_operand(self.low, qualifier)}"
            f" AND {_operand(self.high, qualifier)}"
        )


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]
    precedence: ClassVar[int] = P_AND

    def to_sql(self, qualifier: str | None = None) -> str:
        return " AND ".join(_at_least(item, P_NOT, qualifier) for item in self.items)


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]
    precedence: ClassVar[int] = P_OR

    def to_sql(self, qualifier: str | None = None) -> str:
        return " OR ".join(_at_least(item, P_AND, qualifier) for item in self.items)


@dataclass(frozen=True, slots=True)
class Not:
    item: Expr
    precedence: ClassVar[int] = P_NOT

    def to_sql(self, qualifier: str | None = None) -> str:
        return "NOT " + _at_least(self.item, P_NOT, qualifier)


Expr: TypeAlias = (
    Column
    | Literal
    | Comparison
    | InList
    | IsNull
    | IsBool
    | IsDistinct
    | Like
    | Between
    | And
    | Or
    | Not
)

ATOMS = (Column, Literal)


def _operand(expr: Expr, qualifier: str | None) -> str:
    """An operand of a comparison or test: bare if a column or literal, else in parens."""
    text = expr.to_sql(qualifier)
    return text if isinstance(expr, ATOMS) else f"({text})"


def _at_least(expr: Expr, precedence: int, qualifier: str | None) -> str:
    text = expr.to_sql(qualifier)
    return text if expr.precedence >= precedence else f"({text})"


@dataclass(frozen=True, slots=True)
class SemiJoin:
    """``JOIN table ON <subscribed>.left_column = <table>.right_column WHERE where``:
    a row of the subscribed table matches when some row of ``table`` with an equal key
    satisfies ``where`` (each subscribed row at most once)."""

    table: str
    left_column: str
    right_column: str
    where: Expr | None = None
    schema: str | None = None


@dataclass(frozen=True, slots=True)
class Query:
    """``SELECT * FROM [schema.]table [WHERE where]``, or the semi-join form."""

    table: str
    where: Expr | None = None
    schema: str | None = None
    join: SemiJoin | None = None

    def to_sql(self) -> str:
        """Canonical SQL: equivalent query texts give the same string."""
        if self.join is None:
            text = f"SELECT * FROM {qualified_name(self.schema, self.table)}"
            return text if self.where is None else f"{text} WHERE {self.where.to_sql()}"
        join = self.join
        text = (
            f"SELECT a.* FROM {qualified_name(self.schema, self.table)} AS a"
            f" JOIN {qualified_name(join.schema, join.table)} AS b"
            f" ON a.{quote_ident(join.left_column)} = b.{quote_ident(join.right_column)}"
        )
        return text if join.where is None else f"{text} WHERE {join.where.to_sql('b')}"

    def key(self) -> str:
        """A canonical string identifying the query (its canonical SQL)."""
        return self.to_sql()
