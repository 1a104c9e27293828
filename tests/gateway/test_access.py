"""Who may connect, as which role, over what: keys (wrong, revoked, expired, read-only),
databases (unknown, private, public, shared), TLS policy and the generated certificate."""

from __future__ import annotations

import asyncio
import ssl
import stat
import time
from collections.abc import Callable, Iterator

import asyncpg
import psycopg
import pytest

from millpond.server.gateway import Gateway, tls
from millpond.server.gateway import protocol as pq
from millpond.server.gateway.server import is_loopback
from millpond.server.testing import ServerThread

from .conftest import Http, Tenant, Wire, new_key

MakeTenant = Callable[..., Tenant]
OpenWire = Callable[..., Wire]


def test_wrong_key(tenant: Tenant, wire: OpenWire) -> None:
    error = wire().login(tenant.database, "mp_" + "x" * 40)
    assert error is not None
    assert (error["C"], error["M"]) == ("28P01", "password authentication failed: unknown API key")
    error = wire().login(tenant.database, "hunter2")
    assert error is not None and error["C"] == "28P01"
    assert "must be a millpond API key" in error["M"]


def test_revoked_key(tenant: Tenant, http: Http, wire: OpenWire) -> None:
    key_id, secret = new_key(http, tenant.key)
    assert wire().login(tenant.database, secret) is None
    http("DELETE", f"/v1/keys/{key_id}", tenant.key)
    error = wire().login(tenant.database, secret)
    assert error is not None and (error["C"], error["M"]) == ("28P01", "API key revoked")


def test_expired_key(tenant: Tenant, http: Http, wire: OpenWire) -> None:
    _, secret = new_key(http, tenant.key, expires_in_seconds=1)
    time.sleep(1.2)
    error = wire().login(tenant.database, secret)
    assert error is not None and (error["C"], error["M"]) == ("28P01", "API key expired")


def test_unknown_and_private_databases_look_the_same(
    tenant: Tenant, make_tenant: MakeTenant, wire: OpenWire
) -> None:
    stranger = make_tenant()
    for database in (f"{tenant.username}/nope", "nobody/nothing", tenant.database):
        error = wire().login(database, stranger.key)
        assert error is not None, database
        assert error["C"] == "3D000"
        assert error["M"] == f'database "{database}" does not exist or you cannot read it'
    error = wire().login("no-slash", stranger.key)
    assert error is not None and error["C"] == "3D000"
    assert error["H"] == "database names look like owner/name"


def test_asyncpg_sees_the_sqlstates(tenant: Tenant, port: int) -> None:
    async def connect(password: str, database: str) -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=port, user="u", password=password, database=database, ssl=False
        )
        await conn.close()

    with pytest.raises(asyncpg.InvalidPasswordError, match="unknown API key"):
        asyncio.run(connect("mp_" + "y" * 40, tenant.database))
    with pytest.raises(asyncpg.InvalidCatalogNameError, match="does not exist or you cannot read"):
        asyncio.run(connect(tenant.key, tenant.username + "/missing"))


def test_read_only_key_cannot_write(tenant: Tenant, http: Http, port: int) -> None:
    with psycopg.connect(tenant.dsn(port), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int)")
    _, reader = new_key(http, tenant.key, scope="read")
    with psycopg.connect(tenant.dsn(port, key=reader), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (_role(conn, "ro"),)
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO t VALUES (1)")


def _role(conn: psycopg.Connection[tuple[object, ...]], which: str) -> str:
    row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    return f"{row[0]}_{which}"


def test_collaborators_and_public_databases(
    tenant: Tenant, make_tenant: MakeTenant, http: Http, port: int
) -> None:
    writer, reader = make_tenant(), make_tenant()
    for who, role in ((writer, "write"), (reader, "read")):
        http(
            "PUT",
            f"/v1/databases/{tenant.database}/collaborators/{who.username}",
            tenant.key,
            json={"role": role},
        )
    with psycopg.connect(tenant.dsn(port, key=writer.key), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (_role(conn, "rw"),)
        conn.execute("CREATE TABLE shared (id int)")
    with psycopg.connect(tenant.dsn(port, key=reader.key), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (_role(conn, "ro"),)
    public = make_tenant(is_private=False)
    with psycopg.connect(public.dsn(port, key=reader.key), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (_role(conn, "ro"),)


def test_password_changed_by_the_role_is_healed(tenant: Tenant, port: int) -> None:
    with psycopg.connect(tenant.dsn(port), autocommit=True) as conn:
        conn.execute("ALTER ROLE current_user PASSWORD 'not-the-derived-one'")
    with psycopg.connect(tenant.dsn(port), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# -- transport policy ----------------------------------------------------------------------------


@pytest.fixture
def no_plaintext(gateway: Gateway) -> Iterator[None]:
    gateway.allow_plaintext_loopback = False
    yield
    gateway.allow_plaintext_loopback = gateway.settings.gateway_allow_plaintext_loopback


@pytest.mark.usefixtures("no_plaintext")
def test_plaintext_refused_when_not_allowed(tenant: Tenant, wire: OpenWire, port: int) -> None:
    error = wire().login(tenant.database, tenant.key)
    assert error is not None and error["C"] == "28000"
    assert error["M"] == "the millpond gateway accepts only TLS connections"
    assert error["H"] == "connect with sslmode=require"
    assert wire(tls=True).login(tenant.database, tenant.key) is None
    with psycopg.connect(tenant.dsn(port, sslmode="prefer")) as conn:  # libpq tries TLS first
        assert conn.pgconn.ssl_in_use


def test_loopback_detection() -> None:
    assert is_loopback(("127.0.0.1", 5000))
    assert is_loopback(("127.8.9.10", 5000))
    assert is_loopback(("::1", 5000, 0, 0))
    assert is_loopback(("::ffff:127.0.0.1", 5000, 0, 0))
    assert not is_loopback(("10.0.0.1", 5000))
    assert not is_loopback(("::ffff:192.168.1.1", 5000, 0, 0))
    assert not is_loopback(("2001:db8::1", 5000, 0, 0))
    assert not is_loopback(None)


def test_generated_certificate(server: ServerThread, wire: OpenWire) -> None:
    data_dir = server.settings.data_dir
    cert, key = data_dir / tls.CERT_FILE, data_dir / tls.KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    w = wire(tls=True)
    assert isinstance(w.sock, ssl.SSLSocket)
    served = w.sock.getpeercert(binary_form=True)
    assert served == ssl.PEM_cert_to_DER_cert(cert.read_text())


def test_ssl_and_gssenc_requests_are_answered(tenant: Tenant, wire: OpenWire) -> None:
    w = wire()
    w.send(b"\x00\x00\x00\x08\x04\xd2\x16\x30")  # GSSENCRequest
    assert w.recv_exactly(1) == b"N"
    assert w.login(tenant.database, tenant.key) is None


def test_newer_protocol_minor_is_negotiated_down(tenant: Tenant, wire: OpenWire) -> None:
    w = wire()
    body = (3 << 16 | 2).to_bytes(4, "big") + b"user\x00u\x00database\x00"
    body += tenant.database.encode() + b"\x00_pq_.future\x00x\x00\x00"
    w.send((len(body) + 4).to_bytes(4, "big") + body)
    kind, payload = w.message()
    assert kind == b"v"
    assert payload[:8] == b"\x00\x00\x00\x00\x00\x00\x00\x01" and b"_pq_.future" in payload
    kind, payload = w.message()
    assert kind == b"R" and pq.parse_auth(payload)[0] == pq.AUTH_CLEARTEXT


def test_garbage_is_a_protocol_violation(wire: OpenWire) -> None:
    w = wire()
    w.send(b"\x00\x00\x00\x10GET / HTTP/1.1\r\n")
    assert w.error()["C"] == "08P01"
    assert w.closed()
