"""One socket of a gateway connection, as an asyncio protocol.

During the startup phase an endpoint buffers what it receives and the gateway reads
packets from it (``read_packet``, ``read_message``). Once the connection is
authenticated and Postgres is ready, the endpoint is attached to a :class:`Relay` and
from then on every chunk it receives is written straight to the other socket: no
parsing, no copying, no coroutine switch — ``data_received`` → ``transport.write``.

Flow control: when one side's outgoing buffer fills (``pause_writing``), the other
side stops reading until it drains (``resume_writing``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from . import protocol as pq

if TYPE_CHECKING:
    from .relay import Relay

# ReadyForQuery: 'Z', length 5, then the transaction status: idle, in a transaction, failed
_READY_FOR_QUERY = tuple(b"Z\x00\x00\x00\x05" + status for status in (b"I", b"T", b"E"))
_HIGH_WATER = 1 << 20  # bytes a socket may have unsent before its peer stops reading
_LINGER_S = 2.0  # how long a closing socket waits for its peer to close first


class Endpoint(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.relay: Relay | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._discarding = False  # closing: what comes in is dropped (close_when_read)
        self._linger: asyncio.TimerHandle | None = None
        self.lost = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        self._buf += data
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        if self._linger is not None:
            self._linger.cancel()
        self._wake()
        if not self.lost.done():
            self.lost.set_result(None)
        relay = self.relay
        if relay is not None:
            relay.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- startup phase -------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        return self._eof

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def close_when_read(self) -> None:
        """Close once the peer has closed its side (at most ``_LINGER_S`` from now),
        discarding what it still sends. Closing a socket with input unread makes the
        kernel send a reset, which can destroy the FATAL just written before the client
        has read it: the client then sees "server closed the connection unexpectedly"
        instead of the reason."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._discarding = True
        self._buf.clear()
        if self._eof:
            transport.close()
            return
        with contextlib.suppress(RuntimeError, AttributeError):
            transport.resume_reading()
        self._linger = asyncio.get_running_loop().call_later(_LINGER_S, transport.close)

    def pending(self) -> int:
        return len(self._buf)

    def take_buffered(self) -> bytes:
        data = bytes(self._buf)
        self._buf.clear()
        return data

    async def read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self._eof:
                raise ConnectionResetError("the connection closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def read_packet(self) -> bytes:
        """An untyped (first) packet's body."""
        return await self.read_exactly(pq.packet_length(await self.read_exactly(4)))

    async def read_message(self) -> tuple[bytes, bytes]:
        """A typed message: its type byte and payload."""
        kind, length = pq.message_length(await self.read_exactly(5))
        return kind, await self.read_exactly(length) if length else b""


class ClientEndpoint(Endpoint):
    """The client's socket: in relay mode, everything goes to Postgres."""

    def __init__(self, on_connected: Callable[[ClientEndpoint], None]) -> None:
        super().__init__()
        self._on_connected = on_connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._on_connected(self)

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        if relay is None or self._discarding:
            Endpoint.data_received(self, data)
            return
        relay.idle = False
        relay.upstream_transport.write(data)

    def pause_writing(self) -> None:
        if self.relay is not None:
            self.relay.pause(self.relay.upstream_transport)

    def resume_writing(self) -> None:
        if self.relay is not None:
            self.relay.resume(self.relay.upstream_transport)


class UpstreamEndpoint(Endpoint):
    """Postgres' socket: in relay mode, everything goes to the client. A chunk that ends
    with ReadyForQuery marks the session idle (at a message boundary, waiting for the
    client) — the one thing the gateway looks at, and only at the chunk's last 6 bytes.
    (Data that happens to end like a ReadyForQuery at a chunk's end could fool it; the
    next chunk corrects it. Idle only matters for the idle timeout and for where a FATAL
    may be written.)"""

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        if relay is None:
            Endpoint.data_received(self, data)
            return
        relay.client_transport.write(data)
        if len(data) >= 6:
            at_rest = data.endswith(_READY_FOR_QUERY)
            relay.last = data[-5:]
        else:  # the end of a ReadyForQuery may come alone
            joined = relay.last + data
            at_rest = joined.endswith(_READY_FOR_QUERY)
            relay.last = joined[-5:]
        if at_rest:
            relay.idle = True
            relay.idle_since = time.monotonic()
            if relay.closing is not None:
                relay.finish()
        else:
            relay.idle = False

    def pause_writing(self) -> None:
        if self.relay is not None:
            self.relay.pause(self.relay.client_transport)

    def resume_writing(self) -> None:
        if self.relay is not None:
            self.relay.resume(self.relay.client_transport)
