"""The id of the HTTP request being served, for whatever runs on its behalf: set by
:class:`~.metrics.ObserveRequests` for the request's duration (and inherited by the tasks
and callbacks it starts), read by the JSON log formatter and by the query service (which
shows it to Postgres as the session's ``application_name``). No imports: services may
read it without depending on the web framework."""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("millpond_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served; None outside one."""
    return request_id.get()
