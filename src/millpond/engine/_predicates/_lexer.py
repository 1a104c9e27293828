"""A tokenizer for the subscription subset of Postgres SQL, following Postgres' lexer
(``scan.l``): identifiers fold to lower case (ASCII only) and are truncated to 63 bytes,
``"quoted"`` identifiers keep their case, ``'strings'`` double their quotes and take
backslashes literally (``standard_conforming_strings``), ``--`` and nested ``/* */``
comments are skipped, and operators are lexed greedily with Postgres' rule for a
trailing ``+``/``-``. Forms outside the subset (E'' strings, dollar quotes, bit
strings, parameters) are refused here, by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._errors import QuerySyntaxError, UnsupportedQuery

TokenKind = Literal["ident", "qident", "string", "number", "op", "eof"]

NAMEDATALEN = 64
WHITESPACE = " \t\n\r\f\v"
OP_CHARS = "~!@#^&|`?+-*/%<>="
SELF_CHARS = ",()[].;"
_KEEP_TRAILING_SIGN = "~!@#^&|`?%"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    value: str
    """Identifiers: the folded name; operators: the operator (``!=`` as ``<>``)."""
    pos: int
    """0-based offset of the token in the query text."""
    end: int

    def is_word(self, *words: str) -> bool:
        """An unquoted identifier spelling one of ``words`` (a keyword)."""
        return self.kind == "ident" and self.value in words

    def is_op(self, *ops: str) -> bool:
        return self.kind == "op" and self.value in ops


def fold_identifier(text: str) -> str:
    return truncate_identifier(text.translate(_ASCII_LOWER))


def truncate_identifier(name: str) -> str:
    """Postgres keeps the first NAMEDATALEN-1 bytes of an identifier."""
    data = name.encode()
    if len(data) < NAMEDATALEN:
        return name
    return data[: NAMEDATALEN - 1].decode(errors="ignore")


def _is_ident_start(c: str) -> bool:
    return (c.isascii() and (c.isalpha() or c == "_")) or not c.isascii()


def _is_ident_char(c: str) -> bool:
    return _is_ident_start(c) or c.isdigit() or c == "$"


class _Lexer:
    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.i = 0
        self.tokens: list[Token] = []

    def error(self, message: str, pos: int | None = None) -> QuerySyntaxError:
        where = self.i if pos is None else pos
        return QuerySyntaxError(f"{message} (position {where + 1})", where + 1)

    def refuse(self, message: str, pos: int) -> UnsupportedQuery:
        return UnsupportedQuery(message, pos + 1)

    def run(self) -> list[Token]:
        while True:
            self.skip_space()
            if self.i >= len(self.sql):
                self.tokens.append(Token("eof", "", self.i, self.i))
                return self.tokens
            self.tokens.append(self.next_token())

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.sql[j] if j < len(self.sql) else ""

    def skip_space(self) -> None:
        while self.i < len(self.sql):
            c = self.sql[self.i]
            if c in WHITESPACE:
                self.i += 1
            elif c == "-" and self.peek(1) == "-":
                while self.i < len(self.sql) and self.sql[self.i] not in "\r\n":
                    self.i += 1
            elif c == "/" and self.peek(1) == "*":
                self.skip_block_comment()
            else:
                return

    def skip_block_comment(self) -> None:
        start, depth = self.i, 0
        while self.i < len(self.sql):
            pair = self.sql[self.i : self.i + 2]
            if pair == "/*":
                depth, self.i = depth + 1, self.i + 2
            elif pair == "*/":
                depth, self.i = depth - 1, self.i + 2
                if depth == 0:
                    return
            else:
                self.i += 1
        raise self.error("unterminated /* comment", start)

    def next_token(self) -> Token:
        c = self.sql[self.i]
        if _is_ident_start(c):
            return self.word()
        if c == '"':
            return self.quoted_identifier()
        if c == "'":
            return self.string()
        if c.isdigit() or (c == "." and self.peek(1).isdigit()):
            return self.number()
        if c == "$":
            raise self.dollar()
        if c in SELF_CHARS:
            self.i += 1
            return Token("op", c, self.i - 1, self.i)
        if c == ":":
            return self.colon()
        if c in OP_CHARS:
            return self.operator()
        raise self.error(f"syntax error at or near {c!r}")

    def word(self) -> Token:
        start, c, nxt = self.i, self.sql[self.i], self.peek(1)
        prefixed = {
            "e": "escape string literals (E'...') are not supported; use a standard '...' string",
            "b": "bit-string literals (B'...') are not supported",
            "x": "bit-string literals (X'...') are not supported",
            "n": "national character literals (N'...') are not supported",
        }
        if nxt == "'" and c.lower() in prefixed:
            raise self.refuse(prefixed[c.lower()], start)
        if c in "uU" and nxt == "&":
            raise self.refuse("Unicode escape literals (U&...) are not supported", start)
        while self.i < len(self.sql) and _is_ident_char(self.sql[self.i]):
            self.i += 1
        return Token("ident", fold_identifier(self.sql[start : self.i]), start, self.i)

    def quoted(self, quote: str, what: str) -> str:
        """The text between ``quote``s (a doubled quote stands for one)."""
        start = self.i
        self.i += 1
        parts: list[str] = []
        while True:
            end = self.sql.find(quote, self.i)
            if end < 0:
                raise self.error(f"unterminated quoted {what}", start)
            parts.append(self.sql[self.i : end])
            self.i = end + 1
            if self.peek() != quote:
                text = "".join(parts)
                if "\0" in text:
                    raise self.refuse(f"quoted {what}s cannot contain NUL characters", start)
                return text
            parts.append(quote)
            self.i += 1

    def quoted_identifier(self) -> Token:
        start = self.i
        name = self.quoted('"', "identifier")
        if not name:
            raise self.error("zero-length delimited identifier", start)
        return Token("qident", truncate_identifier(name), start, self.i)

    def string(self) -> Token:
        start = self.i
        return Token("string", self.quoted("'", "string"), start, self.i)

    def number(self) -> Token:
        start = self.i
        self.digits()
        if self.peek() == "." and self.peek(1) != ".":
            self.i += 1
            self.digits()
        if self.peek() in ("e", "E"):
            self.i += 1
            if self.peek() in ("+", "-"):
                self.i += 1
            if not self.peek().isdigit():
                raise self.error("trailing junk after numeric literal", start)
            self.digits()
        if self.i < len(self.sql) and _is_ident_start(self.sql[self.i]):
            raise self.junk(start)
        return Token("number", self.sql[start : self.i], start, self.i)

    def digits(self) -> None:
        while self.peek().isdigit() and self.peek().isascii():
            self.i += 1

    def junk(self, start: int) -> UnsupportedQuery:
        text, nxt = self.sql[start : self.i], self.sql[self.i]
        if text == "0" and nxt in "xXoObB":
            return self.refuse(
                "hexadecimal, octal and binary integer literals are not supported", start
            )
        if nxt == "_":
            return self.refuse("numeric literals with underscores are not supported", start)
        return self.error("trailing junk after numeric literal", start)

    def dollar(self) -> UnsupportedQuery:
        start = self.i
        if self.peek(1).isdigit():
            self.i += 1
            self.digits()
            return self.refuse(
                f"parameters (${self.sql[start + 1 : self.i]}) are not supported; "
                "write the value as a literal",
                start,
            )
        return self.refuse("dollar-quoted strings are not supported", start)

    def colon(self) -> Token:
        start = self.i
        if self.peek(1) == ":":
            self.i += 2
            return Token("op", "::", start, self.i)
        self.i += 1
        return Token("op", ":", start, self.i)

    def operator(self) -> Token:
        start = self.i
        end = start
        while end < len(self.sql) and self.sql[end] in OP_CHARS:
            end += 1
        text = self.sql[start:end]
        for comment in ("/*", "--"):
            at = text.find(comment, 1)
            if at > 0:
                text = text[:at]
        if len(text) > 1 and text[-1] in "+-" and not any(c in _KEEP_TRAILING_SIGN for c in text):
            text = text.rstrip("+-") or text[0]
        self.i = start + len(text)
        return Token("op", "<>" if text == "!=" else text, start, self.i)


def tokenize(sql: str) -> list[Token]:
    """The tokens of ``sql``, ending with an ``eof`` token."""
    return _Lexer(sql).run()
