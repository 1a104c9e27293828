"""Postgres keywords the parser and the SQL writer need to know about."""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


RESERVED = _words(
    """
    all analyse analyze and any array as asc asymmetric both case cast check collate column
    constraint create current_catalog current_date current_role current_time
    current_timestamp current_user default deferrable desc distinct do else end except false
    fetch for foreign from grant group having in initially intersect into lateral leading
    limit localtime localtimestamp not null offset on only or order placing primary
    references returning select session_user some symmetric system_user table then to
    trailing true union unique user using variadic when where window with
    """
)

TYPE_FUNC_NAME = _words(
    """
    authorization binary collation concurrently cross current_schema freeze full ilike inner
    is isnull join left like natural notnull outer overlaps right similar tablesample verbose
    """
)

COL_NAME = _words(
    """
    between bigint bit boolean char character coalesce dec decimal exists extract float
    greatest grouping inout int integer interval json json_array json_arrayagg json_exists
    json_object json_objectagg json_query json_scalar json_serialize json_table json_value
    least merge_action national nchar none normalize nullif numeric out overlay position
    precision real row setof smallint substring time timestamp treat trim values varchar
    xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi
    xmlroot xmlserialize xmltable
    """
)

QUOTE_AS_IDENTIFIER = RESERVED | TYPE_FUNC_NAME | COL_NAME
"""Identifiers the canonical SQL always double-quotes."""

NOT_AN_ALIAS = RESERVED | TYPE_FUNC_NAME
"""Words that end a FROM item rather than name its alias."""

SQL_VALUE_FUNCTIONS = _words(
    """
    current_date current_time current_timestamp localtime localtimestamp current_user
    current_role session_user system_user user current_catalog current_schema
    """
)
"""Keywords that read as values but are functions (and change over time)."""

CLAUSES_AFTER_WHERE = {
    "group": "GROUP BY",
    "having": "HAVING",
    "window": "WINDOW",
    "order": "ORDER BY",
    "limit": "LIMIT",
    "offset": "OFFSET",
    "fetch": "FETCH",
    "for": "FOR UPDATE/SHARE",
    "union": "UNION",
    "intersect": "INTERSECT",
    "except": "EXCEPT",
    "returning": "RETURNING",
    "into": "INTO",
}
"""Clauses that may follow FROM/WHERE in a SELECT, all refused by name."""
