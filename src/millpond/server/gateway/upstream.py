"""The gateway's side towards Postgres: where the cluster is, logging in as a database
role on a raw socket (the relay needs the socket itself, so no driver), and sending
cancel requests.

Where: the cluster's admin connection string (``Cluster.admin_conninfo``) — for the
embedded cluster a Unix socket in a private directory, for an external one a host and
port, with TLS as its ``sslmode`` asks. Login: StartupMessage, then SCRAM-SHA-256 (or MD5
or cleartext, should an external cluster ask for them), then the backend's
ParameterStatus/BackendKeyData messages up to its first ReadyForQuery.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from dataclasses import dataclass

from psycopg.conninfo import conninfo_to_dict

from . import protocol as pq
from .endpoint import UpstreamEndpoint

_CANCEL_TIMEOUT_S = 5.0


class UpstreamError(Exception):
    """Postgres refused the login (``fields`` from its ErrorResponse), or could not be
    reached or spoken to (no fields)."""

    def __init__(self, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.fields = fields or {}

    @property
    def sqlstate(self) -> str | None:
        return self.fields.get("C")


@dataclass(frozen=True)
class Address:
    host: str  # a directory (Unix socket) or a host name / IP address
    port: int
    sslmode: str = "disable"
    sslrootcert: str | None = None

    @property
    def unix_path(self) -> str | None:
        if self.host.startswith("/"):
            return f"{self.host}/.s.PGSQL.{self.port}"
        return None

    @classmethod
    def from_conninfo(cls, conninfo: str) -> Address:
        params = conninfo_to_dict(conninfo)
        host = str(params.get("hostaddr") or params.get("host") or os.environ.get("PGHOST", ""))
        host = host.split(",")[0] or "localhost"
        port = str(params.get("port") or os.environ.get("PGPORT", "") or "5432").split(",")[0]
        sslmode = str(params.get("sslmode") or os.environ.get("PGSSLMODE", "") or "prefer")
        root = params.get("sslrootcert") or os.environ.get("PGSSLROOTCERT")
        return cls(host, int(port), sslmode, str(root) if root else None)

    def client_context(self) -> ssl.SSLContext:
        if self.sslmode in ("verify-ca", "verify-full"):
            context = ssl.create_default_context(cafile=self.sslrootcert)
            context.check_hostname = self.sslmode == "verify-full"
            return context
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context


@dataclass
class Login:
    endpoint: UpstreamEndpoint
    backend_key: tuple[int, int]
    parameters: bytes  # the ParameterStatus (and Notice) messages, as Postgres sent them
    ready: bytes  # its ReadyForQuery


async def connect(address: Address) -> UpstreamEndpoint:
    loop = asyncio.get_running_loop()
    try:
        if address.unix_path is not None:
            _, endpoint = await loop.create_unix_connection(UpstreamEndpoint, address.unix_path)
        else:
            _, endpoint = await loop.create_connection(UpstreamEndpoint, address.host, address.port)
    except OSError as exc:
        raise UpstreamError(f"could not connect to Postgres: {exc.strerror or exc}") from exc
    return endpoint


async def _negotiate_tls(endpoint: UpstreamEndpoint, address: Address) -> None:
    if address.unix_path is not None or address.sslmode in ("disable", "allow"):
        return
    endpoint.write(pq.ssl_request())
    answer = await endpoint.read_exactly(1)
    required = address.sslmode in ("require", "verify-ca", "verify-full")
    if answer == b"N":
        if required:
            raise UpstreamError(f"Postgres does not support TLS, but sslmode={address.sslmode}")
        return
    if answer != b"S" or endpoint.pending():
        raise UpstreamError("unexpected answer from Postgres to the SSL request")
    assert endpoint.transport is not None
    transport = await asyncio.get_running_loop().start_tls(
        endpoint.transport,
        endpoint,
        address.client_context(),
        server_hostname=address.host,
    )
    if transport is None:
        raise UpstreamError("TLS to Postgres failed")
    endpoint.transport = transport


async def login(
    address: Address, user: str, password: str, database: str, params: dict[str, str]
) -> Login:
    """Open a connection and log in; the caller owns the endpoint from here on."""
    endpoint = await connect(address)
    try:
        return await _login(endpoint, address, user, password, database, params)
    except BaseException:
        endpoint.close()
        raise


async def _login(
    endpoint: UpstreamEndpoint,
    address: Address,
    user: str,
    password: str,
    database: str,
    params: dict[str, str],
) -> Login:
    try:
        await _negotiate_tls(endpoint, address)
        endpoint.write(pq.startup_message({**params, "user": user, "database": database}))
        await _authenticate(endpoint, user, password)
        parameters = bytearray()
        backend_key: tuple[int, int] | None = None
        while True:
            kind, payload = await endpoint.read_message()
            if kind == b"K":
                backend_key = pq.parse_backend_key_data(payload)
            elif kind == b"Z":
                if backend_key is None:
                    raise UpstreamError("Postgres sent no BackendKeyData")
                return Login(endpoint, backend_key, bytes(parameters), pq.message(kind, payload))
            elif kind == b"E":
                fields = pq.parse_error_fields(payload)
                raise UpstreamError(fields.get("M", "login failed"), fields)
            elif kind in (b"S", b"N"):
                parameters += pq.message(kind, payload)
            else:
                raise UpstreamError(f"unexpected message {kind!r} from Postgres during login")
    except (ConnectionError, pq.ProtocolViolation, ssl.SSLError) as exc:
        raise UpstreamError(f"the connection to Postgres failed during login: {exc}") from exc


async def _authenticate(endpoint: UpstreamEndpoint, user: str, password: str) -> None:
    scram: pq.ScramClient | None = None
    while True:
        kind, payload = await endpoint.read_message()
        if kind == b"E":
            fields = pq.parse_error_fields(payload)
            raise UpstreamError(fields.get("M", "login failed"), fields)
        if kind == b"v":  # NegotiateProtocolVersion: we asked for nothing new
            continue
        if kind != b"R":
            raise UpstreamError(f"unexpected message {kind!r} from Postgres during login")
        code, data = pq.parse_auth(payload)
        try:
            if code == pq.AUTH_OK:
                return
            if code == pq.AUTH_CLEARTEXT:
                endpoint.write(pq.password_message(password))
            elif code == pq.AUTH_MD5:
                endpoint.write(pq.password_message(pq.md5_password(user, password, data[:4])))
            elif code == pq.AUTH_SASL:
                if pq.SCRAM_SHA_256 not in pq.parse_sasl_mechanisms(data):
                    raise UpstreamError("Postgres offers no SASL mechanism the gateway supports")
                scram = pq.ScramClient(password)
                endpoint.write(pq.sasl_initial_response(pq.SCRAM_SHA_256, scram.client_first()))
            elif code == pq.AUTH_SASL_CONTINUE and scram is not None:
                endpoint.write(pq.sasl_response(scram.client_final(data)))
            elif code == pq.AUTH_SASL_FINAL and scram is not None:
                scram.verify_server_final(data)
            else:
                raise UpstreamError(f"unsupported authentication request {code} from Postgres")
        except pq.ScramError as exc:
            raise UpstreamError(str(exc)) from exc


async def cancel(address: Address, pid: int, secret: int) -> None:
    """Send a CancelRequest for backend ``pid`` and wait until Postgres hangs up."""
    try:
        endpoint = await connect(address)
    except UpstreamError:
        return
    try:
        endpoint.write(pq.cancel_request(pid, secret))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(endpoint.lost), _CANCEL_TIMEOUT_S)
    finally:
        endpoint.close()
