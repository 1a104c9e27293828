"""LIKE and ILIKE as Postgres evaluates them: ``%`` matches any run of characters,
``_`` exactly one character, the escape character (backslash unless ``ESCAPE`` says
otherwise; ``ESCAPE ''`` means none) makes the next character literal. Matching is by
characters, case-sensitive for LIKE; ILIKE folds ASCII letters only, as Postgres does
under the C collation."""

from __future__ import annotations

import re
from collections.abc import Callable

Matcher = Callable[[str], bool]


def _pieces(pattern: str, escape: str) -> list[str]:
    """The pattern as pieces: ``%`` and ``_`` for the wildcards, ``=c`` for a literal
    character ``c`` (escaped wildcards included)."""
    pieces: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if escape and c == escape:
            if i + 1 >= len(pattern):
                raise ValueError("LIKE pattern must not end with escape character")
            pieces.append("=" + pattern[i + 1])
            i += 2
            continue
        pieces.append(c if c in "%_" else "=" + c)
        i += 1
    return pieces


def compile_like(pattern: str, escape: str | None, case_insensitive: bool) -> Matcher:
    """A function telling whether a string matches ``pattern``. ``escape`` None is the
    default (backslash). Raises ValueError for patterns Postgres rejects."""
    if escape is None:
        escape = "\\"
    if len(escape) > 1:
        raise ValueError("invalid escape string (it must be empty or one character)")
    pieces = _pieces(pattern, escape)
    if not case_insensitive:
        fast = _fast_path(pieces)
        if fast is not None:
            return fast
    regex = "".join(
        ".*" if p == "%" else "." if p == "_" else re.escape(p[1:]) for p in _collapse(pieces)
    )
    flags = re.DOTALL | (re.IGNORECASE | re.ASCII if case_insensitive else 0)
    match = re.compile(regex, flags).fullmatch

    def matches(value: str) -> bool:
        return match(value) is not None

    return matches


def _collapse(pieces: list[str]) -> list[str]:
    """Runs of ``%`` match what one ``%`` matches (and regexes stay linear)."""
    out: list[str] = []
    for piece in pieces:
        if piece == "%" and out and out[-1] == "%":
            continue
        out.append(piece)
    return out


def _fast_path(pieces: list[str]) -> Matcher | None:
    """Plain string tests for the common shapes: ``abc``, ``abc%``, ``%abc``, ``%abc%``."""
    if "_" in pieces:
        return None
    pieces = _collapse(pieces)
    lead = bool(pieces) and pieces[0] == "%"
    trail = len(pieces) > int(lead) and pieces[-1] == "%"
    body = pieces[int(lead) : len(pieces) - int(trail)]
    if "%" in body:
        return None
    literal = "".join(p[1:] for p in body)
    if lead and trail:
        return lambda value: literal in value
    if lead:
        return lambda value: value.endswith(literal)
    if trail:
        return lambda value: value.startswith(literal)
    return lambda value: value == literal
