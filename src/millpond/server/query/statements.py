"""Find the statements of an HTTP query that would end the transaction it runs in.

``POST /v1/query`` promises one transaction, all or nothing, with the storage limit
checked before it commits. The server opens that transaction itself (``BEGIN``); a
``COMMIT;`` (or ``END``, ``ROLLBACK``, ``PREPARE TRANSACTION``, ``COMMIT PREPARED``…) in
the caller's SQL would end it early and run the rest outside it. Such statements are
refused before anything runs (``transaction_control``). Savepoints (``SAVEPOINT``,
``RELEASE``, ``ROLLBACK TO``) stay inside the transaction and are allowed; a ``COMMIT``
inside a procedure or a ``DO`` block cannot end a transaction that the server began with
``BEGIN`` (Postgres refuses it), so only top-level statements matter.

The SQL is split with Postgres' own lexer (pglast), which knows every quoting form
(strings, ``E''``, dollar quotes, quoted identifiers, comments). A string the lexer
refuses is not refused here: Postgres parses the whole string before it runs any of it,
so such SQL runs nothing and the caller gets Postgres' own syntax error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import parser

_ENDS = {"COMMIT", "END_P", "ABORT_P", "BEGIN_P", "START"}
_FILLER = {"WORK", "TRANSACTION"}
_COMMENTS = {"C_COMMENT", "SQL_COMMENT"}
_CANDIDATES = ("commit", "end", "abort", "begin", "start", "rollback", "prepare")


def transaction_control(sql_text: str) -> str | None:
    """The first top-level statement that controls the transaction, as written (e.g.
    ``"COMMIT"``), or None when there is none."""
    lowered = sql_text.lower()
    if not any(word in lowered for word in _CANDIDATES):
        return None  # the common case, without lexing
    try:
        tokens = parser.scan(sql_text)
    except parser.ParseError:
        return None
    for begin, words in _statement_heads(tokens):
        if _ends_transaction([name for name, _ in words]):
            return sql_text[begin : words[-1][1] + 1]
    return None


def _statement_heads(tokens: list[Any]) -> Iterator[tuple[int, list[tuple[str, int]]]]:
    """Each top-level statement's start and its first few tokens (name, end offset);
    comments skipped, semicolons inside parentheses (rule bodies) not boundaries."""
    depth = 0
    begin = 0
    head: list[tuple[str, int]] = []
    for token in tokens:
        if token.name in _COMMENTS:
            continue
        if token.name == "ASCII_59" and depth == 0:
            if head:
                yield begin, head
            head = []
            continue
        if token.name == "ASCII_40":
            depth += 1
        elif token.name == "ASCII_41":
            depth = max(0, depth - 1)
        if not head:
            begin = token.start
        if len(head) < 4:
            head.append((token.name, token.end))
    if head:
        yield begin, head


def _ends_transaction(words: list[str]) -> bool:
    first = words[0]
    if first in _ENDS:
        return True
    if first == "ROLLBACK":
        # ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name stays inside the transaction
        rest = [w for w in words[1:] if w not in _FILLER]
        return not rest or rest[0] != "TO"
    if first == "PREPARE":  # PREPARE TRANSACTION 'id', not PREPARE name AS …
        return len(words) > 1 and words[1] == "TRANSACTION"
    return False
