"""The I/O half of the client: send a :class:`Call`, sleep between retries. Everything
else (URLs, headers, parsing, error mapping, retry decisions) is in ``_base``."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncIterator

import httpx

from .._base import Attempts, Call, ClientConfig, Retry, T, TimeoutTypes
from .._paging import Pages


class AsyncTransport:
    """Sends calls over an ``httpx.AsyncClient``, retrying as the client's policy says.

    After ``fork()`` the child gets a new HTTP client of its own: the parent's kept-alive
    connections stay the parent's (two processes reading one socket would swap answers).
    An ``http_client`` passed in is the caller's to manage across forks."""

    def __init__(self, config: ClientConfig, http_client: httpx.AsyncClient | None) -> None:
        self.config = config
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()
        _transports.add(self)

    def _forked(self) -> None:
        if self._owns_http:
            self._http = httpx.AsyncClient()  # the parent's is left alone, never closed here

    async def request(
        self, call: Call[T], *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> T:
        attempts = Attempts(self.config, call, timeout=timeout, max_retries=max_retries)
        spec = attempts.request
        while True:
            outcome: T | Retry
            try:
                response = await self._http.request(
                    spec.method,
                    spec.url,
                    params=spec.params,
                    json=spec.json,
                    headers=spec.headers,
                    timeout=spec.timeout,
                )
            except httpx.TransportError as exc:
                outcome = attempts.after_error(exc)
            else:
                outcome = attempts.after_response(response)
            if not isinstance(outcome, Retry):
                return outcome
            await asyncio.sleep(outcome.delay)

    async def iterate(
        self, pages: Pages[T], *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> AsyncIterator[T]:
        """Every item of a paged list, one page requested at a time as they are consumed
        (each page's request retried as any call)."""
        while (call := pages.next_call()) is not None:
            page = await self.request(call, timeout=timeout, max_retries=max_retries)
            for item in pages.feed(page):
                yield item

    async def aclose(self) -> None:
        """Close the HTTP client, unless it was passed in (then its owner closes it)."""
        if self._owns_http:
            await self._http.aclose()


_transports: weakref.WeakSet[AsyncTransport] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for transport in list(_transports):
        transport._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
