"""Column names from files made into Postgres identifiers people can type unquoted.

``normalise("Unit Price (€)")`` → ``"unit_price"``: lower case, runs of anything but
letters, digits and ``_`` become one ``_``, no leading/trailing ``_``, a leading digit
gets a ``_`` prefix, at most 63 bytes (Postgres's limit), empty names become
``column_<n>``. :func:`unique_names` then makes duplicates unique with ``_2``, ``_3``…
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

MAX_IDENTIFIER_BYTES = 63
_NOT_WORD = re.compile(r"[^\w]+")


def truncate(name: str, limit: int = MAX_IDENTIFIER_BYTES) -> str:
    encoded = name.encode()
    if len(encoded) <= limit:
        return name
    return encoded[:limit].decode(errors="ignore")


def normalise(raw: object, position: int) -> str:
    """One column name; ``position`` is 1-based, for names that come out empty."""
    text = "" if raw is None else str(raw)
    text = unicodedata.normalize("NFKC", text).strip().lower()
    text = _NOT_WORD.sub("_", text).strip("_")
    if text and text[0].isdigit():
        text = "_" + text
    text = truncate(text).rstrip("_") if text else text
    return text or f"column_{position}"


def unique_names(raw: Sequence[object]) -> list[str]:
    """Normalised, unique names for a header row, in order."""
    taken: set[str] = set()
    result: list[str] = []
    for i, value in enumerate(raw, start=1):
        base = normalise(value, i)
        name, n = base, 1
        while name in taken:
            n += 1
            suffix = f"_{n}"
            name = truncate(base, MAX_IDENTIFIER_BYTES - len(suffix)) + suffix
        taken.add(name)
        result.append(name)
    return result


def generated_names(count: int) -> list[str]:
    """Names for a file without a header: ``column_1`` … ``column_<count>``."""
    return [f"column_{i}" for i in range(1, count + 1)]


def check_identifier(value: str, what: str) -> str | None:
    """Why ``value`` cannot name a table or schema, or None when it can (any text of
    1-63 bytes without NUL: it is always quoted with ``psycopg.sql.Identifier``)."""
    if not value:
        return f"{what} must not be empty"
    if "\x00" in value:
        return f"{what} must not contain NUL characters"
    if len(value.encode()) > MAX_IDENTIFIER_BYTES:
        return f"{what} is longer than {MAX_IDENTIFIER_BYTES} bytes"
    return None
