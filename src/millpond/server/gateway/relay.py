"""A gateway connection: who it belongs to, its two sockets, and how it ends.

The relay itself is in ``endpoint.py`` (``data_received`` → the other ``write``); this
object holds the state the gateway needs around it: the API key and database the
connection was opened with (rechecked when keys or rights change), the client-facing and
real cancel keys, and whether the session sits idle at a message boundary.

Ending a connection with a reason (revoked key, idle timeout, shutdown) sends the client
a FATAL ErrorResponse — only at a message boundary, so the client can read it. If the
session is busy, the running statement is cancelled first and the error follows its
ReadyForQuery; if that does not come within a few seconds, both sockets are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import protocol as pq
from .endpoint import ClientEndpoint, UpstreamEndpoint

_FORCE_CLOSE_AFTER_S = 3.0


@dataclass(frozen=True)
class Owner:
    """What a connection was opened with: rechecked when keys or rights change."""

    api_key: str
    key_id: str
    user_id: int
    database: str  # as the client wrote it: owner/name
    database_id: int
    sql_role: str  # owner / rw / ro
    cluster: str = "default"  # the Postgres cluster the database lives on


class Relay:
    def __init__(
        self,
        owner: Owner,
        client: ClientEndpoint,
        client_key: tuple[int, int],
        on_close: Callable[[Relay], None],
    ) -> None:
        self.owner = owner
        self.client = client
        self.client_key = client_key
        self._on_close = on_close
        assert client.transport is not None
        self.client_transport: asyncio.Transport = client.transport
        self.upstream_transport: asyncio.Transport  # set by start()
        self.upstream: UpstreamEndpoint | None = None
        self.backend_key: tuple[int, int] | None = None
        self.send_cancel: Callable[[], None] | None = None
        # relay state, read and written by the endpoints on every chunk
        self.idle = True
        self.idle_since = time.monotonic()
        self.last = b""  # the end of the previous chunk from Postgres
        self.closing: bytes | None = None  # the FATAL to send at the next boundary
        self.closed = False
        self.relaying = False
        self._force: asyncio.TimerHandle | None = None

    def start(self, upstream: UpstreamEndpoint, greeting: bytes) -> None:
        """Send the client its greeting (AuthenticationOk … ReadyForQuery) and splice."""
        assert upstream.transport is not None
        self.upstream = upstream
        self.upstream_transport = upstream.transport
        self.client_transport.write(greeting)
        self.relaying = True
        self.idle = True
        self.idle_since = time.monotonic()
        upstream.relay = self
        self.client.relay = self
        # anything either side sent early goes on as it would have
        early = self.client.take_buffered()
        if early:
            self.idle = False
            self.upstream_transport.write(early)
        late = upstream.take_buffered()
        if late:
            self.client_transport.write(late)
        if self.client.is_closed or upstream.is_closed:
            self.close()

    # -- flow control ---------------------------------------------------------------------

    @staticmethod
    def pause(transport: asyncio.Transport) -> None:
        with contextlib.suppress(RuntimeError, AttributeError):
            transport.pause_reading()

    @staticmethod
    def resume(transport: asyncio.Transport) -> None:
        with contextlib.suppress(RuntimeError, AttributeError):
            transport.resume_reading()

    # -- ending -----------------------------------------------------------------------------

    def terminate(self, sqlstate: str, text: str, hint: str | None = None) -> None:
        """End the connection with a FATAL error the client can read."""
        if self.closed or self.closing is not None:
            return
        self.closing = pq.error_response(sqlstate, text, hint=hint)
        if not self.relaying:
            return  # the startup code checks ``closing`` before it starts relaying
        if self.idle:
            self.finish()
            return
        if self.send_cancel is not None:
            self.send_cancel()
        self._force = asyncio.get_running_loop().call_later(_FORCE_CLOSE_AFTER_S, self.close)

    def finish(self) -> None:
        """At a message boundary: send the pending FATAL, log out of Postgres, close."""
        if self.closed:
            return
        if self.closing is not None:
            _write(self.client_transport, self.closing)
        if self.upstream is not None:
            _write(self.upstream_transport, pq.TERMINATE)
        self.close(linger=self.closing is not None)

    def close(self, *, linger: bool = False) -> None:
        """Close both sockets; with ``linger``, the client's once it has read the FATAL
        (``ClientEndpoint.close_when_read``)."""
        if self.closed:
            return
        self.closed = True
        if self._force is not None:
            self._force.cancel()
        if linger:
            self.client.close_when_read()
        else:
            self.client.close()
        if self.upstream is not None:
            self.upstream.close()
        self._on_close(self)


def _write(transport: asyncio.Transport, data: bytes) -> None:
    if not transport.is_closing():
        with contextlib.suppress(RuntimeError, OSError):
            transport.write(data)
