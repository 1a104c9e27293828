"""The id of the HTTP request being served, for whatever runs on its behalf: set by
:class:`~.metrics.ObserveRequests` for the request's duration (and inherited by the tasks
and callbacks it starts), read by the JSON log formatter and by the query service (which
shows it to Postgres as the session's ``application_name``). No imports: services may
read it without depending on the web framework."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

request_id: ContextVar[str | None] = ContextVar("millpond_request_id", default=None)


def detached(coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
    """A task that outlives the request that starts it (a database's scheduler, a
    worker's stderr reader): it does not inherit the request's id, which would label its
    log lines, and the timers it sets, for as long as it runs."""
    context = contextvars.copy_context()
    context.run(request_id.set, None)
    return asyncio.create_task(coro, name=name, context=context)


def current_request_id() -> str | None:
    """The id of the request being served; None outside one."""
    return request_id.get()
