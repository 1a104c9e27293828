"""The relay's bookkeeping on the hot path, driven chunk by chunk (the sockets' transports
are stand-ins that record what is written): it relays every byte as it comes, and knows
when Postgres is waiting for the client even when a ReadyForQuery arrives in pieces.
Also: the TLS context from a configured certificate/key pair."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from millpond.server.gateway import endpoint, tls
from millpond.server.gateway import protocol as pq
from millpond.server.gateway.endpoint import ClientEndpoint, UpstreamEndpoint
from millpond.server.gateway.relay import Owner, Relay


class Recorder(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _relay() -> tuple[Relay, Recorder, Recorder, UpstreamEndpoint, ClientEndpoint]:
    client_side, upstream_side = Recorder(), Recorder()
    client = ClientEndpoint(lambda _: None)
    client.transport = client_side
    upstream = UpstreamEndpoint()
    upstream.transport = upstream_side
    relay = Relay(Owner("mp_k", "key_1", 1, "a/b", 1, "rw"), client, (1, 2), lambda _: None)
    relay.start(upstream, b"greeting")
    return relay, client_side, upstream_side, upstream, client


def test_bytes_pass_through_and_idle_is_tracked() -> None:
    async def main() -> None:
        relay, client_side, upstream_side, upstream, client = _relay()
        assert client_side.written == b"greeting" and relay.idle
        query = pq.message(b"Q", b"SELECT 1\x00")
        client.data_received(query)
        assert upstream_side.written == query and not relay.idle
        rows = pq.message(b"D", b"\x00\x01\x00\x00\x00\x01" + b"1")
        upstream.data_received(rows)
        assert not relay.idle
        ready = pq.ready_for_query(b"T")
        upstream.data_received(rows + ready[:2])  # split inside the ReadyForQuery
        assert not relay.idle
        upstream.data_received(ready[2:4])
        assert not relay.idle
        upstream.data_received(ready[4:])
        assert relay.idle
        assert client_side.written == b"greeting" + rows + rows + ready

    asyncio.run(main())


def test_terminate_waits_for_a_message_boundary() -> None:
    async def main() -> None:
        relay, client_side, upstream_side, upstream, client = _relay()
        client.data_received(pq.message(b"Q", b"SELECT pg_sleep(9)\x00"))
        cancelled: list[bool] = []
        relay.send_cancel = lambda: cancelled.append(True)
        relay.terminate("28000", "API key revoked")
        assert cancelled and not client_side.closed
        upstream.data_received(pq.error_response("57014", "canceled", "ERROR"))
        assert not client_side.closed
        upstream.data_received(pq.ready_for_query())
        assert upstream_side.closed
        assert client_side.written.endswith(pq.error_response("28000", "API key revoked"))
        assert upstream_side.written.endswith(pq.TERMINATE)
        # the client's socket closes once the client has closed its side: what it sent
        # meanwhile is read and dropped (closing with it unread would send a reset)
        assert not client_side.closed
        sent = bytes(upstream_side.written)
        client.data_received(pq.message(b"Q", b"SELECT 1\x00"))
        assert upstream_side.written == sent and not client_side.closed
        client.eof_received()
        client.connection_lost(None)

    asyncio.run(main())


def test_a_client_that_never_closes_is_closed_after_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(endpoint, "_LINGER_S", 0.05)

    async def main() -> None:
        relay, client_side, _, _, _ = _relay()
        relay.terminate("57P01", "the server is shutting down")  # idle: at once
        assert client_side.written.endswith(
            pq.error_response("57P01", "the server is shutting down")
        )
        assert not client_side.closed
        await asyncio.sleep(0.1)
        assert client_side.closed

    asyncio.run(main())


def test_configured_certificate(tmp_path: Path) -> None:
    cert, key = tls.ensure_self_signed(tmp_path / "made", "127.0.0.1")
    context = tls.server_context(tmp_path / "unused", cert, key, "127.0.0.1")
    assert isinstance(context, ssl.SSLContext)
    assert not (tmp_path / "unused" / tls.CERT_FILE).exists(), "nothing generated"
    with pytest.raises(ValueError, match="both"):
        tls.server_context(tmp_path, cert, None, "127.0.0.1")
