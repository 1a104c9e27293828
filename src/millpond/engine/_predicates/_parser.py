"""A recursive-descent parser for subscription queries, with Postgres' precedence:
OR < AND < NOT < IS < comparison < LIKE/ILIKE/BETWEEN/IN < unary minus. Anything
outside the grammar is refused with a message naming the part."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import cast

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
    SemiJoin,
)
from ._errors import QuerySyntaxError, UnsupportedQuery
from ._keywords import CLAUSES_AFTER_WHERE, NOT_AN_ALIAS, SQL_VALUE_FUNCTIONS
from ._lexer import Token, tokenize

COMPARISON_OPS: frozenset[str] = frozenset(MIRRORED)
_ARITHMETIC = frozenset("+-*/%^")
_JOIN_WORDS = ("join", "inner", "left", "right", "full", "cross", "natural")
_SUBQUERY_WORDS = ("select", "with", "values", "table")
MAX_DEPTH = 64
"""Deepest nesting of a predicate (parentheses, NOT, signs, IS tests, IN lists): deeper
is refused, before any recursion (here, in binding or in matching) could overflow."""


@dataclass(frozen=True, slots=True)
class _Source:
    """A FROM item: ``[schema.]name [AS alias]``."""

    schema: str | None
    name: str
    alias: str | None

    def answers_to(self, qualifier: tuple[str, ...]) -> bool:
        if self.alias is not None:
            return qualifier == (self.alias,)
        return qualifier in ((self.name,), (self.schema, self.name))

    @property
    def label(self) -> str:
        return self.alias or self.name


def parse_query(sql: str) -> Query:
    """Parse a subscription query; raise :class:`UnsupportedQuery` (or its subclass
    :class:`QuerySyntaxError`) naming what is not supported."""
    return _Parser(sql).query()


def parse_predicate(sql: str) -> Expr:
    """Parse a bare predicate (a WHERE clause's text) over one table's columns."""
    parser = _Parser(sql)
    parser.scope = [_Source(None, "", None)]
    expr = parser.expr()
    parser.expect_end()
    return expr


class _Parser:
    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.tokens = tokenize(sql)
        self.i = 0
        self.scope: list[_Source] = []
        self.where_side: int | None = None
        """In a join, the index in ``scope`` of the table WHERE may use."""
        self.depth = 0

    def deeper(self, levels: int = 1) -> None:
        self.depth += levels
        if self.depth > MAX_DEPTH:
            raise self.refuse(f"the predicate nests more than {MAX_DEPTH} levels deep")

    def shallower(self, levels: int = 1) -> None:
        self.depth -= levels

    # -- token helpers ------------------------------------------------------------------

    def peek(self, k: int = 0) -> Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.peek()
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return tok

    def accept_word(self, *words: str) -> Token | None:
        return self.advance() if self.peek().is_word(*words) else None

    def accept_op(self, *ops: str) -> Token | None:
        return self.advance() if self.peek().is_op(*ops) else None

    def expect_word(self, word: str) -> Token:
        if not self.peek().is_word(word):
            raise self.syntax_error()
        return self.advance()

    def expect_op(self, op: str) -> Token:
        if not self.peek().is_op(op):
            raise self.syntax_error()
        return self.advance()

    def text(self, first: Token, last: Token) -> str:
        return " ".join(self.sql[first.pos : last.end].split())

    def syntax_error(self, tok: Token | None = None) -> QuerySyntaxError:
        tok = tok or self.peek()
        if tok.kind == "eof":
            return QuerySyntaxError(
                f"syntax error at end of input (position {tok.pos + 1})", tok.pos + 1
            )
        near = self.sql[tok.pos : tok.end]
        return QuerySyntaxError(
            f'syntax error at or near "{near}" (position {tok.pos + 1})', tok.pos + 1
        )

    def refuse(self, message: str, tok: Token | None = None) -> UnsupportedQuery:
        return UnsupportedQuery(message, (tok or self.peek()).pos + 1)

    # -- SELECT … FROM … [JOIN …] [WHERE …] ------------------------------------------------

    def query(self) -> Query:
        self.select_keyword()
        star = self.select_list()
        if not self.peek().is_word("from"):
            if self.peek().kind == "eof" or self.peek().is_op(";"):
                raise self.refuse("a FROM clause is required")
            raise self.syntax_error()
        self.advance()
        self.scope = [self.table_ref()]
        if self.peek().is_op(","):
            raise self.refuse(
                "multiple tables in FROM are not supported (a semi-join is "
                "written SELECT a.* FROM a JOIN b ON a.k = b.k)"
            )
        on: tuple[str, str] | None = None
        if self.peek().is_word(*_JOIN_WORDS):
            on = self.join_clause()
        selected = self.selected_side(star)
        if on is not None:
            self.where_side = 1 - selected
        where = self.expr() if self.accept_word("where") else None
        self.expect_end()
        return self.build(selected, on, where)

    def select_keyword(self) -> None:
        tok = self.peek()
        if tok.is_word("with"):
            raise self.refuse("WITH (common table expressions) is not supported")
        if tok.kind == "ident" and not tok.is_word("select"):
            raise self.refuse(f"only SELECT queries can be subscribed to (got {tok.value.upper()})")
        self.expect_word("select")
        if self.peek().is_word("distinct"):
            raise self.refuse("SELECT DISTINCT is not supported")
        self.accept_word("all")

    def select_list(self) -> tuple[str, ...] | None:
        """None for ``*``, else the qualifier of ``qualifier.*``."""
        start = self.i
        star: tuple[str, ...] | None = None
        if self.accept_op("*"):
            pass
        elif self.is_qualified_star():
            star = self.qualified_star()
        end = self.peek()
        if self.i == start or not (end.is_word("from") or end.kind == "eof" or end.is_op(";")):
            raise self.refuse_select_list(start)
        return star

    def is_qualified_star(self) -> bool:
        k = 0
        while self.peek(k).kind in ("ident", "qident") and self.peek(k + 1).is_op("."):
            if self.peek(k + 2).is_op("*"):
                return True
            k += 2
        return False

    def qualified_star(self) -> tuple[str, ...]:
        parts: list[str] = []
        while not self.accept_op("*"):
            parts.append(self.advance().value)
            self.expect_op(".")
        return tuple(parts)

    def refuse_select_list(self, start: int) -> UnsupportedQuery:
        first = last = self.tokens[start]
        depth = 0
        for tok in self.tokens[start:]:
            if tok.kind == "eof" or (depth == 0 and tok.is_word("from")):
                break
            depth += tok.is_op("(") - tok.is_op(")")
            last = tok
        if first.kind == "eof" or first.is_word("from"):
            return self.refuse("the select list must be *", first)
        return self.refuse(f"the select list must be * (got '{self.text(first, last)}')", first)

    def table_ref(self) -> _Source:
        tok = self.peek()
        for word in ("only", "lateral"):
            if tok.is_word(word):
                raise self.refuse(f"{word.upper()} is not supported")
        if tok.is_op("("):
            if self.peek(1).is_word(*_SUBQUERY_WORDS):
                raise self.refuse("subqueries are not supported")
            raise self.refuse("parenthesised FROM items are not supported")
        parts = self.dotted_name()
        if self.peek().is_op("("):
            raise self.refuse(f"table functions ({'.'.join(parts)}) are not supported", tok)
        if len(parts) > 2:
            raise self.refuse("cross-database references are not supported", tok)
        alias = self.alias()
        if self.peek().is_op("("):
            raise self.refuse("column aliases in FROM are not supported")
        if self.peek().is_word("tablesample"):
            raise self.refuse("TABLESAMPLE is not supported")
        schema = parts[0] if len(parts) == 2 else None
        return _Source(schema, parts[-1], alias)

    def dotted_name(self) -> list[str]:
        parts = [self.name()]
        while self.accept_op("."):
            parts.append(self.name())
        return parts

    def name(self) -> str:
        tok = self.peek()
        if tok.kind == "qident" or (tok.kind == "ident" and tok.value not in NOT_AN_ALIAS):
            return self.advance().value
        raise self.syntax_error()

    def alias(self) -> str | None:
        if self.accept_word("as"):
            return self.name()
        tok = self.peek()
        if tok.kind == "qident" or (tok.kind == "ident" and tok.value not in NOT_AN_ALIAS):
            return self.advance().value
        return None

    def join_clause(self) -> tuple[str, str]:
        """``[INNER] JOIN b ON x.k = y.k``: the ON columns of scope[0] and scope[1]."""
        tok = self.peek()
        kind = tok.value
        if kind in ("left", "right", "full", "cross", "natural"):
            raise self.refuse(
                f"{kind.upper()} JOIN is not supported (only [INNER] JOIN ... ON "
                "a.k = b.k, a semi-join)"
            )
        self.accept_word("inner")
        self.expect_word("join")
        self.scope.append(self.table_ref())
        self.check_distinct_sources()
        if self.peek().is_word("using"):
            raise self.refuse("JOIN ... USING is not supported; write ON a.k = b.k")
        self.expect_word("on")
        on = self.join_condition()
        if self.peek().is_word(*_JOIN_WORDS) or self.peek().is_op(","):
            raise self.refuse("joining more than two tables is not supported")
        return on

    def check_distinct_sources(self) -> None:
        left, right = self.scope
        if left.label == right.label:
            raise self.refuse(
                f'table name "{left.label}" specified more than once (give the '
                "tables different aliases)"
            )

    def join_condition(self) -> tuple[str, str]:
        start = self.peek()
        parens = 0
        while self.accept_op("("):
            parens += 1
        try:
            first = self.column_ref(self.peek())
            self.expect_op("=")
            second = self.column_ref(self.peek())
            for _ in range(parens):
                self.expect_op(")")
        except UnsupportedQuery:
            first = second = (-1, "")
        sides = {first[0]: first[1], second[0]: second[1]}
        if set(sides) != {0, 1} or not self.at_clause_end():
            raise self.refuse(
                "the join condition must be one equality between a column of "
                "each table (ON a.k = b.k)",
                start,
            )
        return sides[0], sides[1]

    def at_clause_end(self) -> bool:
        tok = self.peek()
        return (
            tok.kind == "eof"
            or tok.is_op(";")
            or (
                tok.kind == "ident"
                and (
                    tok.value == "where"
                    or tok.value in CLAUSES_AFTER_WHERE
                    or tok.value in _JOIN_WORDS
                )
            )
        )

    def selected_side(self, star: tuple[str, ...] | None) -> int:
        if star is None:
            if len(self.scope) > 1:
                raise self.refuse(
                    "in a join, the select list must be the rows of one table "
                    f"({self.scope[0].label}.*)"
                )
            return 0
        for index, source in enumerate(self.scope):
            if source.answers_to(star):
                return index
        raise self.missing_source(star, self.tokens[0])

    def missing_source(self, qualifier: tuple[str, ...], tok: Token) -> UnsupportedQuery:
        name = ".".join(qualifier)
        for source in self.scope:
            if source.alias is not None and qualifier[-1] == source.name:
                return self.refuse(
                    f'invalid reference to FROM-clause entry for table "{name}" '
                    f"(use its alias {source.alias})",
                    tok,
                )
        return self.refuse(f'missing FROM-clause entry for table "{name}"', tok)

    def expect_end(self) -> None:
        tok = self.peek()
        if tok.kind == "ident" and tok.value in CLAUSES_AFTER_WHERE:
            raise self.refuse(f"{CLAUSES_AFTER_WHERE[tok.value]} is not supported in subscriptions")
        if self.accept_op(";") and self.peek().kind != "eof":
            raise self.refuse("multiple statements are not supported")
        if self.peek().kind != "eof":
            raise self.syntax_error()

    def build(self, selected: int, on: tuple[str, str] | None, where: Expr | None) -> Query:
        target = self.scope[selected]
        if on is None:
            return Query(table=target.name, schema=target.schema, where=where)
        other = self.scope[1 - selected]
        join = SemiJoin(
            table=other.name,
            schema=other.schema,
            left_column=on[selected],
            right_column=on[1 - selected],
            where=where,
        )
        return Query(table=target.name, schema=target.schema, join=join)

    # -- predicates ---------------------------------------------------------------------

    def expr(self) -> Expr:
        items = [self.and_expr()]
        while self.accept_word("or"):
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else make_or(items)

    def and_expr(self) -> Expr:
        items = [self.not_expr()]
        while self.accept_word("and"):
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else make_and(items)

    def not_expr(self) -> Expr:
        nots = 0
        while self.accept_word("not"):
            nots += 1
            self.deeper()
        expr = self.is_expr()
        for _ in range(nots):
            expr = Not(expr)
        self.shallower(nots)
        return expr

    def is_expr(self) -> Expr:
        expr = self.comparison()
        tests = 0
        while True:
            if self.accept_word("isnull"):
                expr = IsNull(expr)
            elif self.accept_word("notnull"):
                expr = IsNull(expr, negated=True)
            elif self.peek().is_word("is"):
                expr = self.is_test(expr)
            else:
                if tests and self.peek().kind == "op" and self.peek().value in COMPARISON_OPS:
                    raise self.refuse(
                        "comparing the result of an IS test is not supported; write the "
                        "test alone (a IS NULL, a IS NOT TRUE…) or combine it with AND/OR/NOT"
                    )
                self.shallower(tests)
                return expr
            tests += 1
            self.deeper()

    def is_test(self, expr: Expr) -> Expr:
        self.expect_word("is")
        negated = self.accept_word("not") is not None
        tok = self.advance()
        if tok.is_word("null"):
            return IsNull(expr, negated)
        if tok.is_word("true", "false", "unknown"):
            value = {"true": True, "false": False, "unknown": None}[tok.value]
            return IsBool(expr, value, negated)
        if tok.is_word("distinct"):
            self.expect_word("from")
            return make_distinct(expr, self.comparison(), not negated)
        if tok.kind == "ident" and tok.value in (
            "document",
            "json",
            "normalized",
            "of",
            "nfc",
            "nfd",
            "nfkc",
            "nfkd",
        ):
            raise self.refuse(f"IS {tok.value.upper()} is not supported", tok)
        raise self.syntax_error(tok)

    def comparison(self) -> Expr:
        left = self.pattern()
        tok = self.peek()
        if not (tok.kind == "op" and tok.value in COMPARISON_OPS):
            return left
        self.advance()
        if self.peek().is_word("any", "all", "some") and self.peek(1).is_op("("):
            raise self.refuse(
                f"{tok.value} {self.peek().value.upper()} (...) is not supported; use IN (...)"
            )
        right = self.pattern()
        if self.peek().kind == "op" and self.peek().value in COMPARISON_OPS:
            raise self.syntax_error()
        return make_comparison(cast(ComparisonOp, tok.value), left, right)

    def pattern(self) -> Expr:
        expr = self.operand()
        negated = False
        if self.peek().is_word("not") and self.peek(1).is_word(
            "like", "ilike", "between", "in", "similar"
        ):
            self.advance()
            negated = True
        tok = self.peek()
        if tok.is_word("like", "ilike"):
            result = self.like(expr, negated)
        elif tok.is_word("between"):
            result = self.between(expr, negated)
        elif tok.is_word("in"):
            result = self.in_list(expr, negated)
        elif tok.is_word("similar"):
            raise self.refuse("SIMILAR TO is not supported; use LIKE")
        else:
            return expr
        if self.peek().is_word("like", "ilike", "between", "in", "similar"):
            raise self.syntax_error()
        return result

    def like(self, expr: Expr, negated: bool) -> Expr:
        case_insensitive = self.advance().value == "ilike"
        pattern = self.operand()
        escape = self.operand() if self.accept_word("escape") else None
        return Like(expr, pattern, negated, case_insensitive, escape)

    def between(self, expr: Expr, negated: bool) -> Expr:
        self.expect_word("between")
        symmetric = self.accept_word("symmetric") is not None
        if not symmetric:
            self.accept_word("asymmetric")
        if self.peek().is_word("not"):  # the low bound is a b_expr in Postgres: no NOT
            raise self.syntax_error()
        low = self.operand()
        self.expect_word("and")
        high = self.operand()
        return Between(expr, low, high, negated, symmetric)

    def in_list(self, expr: Expr, negated: bool) -> Expr:
        self.expect_word("in")
        self.expect_op("(")
        if self.peek().is_word(*_SUBQUERY_WORDS):
            raise self.refuse("subqueries are not supported")
        self.deeper()
        items = [self.expr()]
        while self.accept_op(","):
            items.append(self.expr())
        self.expect_op(")")
        self.shallower()
        return make_in(expr, items, negated)

    # -- operands -----------------------------------------------------------------------

    def operand(self) -> Expr:
        tok = self.peek()
        if tok.is_op("-", "+"):
            self.advance()
            self.deeper()
            signed = self.signed(tok, self.operand())
            self.shallower()
            return signed
        if tok.is_word("not"):
            self.advance()
            self.deeper()
            negated = Not(self.not_expr())
            self.shallower()
            return negated
        expr = self.primary()
        self.check_postfix()
        return expr

    def signed(self, sign: Token, expr: Expr) -> Expr:
        if not isinstance(expr, Literal) or expr.kind not in ("integer", "numeric"):
            raise self.refuse(f"arithmetic (unary {sign.value}) is not supported", sign)
        if sign.value == "+":
            return expr
        if expr.kind == "integer":
            assert isinstance(expr.value, int)
            return Literal.integer(-expr.value)
        assert isinstance(expr.value, str)
        return Literal.numeric(-Decimal(expr.value))

    def check_postfix(self) -> None:
        tok = self.peek()
        if tok.is_op("::"):
            raise self.refuse(
                "type casts (::) are not supported; write the value as a plain "
                "literal, it takes the column's type"
            )
        if tok.is_op("["):
            raise self.refuse("array subscripts are not supported")
        if tok.is_word("collate"):
            raise self.refuse("COLLATE is not supported")
        if tok.is_word("at") and self.peek(1).is_word("time"):
            raise self.refuse("AT TIME ZONE is not supported")
        if tok.is_word("overlaps"):
            raise self.refuse("OVERLAPS is not supported")
        if tok.is_word("operator") and self.peek(1).is_op("("):
            raise self.refuse(
                "OPERATOR(...) is not supported; write the operator itself (=, <, LIKE…)"
            )
        if tok.kind == "op" and tok.value not in COMPARISON_OPS and tok.value not in ",();:":
            raise self.refuse(operator_message(tok.value))

    def primary(self) -> Expr:
        tok = self.peek()
        if tok.kind == "string":
            self.advance()
            return Literal.string(tok.value)
        if tok.kind == "number":
            self.advance()
            return number_literal(tok.value)
        if tok.is_op("("):
            return self.parenthesised()
        if tok.kind == "qident":
            return Column(self.column_ref(tok)[1])
        if tok.kind == "ident":
            return self.word_primary(tok)
        if tok.kind == "op" and tok.value not in COMPARISON_OPS and tok.value not in ",();:":
            raise self.refuse(f"prefix operators ({tok.value}) are not supported", tok)
        raise self.syntax_error()

    def parenthesised(self) -> Expr:
        self.expect_op("(")
        if self.peek().is_word(*_SUBQUERY_WORDS):
            raise self.refuse("subqueries are not supported")
        self.deeper()
        expr = self.expr()
        if self.peek().is_op(","):
            raise self.refuse("row constructors ((a, b)) are not supported")
        self.expect_op(")")
        self.shallower()
        return expr

    def word_primary(self, tok: Token) -> Expr:
        constants = {
            "true": Literal.boolean(True),
            "false": Literal.boolean(False),
            "null": Literal.null(),
        }
        if tok.value in constants:
            self.advance()
            return constants[tok.value]
        self.refuse_special_word(tok)
        if self.peek(1).kind == "string":
            raise self.refuse(
                f"typed literals ({tok.value} '...') are not supported; write the "
                "string alone, it takes the column's type"
            )
        if tok.value in NOT_AN_ALIAS:
            raise self.syntax_error()
        return Column(self.column_ref(tok)[1])

    def refuse_special_word(self, tok: Token) -> None:
        word = tok.value
        if word in SQL_VALUE_FUNCTIONS:
            raise self.refuse(
                f"{word.upper()} is not supported (subscriptions compare columns with constants)"
            )
        messages = {
            "case": "CASE expressions are not supported",
            "cast": "CAST is not supported; write the value as a plain literal",
            "exists": "EXISTS subqueries are not supported",
            "array": "arrays are not supported",
            "row": "row constructors are not supported",
            "any": "ANY/ALL/SOME is not supported; use IN (...)",
            "all": "ANY/ALL/SOME is not supported; use IN (...)",
            "some": "ANY/ALL/SOME is not supported; use IN (...)",
        }
        if word in messages:
            raise self.refuse(messages[word])
        if self.peek(1).is_op("("):
            raise self.refuse(f"function calls ({word}) are not supported")

    def column_ref(self, first: Token) -> tuple[int, str]:
        """A possibly qualified column: (index of its table in scope, name)."""
        parts = [self.name_token()]
        while self.peek().is_op(".") and not self.peek(1).is_op("*"):
            self.advance()
            parts.append(self.name_token())
        if self.peek().is_op(".") and self.peek(1).is_op("*"):
            raise self.refuse(f"{'.'.join(parts)}.* is only allowed as the select list", first)
        if self.peek().is_op("("):
            raise self.refuse(f"function calls ({'.'.join(parts)}) are not supported", first)
        return self.resolve(tuple(parts[:-1]), parts[-1], first)

    def name_token(self) -> str:
        tok = self.peek()
        if tok.kind in ("ident", "qident"):
            return self.advance().value
        raise self.syntax_error()

    def resolve(self, qualifier: tuple[str, ...], name: str, tok: Token) -> tuple[int, str]:
        if len(qualifier) > 2:
            raise self.refuse("cross-database references are not supported", tok)
        if not qualifier:
            if len(self.scope) > 1:
                raise self.refuse(
                    f'column "{name}" must be qualified with its table in a join '
                    f"(e.g. {self.scope[self.where_side or 1].label}.{name})",
                    tok,
                )
            return 0, name
        for index, source in enumerate(self.scope):
            if source.answers_to(qualifier):
                self.check_where_side(index, name, tok)
                return index, name
        raise self.missing_source(qualifier, tok)

    def check_where_side(self, index: int, name: str, tok: Token) -> None:
        if self.where_side is not None and index != self.where_side:
            joined = self.scope[self.where_side].label
            raise self.refuse(
                f"WHERE in a join subscription may only use columns of the joined "
                f"table {joined} (got {self.scope[index].label}.{name})",
                tok,
            )


def operator_message(op: str) -> str:
    if op in _ARITHMETIC:
        return f"arithmetic ({op}) is not supported"
    if op == "||":
        return "string concatenation (||) is not supported"
    if op.lstrip("!").startswith("~"):
        return f"regular expression operators ({op}) are not supported; use LIKE"
    return f"operator {op} is not supported"


def number_literal(text: str) -> Literal:
    if any(c in text for c in ".eE"):
        return Literal.numeric(Decimal(text))
    return Literal.integer(int(text))


def make_comparison(op: ComparisonOp, left: Expr, right: Expr) -> Comparison:
    """``left op right`` with a column (or any non-literal) on the left."""
    if isinstance(left, Literal) and not isinstance(right, Literal):
        return Comparison(MIRRORED[op], right, left)
    return Comparison(op, left, right)


def make_distinct(left: Expr, right: Expr, distinct: bool) -> IsDistinct:
    if isinstance(left, Literal) and not isinstance(right, Literal):
        left, right = right, left
    return IsDistinct(left, right, negated=not distinct)


def make_in(expr: Expr, items: list[Expr], negated: bool = False) -> InList:
    """IN with its items in canonical order (order never matters). Duplicates stay:
    with two or more constants Postgres compares in their common type, with one in
    the column's (``real_col IN (0.1, 0.1)`` is not ``real_col IN (0.1)``)."""
    return InList(expr, tuple(sorted(items, key=lambda item: item.to_sql())), negated)


def make_and(items: list[Expr]) -> And:
    flat: list[Expr] = []
    for item in items:
        flat.extend(item.items if isinstance(item, And) else (item,))
    return And(tuple(flat))


def make_or(items: list[Expr]) -> Or:
    flat: list[Expr] = []
    for item in items:
        flat.extend(item.items if isinstance(item, Or) else (item,))
    return Or(tuple(flat))
