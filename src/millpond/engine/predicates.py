"""Subscription predicates: parse a subscription query, bind it to a table's column
types, evaluate rows against it as Postgres would, and index many queries so a changed
row is matched only against the queries it can match. Pure: no I/O, standard library
only; the server's realtime hub and the SDK's cache share it.

Grammar
-------
::

    query     := SELECT * FROM table [WHERE predicate] [;]
               | SELECT x.* FROM table [AS] x [[INNER] JOIN table [AS] y ON x.k = y.k]
                 [WHERE predicate over y's columns]                  -- a semi-join
    table     := [schema .] name
    predicate := predicate OR predicate | predicate AND predicate | NOT predicate
               | operand (= | <> | != | < | <= | > | >=) operand
               | operand [NOT] IN (operand, ...)
               | operand [NOT] BETWEEN [SYMMETRIC] operand AND operand
               | operand [NOT] LIKE | ILIKE 'pattern' [ESCAPE 'c']
               | operand IS [NOT] NULL | ISNULL | NOTNULL
               | operand IS [NOT] TRUE | FALSE | UNKNOWN
               | operand IS [NOT] DISTINCT FROM operand
               | boolean column | TRUE | FALSE | NULL | ( predicate )
    operand   := [qualifier .] column | 'string' | [-]number | TRUE | FALSE | NULL
               | ( predicate )

with Postgres' precedence (OR < AND < NOT < IS < comparison < LIKE/BETWEEN/IN),
case-insensitive keywords, unquoted identifiers folded to lower case, ``"quoted"``
identifiers, ``''`` inside strings, ``--`` and ``/* */`` comments. Everything else is
refused with :class:`UnsupportedQuery` naming the part: other select lists, functions,
casts, arithmetic, subqueries, ORDER BY/LIMIT/GROUP BY…, other joins, several tables,
parameters, E'' strings, typed literals (``date '…'``), ANY/ALL, SIMILAR TO, COLLATE.

Semantics
---------
* Typing follows Postgres' operator resolution (checked against a real server): a
  quoted literal takes the type of what it is compared with and is read by that type's
  input function (``'5'`` for an int column is 5, ``'x'`` is refused); ``text = 5`` is
  refused ("operator does not exist: text = integer"); int vs numeric compares
  exactly; anything vs float4/float8 compares as double precision (float4 values
  exactly as stored); ``char(n)`` ignores trailing spaces in comparisons (not in
  LIKE); date/timestamp/timestamptz compare across types, a time without zone read in
  the session time zone (``bind(timezone=…)``, UTC by default). ``IN`` with two or more
  constants uses their common type as Postgres does (so ``real_col IN (0.1, 0.2)``
  compares as real while ``real_col = 0.1`` compares as double precision).
* Three-valued logic: a comparison with NULL is unknown; NOT unknown is unknown;
  AND/OR follow SQL's truth tables; ``x IN (…, NULL)`` is unknown rather than false
  when nothing equals; BETWEEN is ``x >= lo AND x <= hi``. A row matches only if the
  WHERE clause is TRUE.
* NaN (float and numeric) equals itself and is greater than every other number.
* Strings compare by code point, which is Postgres' order under the C collation (the
  embedded cluster's, ``initdb --locale=C``); under another collation ``<``/``>`` on
  text would differ. ILIKE folds ASCII letters only, as under C.
* Row values are what psycopg's default loaders give: int, Decimal, float, str, bool,
  date, datetime (aware for timestamptz), uuid as str or UUID (:func:`python_value`
  turns the wire's JSON values into these). A row must hold every column the query
  references.
* Columns of other types (json, arrays, intervals…) can only be tested with IS NULL.
"""

from __future__ import annotations

from ._predicates._ast import (
    And,
    Between,
    Column,
    Comparison,
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
    quote_ident,
)
from ._predicates._bind import BoundQuery, BoundSemiJoin, EqualityConstraint, Row, bind
from ._predicates._errors import QuerySyntaxError, UnsupportedQuery
from ._predicates._index import SubscriptionIndex
from ._predicates._join import SemiJoinState
from ._predicates._parser import parse_predicate, parse_query
from ._predicates._types import NAN, canonical_type, python_value, value_key

__all__ = [
    "NAN",
    "And",
    "Between",
    "BoundQuery",
    "BoundSemiJoin",
    "Column",
    "Comparison",
    "EqualityConstraint",
    "Expr",
    "InList",
    "IsBool",
    "IsDistinct",
    "IsNull",
    "Like",
    "Literal",
    "Not",
    "Or",
    "Query",
    "QuerySyntaxError",
    "Row",
    "SemiJoin",
    "SemiJoinState",
    "SubscriptionIndex",
    "UnsupportedQuery",
    "bind",
    "canonical_type",
    "parse_predicate",
    "parse_query",
    "python_value",
    "quote_ident",
    "value_key",
]
