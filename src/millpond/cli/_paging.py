"""``--limit N`` and ``--all`` for every list command, in one place.

A list shows its first ``--limit`` items (100 unless told) or, with ``--all``, every one.
When some were left out, stderr says so and how to see them (stdout stays the list alone,
so scripts can parse it). Paged lists are read through the SDK's iterators, a page at a
time, asking for one item more than shown to know whether more are left; lists the server
answers whole are cut here; lists the server cuts at a most with no cursor to page further
(anonymous identities, schedules) say when that most was reached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice
from typing import Annotated, TypeVar

import typer

from ..client._paging import MAX_PAGE_SIZE

T = TypeVar("T")

PAGE = MAX_PAGE_SIZE
"""Items asked for per request with ``--all`` (the server's most)."""
DEFAULT_LIMIT = 100

Limit = Annotated[
    int,
    typer.Option(
        "--limit", min=1, metavar="N", help="Show at most N (the first N).", show_default=True
    ),
]
All = Annotated[bool, typer.Option("--all", help="Show every one, not only the first N.")]


def page_size(limit: int, every: bool) -> int:
    """Items to ask for per request: with ``--all`` the most, else enough for ``limit``
    and one more (to know whether more are left) in one request when it fits."""
    return PAGE if every else min(limit + 1, PAGE)


def shown(items: Iterable[T], limit: int, every: bool, total: int | None = None) -> list[T]:
    """Every item with ``every``, else the first ``limit`` (taken lazily: an iterator is
    read no further than one past them). When more are left out, stderr says so, with
    ``total`` if it is known."""
    if every:
        return list(items)
    found = list(islice(items, limit + 1))
    if len(found) > limit:
        of = "" if total is None else f" of {total}"
        typer.echo(
            f"(the first {limit}{of} shown; --all for every one, --limit N for more)", err=True
        )
    return found[:limit]


def whole(items: list[T], limit: int, every: bool) -> list[T]:
    """A list the server answers whole (it is not paged), cut to ``--limit``."""
    return shown(items, limit, every, total=len(items))


def capped(fetch: Callable[[int], list[T]], most: int, limit: int, every: bool) -> list[T]:
    """A list the server answers ``most`` items of at the very most, with no cursor to page
    further: ``fetch(n)`` asks for ``n``. When the most came back, stderr says there may
    be more that no request can show."""
    found = fetch(most if every else min(limit + 1, most))
    if len(found) >= most and (every or limit >= most):
        typer.echo(f"(the server lists {most} at most: any more are not shown)", err=True)
        return found
    return shown(found, limit, every)
