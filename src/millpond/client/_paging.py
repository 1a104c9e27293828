"""Walking a paged list, sans-I/O: which page to ask for next, and when the end is reached.

A paged list answers at most ``limit`` items after a cursor, the key or id of the previous
page's last item: ``after`` for lists in key order, ``before`` for the newest-first logs
(audit, checks, jobs). :class:`Pages` asks for one page after another, from ``start`` on,
until a page comes back short. The transports' ``iterate`` send its calls, one page at a
time as the items are consumed; the resources' ``iter*`` methods describe them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Generic, TypeVar

from ..errors import MillpondError
from ._base import Call

T = TypeVar("T")

PAGE_SIZE = 100
"""Items asked for per request unless ``page_size=`` says otherwise."""
MAX_PAGE_SIZE = 1000
"""The most items the server answers in one page, for every paged list."""

Cursor = str | int


def check_page_size(size: int) -> int:
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be 1 to {MAX_PAGE_SIZE}, not {size}")
    return size


class Pages(Generic[T]):
    """The state of one walk through a paged list. Use::

    pages = Pages(call, lambda item: item.id, size=100)
    while (call := pages.next_call()) is not None:
        for item in pages.feed(send(call)):
            ...

    ``call`` is the list's request with its filters (no ``limit`` or cursor: those are
    added per page); ``cursor`` gives an item's key or id; ``param`` names the cursor's
    query parameter (``after`` or ``before``); ``start``: begin after (before) this one."""

    def __init__(
        self,
        call: Call[list[T]],
        cursor: Callable[[T], Cursor],
        *,
        param: str = "after",
        size: int = PAGE_SIZE,
        start: Cursor | None = None,
    ) -> None:
        self._call = call
        self._cursor = cursor
        self._param = param
        self._size = check_page_size(size)
        self._position = start
        self._done = False

    def next_call(self) -> Call[list[T]] | None:
        """The request for the next page, or ``None`` once the last page was read."""
        if self._done:
            return None
        params = {**(self._call.params or {}), "limit": str(self._size)}
        if self._position is not None:
            params[self._param] = str(self._position)
        return replace(self._call, params=params)

    def feed(self, page: list[T]) -> list[T]:
        """Take the page just received and return its items. A short page is the last;
        a full one whose last item does not move the cursor is a server error (going on
        would fetch it again forever)."""
        if len(page) < self._size:
            self._done = True
        if page:
            position = self._cursor(page[-1])
            if not self._done and position == self._position:
                raise MillpondError(
                    f"GET {self._call.path} answered the page {self._param} "
                    f"{position!r} again: stopping"
                )
            self._position = position
        return page
