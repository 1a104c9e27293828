"""The one error subscriptions are refused with."""

from __future__ import annotations


class UnsupportedQuery(ValueError):
    """A query the subscription engine refuses; ``message`` names the unsupported part.

    ``position`` is the 1-based character offset in the query text (as Postgres reports
    error positions), or None when the problem is not at one place (e.g. binding).
    """

    code = "unsupported_query"

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


class QuerySyntaxError(UnsupportedQuery):
    """The query text is not valid SQL (as far as the subscription grammar goes)."""
