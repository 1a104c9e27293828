"""The Postgres wire-protocol gateway: ``psql``, psycopg, asyncpg… connect with any user
name, an API key as the password and ``owner/name`` as the database.

Per connection:

1. **Startup.** SSLRequest → ``S`` and TLS (GSSENCRequest → ``N``); a CancelRequest is
   mapped to the real backend (below); a StartupMessage v3 gives ``user``/``database``
   and options. Unencrypted connections are refused unless they come from loopback and
   ``gateway_allow_plaintext_loopback`` is on (or ``gateway_allow_plaintext_remote``).
2. **Authentication.** AuthenticationCleartextPassword — so over TLS or loopback only —
   and the password is checked as an API key (``authenticate``), then the database is
   resolved for its holder (``resolve``): the role is the access' ``sql_role``
   (owner/rw/ro; read-scoped keys get ro). Per-database and per-key connection limits.
3. **Upstream.** The gateway logs in to Postgres itself as that role (SCRAM-SHA-256 with
   the derived password, healed like the query service's pools if the role changed its
   password), forwards ParameterStatus and ReadyForQuery, and gives the client its own
   BackendKeyData (the backend's real pid, a secret of the gateway's): the client never
   sees the role's password nor Postgres' cancel secret.
   The session starts with the proof of the key's identity (``millpond.identity``, a
   startup parameter the client cannot override; ``modules/row_visibility.py``).
4. **Relay.** Bytes both ways with no parsing (``endpoint.py``).

Cancel requests carrying a gateway-issued key are sent on to Postgres with the real key.
Revocation: whenever the control database announces a change to keys, users,
collaborators or databases (``store.invalidation``), every live connection's key and
access are checked again and the ones no longer allowed are closed with a FATAL error —
within about a second; at its key's expiry; and every 30 s anyway (``recheck.py``, the
live sessions re-checker realtime and the flags stream use too).

Why the client→gateway login is not SCRAM: a SCRAM server must hold the password's
StoredKey/ServerKey (PBKDF2 of the password with a salt it sends the client before the
proof). millpond stores only SHA-256 of an API key, and learns which key is used only
from the proof itself — so it cannot run SCRAM for keys. It would need a SCRAM verifier
stored with each key at creation, and the user name to name the key (its id). Until
then the key travels as a cleartext password, only inside TLS or over loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import ssl
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from ..accounts.service import Principal, authenticate, canonical_key
from ..budget import BudgetExceeded, ConnectionBudget
from ..clusters.registry import Clusters
from ..config import Settings
from ..databases.service import Access, resolve
from ..errors import ServiceError
from ..modules import row_visibility
from ..modules.identities import sender_of
from ..postgres import privileged, provision
from ..postgres.availability import PostgresUnavailable
from ..postgres.cluster import HOME, Cluster
from ..recheck import Rechecker, Verdict, database_verdict, why_invalid
from ..store import Store
from . import protocol as pq
from . import tls, upstream
from .endpoint import ClientEndpoint
from .relay import Owner, Relay

_log = logging.getLogger("millpond.gateway")

_STARTUP_TIMEOUT_S = 30.0
_WATCH_INTERVAL_S = 0.5
_STOP_GRACE_S = 1.0
# startup parameters that are the gateway's business, not Postgres'
_BUDGET_HINT = "close some of this account's sessions, or ask an admin to raise the budget"
_OWN_PARAMS = ("user", "database", "replication")


class Refusal(Exception):
    """End the connection during startup with this ErrorResponse."""

    def __init__(self, sqlstate: str, text: str, hint: str | None = None) -> None:
        super().__init__(text)
        self.sqlstate = sqlstate
        self.text = text
        self.hint = hint
        self.raw: bytes | None = None

    @classmethod
    def forwarded(cls, error: upstream.UpstreamError) -> Refusal:
        """Postgres' own ErrorResponse (say 53300 "too many clients"), or 08006."""
        if not error.fields:
            return cls("08006", f"the gateway could not connect to the database: {error}")
        refusal = cls(error.sqlstate or "08006", error.fields.get("M", str(error)))
        body = b"".join(k.encode() + v.encode() + b"\x00" for k, v in error.fields.items())
        refusal.raw = pq.message(b"E", body + b"\x00")
        return refusal

    def message(self) -> bytes:
        return self.raw or pq.error_response(self.sqlstate, self.text, hint=self.hint)


def is_loopback(peer: Any) -> bool:
    if not isinstance(peer, tuple) or not peer:
        return False
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _unavailable(cluster: Cluster) -> Refusal:
    """A login refused while ``cluster`` is down (SQLSTATE 57P03, as Postgres starting)."""
    reason = cluster.availability.reason
    return Refusal("57P03", f"Postgres is unavailable ({reason}); retry shortly")


class Gateway:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        clusters: Clusters,
        secret: bytes,
        budget: ConnectionBudget | None = None,
    ) -> None:
        self.settings = settings
        self.budget = budget or ConnectionBudget()
        self._charged: dict[Relay, Callable[[], None]] = {}
        self.store = store
        self.clusters = clusters
        self.cluster = clusters.home
        self.secret = secret
        # policy and limits, read on every connection (tests change them on a running gateway)
        self.max_per_database = settings.gateway_max_connections_per_database
        self.max_per_key = settings.gateway_max_connections_per_key
        self.idle_timeout_s = settings.gateway_idle_timeout_s
        self.allow_plaintext_loopback = settings.gateway_allow_plaintext_loopback
        self.allow_plaintext_remote = settings.gateway_allow_plaintext_remote
        self.host = settings.gateway_host
        self.port: int | None = None  # the bound port, once listening
        self.ssl_context: ssl.SSLContext | None = None
        self._address: upstream.Address | None = None
        self._addresses: dict[str, upstream.Address] = {}
        """Where each other cluster listens (the home one's is ``_address``)."""
        self._server: asyncio.AbstractServer | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._relays: set[Relay] = set()
        self._by_database: dict[int, set[Relay]] = {}
        self._by_key: dict[str, set[Relay]] = {}
        self._by_cancel_key: dict[tuple[int, int], Relay] = {}
        self._rechecker: Rechecker[Relay] = Rechecker(
            "gateway", [store.invalidation], self._verdict, self._end
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen, unless disabled. A port already in use is logged, not fatal: the HTTP
        API still serves."""
        s = self.settings
        if not s.gateway_enabled:
            return
        try:
            self.ssl_context = await asyncio.to_thread(
                tls.server_context,
                s.data_dir,
                s.gateway_tls_cert,
                s.gateway_tls_key,
                s.gateway_host,
            )
        except (ImportError, OSError, ssl.SSLError, ValueError) as exc:
            _log.error("gateway: no TLS (%s); only plain connections can be accepted", exc)
        self._address = upstream.Address.from_conninfo(self.cluster.server_conninfo())
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: ClientEndpoint(self._connected), s.gateway_host, s.gateway_port, backlog=512
            )
        except OSError as exc:
            _log.error(
                "gateway: cannot listen on %s:%s (%s); direct connections are off"
                " (set MILLPOND_GATEWAY_PORT)",
                s.gateway_host,
                s.gateway_port,
                exc.strerror or exc,
            )
            return
        sockets = getattr(self._server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else s.gateway_port
        self._watcher = asyncio.create_task(self._watch(), name="gateway-watch")
        _log.info("Postgres gateway on %s:%s", s.gateway_host, self.port)

    async def stop(self) -> None:
        """Stop listening; end every connection (a FATAL 57P01 to those at a message
        boundary, within about a second for the others)."""
        if self._server is not None:
            self._server.close()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self._rechecker.stop()
        for relay in list(self._relays):
            relay.terminate("57P01", "terminating connection: the millpond server is shutting down")
        deadline = time.monotonic() + _STOP_GRACE_S
        while self._relays and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for relay in list(self._relays):
            relay.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), _STOP_GRACE_S)
            self._server = None

    def connection_count(self) -> int:
        return len(self._relays)

    # -- one connection ---------------------------------------------------------------------

    def _connected(self, client: ClientEndpoint) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, client: ClientEndpoint) -> None:
        try:
            async with asyncio.timeout(_STARTUP_TIMEOUT_S):
                await self._open(client)
        except Refusal as refusal:
            _log.debug("gateway: refused a connection: %s %s", refusal.sqlstate, refusal.text)
            _refuse(client, refusal.message())
        except pq.ProtocolViolation as exc:
            _refuse(client, pq.error_response("08P01", str(exc)))
        except TimeoutError:
            _refuse(client, pq.error_response("57014", "canceling authentication due to timeout"))
        except (ConnectionError, ssl.SSLError, OSError):
            client.close()
        except (psycopg.OperationalError, PoolTimeout, PostgresUnavailable) as exc:
            _log.warning("gateway: control database unavailable (%s)", type(exc).__name__)
            _refuse(
                client,
                pq.error_response("57P03", "the server cannot check API keys right now; retry"),
            )
        except asyncio.CancelledError:
            client.close()
            raise
        except Exception as exc:
            _log.error("gateway: unexpected error: %s", type(exc).__name__, exc_info=exc)
            _refuse(client, pq.error_response("XX000", "internal error in the gateway"))

    async def _open(self, client: ClientEndpoint) -> None:
        assert client.transport is not None
        loopback = is_loopback(client.transport.get_extra_info("peername"))
        encrypted = False
        while True:
            packet = pq.parse_first_packet(await client.read_packet())
            if isinstance(packet, pq.SSLRequest):
                if encrypted or self.ssl_context is None:
                    client.write(b"N")
                    continue
                if client.pending():
                    raise pq.ProtocolViolation("received unencrypted data after SSL request")
                client.write(b"S")
                transport = await asyncio.get_running_loop().start_tls(
                    client.transport, client, self.ssl_context, server_side=True
                )
                if transport is None:
                    raise ConnectionResetError("TLS handshake failed")
                client.transport = transport
                encrypted = True
            elif isinstance(packet, pq.GSSENCRequest):
                client.write(b"N")
            elif isinstance(packet, pq.CancelRequest):
                await self._cancel(packet)
                client.close()
                return
            else:
                break
        await self._startup(client, packet, encrypted, loopback)

    async def _startup(
        self, client: ClientEndpoint, startup: pq.StartupMessage, encrypted: bool, loopback: bool
    ) -> None:
        if startup.minor != 0 or startup.unsupported_options:
            client.write(pq.negotiate_protocol_version(0, startup.unsupported_options))
        self._check_transport(encrypted, loopback)
        if not self.cluster.availability.up:  # refuse before the client sends its key
            raise _unavailable(self.cluster)
        params = startup.params
        user = params.get("user")
        if not user:
            raise Refusal(
                "28000",
                "no user name specified in the startup packet",
                hint="any user name will do; the password is your API key",
            )
        database = params.get("database") or user
        if params.get("replication", "false").lower() not in ("false", "0", "off", "no"):
            raise Refusal("0A000", "replication connections are not supported by the gateway")
        client.write(pq.auth_request(pq.AUTH_CLEARTEXT))
        kind, payload = await client.read_message()
        if kind != b"p":
            raise pq.ProtocolViolation(f"expected password response, got message type {kind!r}")
        api_key = canonical_key(pq.parse_password(payload))  # bit.io's v2_ spelling too
        since = self._rechecker.mark()
        principal = await authenticate(self.store, api_key)
        if principal is None:
            raise Refusal(
                "28P01",
                (await why_invalid(self.store, api_key)).message,
                hint="the password is a millpond API key (mp_…)",
            )
        if principal.environment_id is not None:
            raise Refusal(
                "28000", "this API key is bound to a flags environment: it opens no connections"
            )
        access = await self._access(principal, database)
        owner = Owner(
            api_key=api_key,
            key_id=principal.key_id,
            user_id=principal.user_id,
            database=database,
            database_id=access.id,
            sql_role=access.sql_role,
            cluster=access.cluster,
        )
        relay = Relay(owner, client, self._new_cancel_key(), self._forget)
        self._admit(relay)
        group = (api_key, database, access.sql_role)
        self._rechecker.add(relay, group, principal.expires_at, since)
        started = False
        try:
            await self._charge(relay, principal)
            login = await self._login(access, params, sender_of(self.secret, principal))
            try:
                if relay.closing is not None:  # revoked while we were logging in
                    raise _Closing(relay.closing)
                relay.backend_key = login.backend_key
                # the backend's own pid, with a secret of the gateway's: what the client
                # reads in pg_backend_pid(), NOTIFY payloads and pg_stat_activity matches
                # what it was told, and only the gateway holds Postgres' cancel secret
                relay.client_key = self._new_cancel_key(login.backend_key[0])
                relay.send_cancel = lambda: self._spawn(
                    self._cancel_backend(login.backend_key, owner.cluster)
                )
                self._by_cancel_key[relay.client_key] = relay
                greeting = (
                    pq.auth_request(pq.AUTH_OK)
                    + login.parameters
                    + pq.backend_key_data(*relay.client_key)
                    + login.ready
                )
                relay.start(login.endpoint, greeting)
                started = True
            finally:
                if not started:
                    login.endpoint.write(pq.TERMINATE)
                    login.endpoint.close()
        except _Closing as closing:
            _refuse(client, closing.message)
        finally:
            if not started:
                self._forget(relay)

    def _check_transport(self, encrypted: bool, loopback: bool) -> None:
        if encrypted:
            return
        if self.allow_plaintext_loopback if loopback else self.allow_plaintext_remote:
            return
        where = "" if loopback else " from other hosts"
        raise Refusal(
            "28000",
            f"the millpond gateway accepts only TLS connections{where}",
            hint="connect with sslmode=require",
        )

    async def _access(self, principal: Principal, database: str) -> Access:
        try:
            return await resolve(self.store, principal, database)
        except ServiceError as exc:
            if exc.status >= 500:
                raise
            hint = None if "/" in database else "database names look like owner/name"
            raise Refusal(
                "3D000", f'database "{database}" does not exist or you cannot read it', hint
            ) from None

    def _admit(self, relay: Relay) -> None:
        owner = relay.owner
        on_database = self._by_database.get(owner.database_id, set())
        if len(on_database) >= self.max_per_database:
            raise Refusal(
                "53300",
                f'too many connections to database "{owner.database}" through the gateway'
                f" (at most {self.max_per_database})",
            )
        with_key = self._by_key.get(owner.key_id, set())
        if len(with_key) >= self.max_per_key:
            raise Refusal(
                "53300", f"too many connections with this API key (at most {self.max_per_key})"
            )
        self._by_database.setdefault(owner.database_id, on_database).add(relay)
        self._by_key.setdefault(owner.key_id, with_key).add(relay)
        self._relays.add(relay)

    async def _charge(self, relay: Relay, principal: Principal) -> None:
        """Count the session against its account's connection budget and the server's
        tenant connections (``server/budget.py``); given back by :meth:`_forget`."""
        exempt = principal.is_admin and self.settings.account_limits_exempt_admins
        try:
            release = await self.budget.session(principal.user_id, principal.username, exempt)
        except BudgetExceeded as exc:
            hint = _BUDGET_HINT if exc.scope == "account" else None
            raise Refusal("53300", exc.text, hint=hint) from None
        self._charged[relay] = release

    def _forget(self, relay: Relay) -> None:
        release = self._charged.pop(relay, None)
        if release is not None:
            release()
        if relay.backend_key is not None and not relay.idle:
            # closed while Postgres was busy for it (force-closed after a cancel, or the
            # client went away): the backend would run on until it next writes
            self._spawn(self._terminate(relay))
        self._relays.discard(relay)
        self._rechecker.discard(relay)
        owner = relay.owner
        on_database = self._by_database.get(owner.database_id)
        if on_database is not None:
            on_database.discard(relay)
            if not on_database:
                del self._by_database[owner.database_id]
        with_key = self._by_key.get(owner.key_id)
        if with_key is not None:
            with_key.discard(relay)
            if not with_key:
                del self._by_key[owner.key_id]
        if self._by_cancel_key.get(relay.client_key) is relay:
            del self._by_cancel_key[relay.client_key]

    async def _upstream(self, name: str) -> tuple[Cluster, upstream.Address]:
        """The cluster ``name`` and where it listens."""
        if name == HOME:
            assert self._address is not None
            return self.cluster, self._address
        cluster = await self.clusters.cluster_of(name)
        if not cluster.availability.up:
            raise _unavailable(cluster)
        address = self._addresses.get(name)
        if address is None:
            address = upstream.Address.from_conninfo(cluster.server_conninfo())
            self._addresses[name] = address
        return cluster, address

    async def _login(
        self, access: Access, client_params: dict[str, str], identity: str
    ) -> upstream.Login:
        cluster, address = await self._upstream(access.cluster)
        role = provision.DatabaseRoles(access.pg_name).role(access.sql_role)
        password = provision.role_password(self.secret, role)
        params = {
            k: v
            for k, v in client_params.items()
            if k not in _OWN_PARAMS
            and not k.startswith("_pq_.")
            and k.lower() != row_visibility.SETTING
        }
        # the proof of the key's identity for row visibility rules: a startup parameter
        # (Postgres applies it after the client's options; RESET comes back to it), never
        # in a statement's text
        params[row_visibility.SETTING] = row_visibility.proof(self.secret, access.pg_name, identity)
        if access.sql_role == "ro":  # a convenience: the privileges are the wall
            options = params.get("options", "")
            params["options"] = f"{options} -c default_transaction_read_only=on".strip()
        await self._clean_role_settings(role, cluster)
        try:
            try:
                return await upstream.login(address, role, password, access.pg_name, params)
            except upstream.UpstreamError as exc:
                if exc.sqlstate != "28P01":
                    raise
                # any role may change its own password: restore it and log in again
                _log.warning("restoring the password of role %s", role)
                await asyncio.to_thread(provision.reset_password, cluster, self.secret, role)
                return await upstream.login(address, role, password, access.pg_name, params)
        except upstream.UpstreamError as exc:
            raise Refusal.forwarded(exc) from None

    async def _terminate(self, relay: Relay) -> None:
        assert relay.backend_key is not None
        owner = relay.owner
        role = provision.DatabaseRoles(provision.pg_name_for(owner.database_id)).role(
            owner.sql_role  # type: ignore[arg-type]
        )
        try:
            cluster, _ = await self._upstream(owner.cluster)
            await privileged.terminate_backend(cluster, relay.backend_key[0], role)
        except (psycopg.Error, ServiceError, Refusal) as exc:  # Postgres is going away too
            _log.info("could not terminate backend %s: %s", relay.backend_key[0], exc)

    async def _clean_role_settings(self, role: str, cluster: Cluster) -> None:
        """Before a session of a shared role starts: remove role-level settings one of its
        users gave it (``ALTER ROLE CURRENT_USER SET …``), which would apply to this
        session too. (Role settings are the cluster's: the home one's are read on the
        control database's pool, another's on a session of its own.)"""
        if cluster.home:
            row = await self.store.fetchone(provision.ROLE_SETTINGS_SQL, (role,))
            found = row is not None and bool(next(iter(row.values())))
        else:
            found = await asyncio.to_thread(provision.has_role_settings, cluster, role)
        if found:
            _log.warning("removing role-level settings of role %s", role)
            await asyncio.to_thread(provision.reset_role_settings, cluster, role)

    def _new_cancel_key(self, pid: int | None = None) -> tuple[int, int]:
        """A (pid, secret) to give a client: the backend's ``pid`` when known (else a
        random one, until it is), and a random secret no live connection has."""
        while True:
            key = (pid or secrets.randbelow(2**31 - 1) + 1, secrets.randbits(32))
            if key not in self._by_cancel_key:
                return key

    # -- cancel -------------------------------------------------------------------------------

    async def _cancel(self, request: pq.CancelRequest) -> None:
        relay = self._by_cancel_key.get((request.pid, request.secret))
        if relay is None or relay.backend_key is None or relay.closed:
            return  # like Postgres: no answer either way
        await self._cancel_backend(relay.backend_key, relay.owner.cluster)

    async def _cancel_backend(self, backend_key: tuple[int, int], cluster: str = HOME) -> None:
        _, address = await self._upstream(cluster)
        await upstream.cancel(address, *backend_key)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- revocation and idle connections ------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(_WATCH_INTERVAL_S)
            self._close_idle(time.monotonic())

    def _close_idle(self, now: float) -> None:
        timeout = self.idle_timeout_s
        if timeout <= 0:
            return
        for relay in list(self._relays):
            if relay.relaying and relay.idle and now - relay.idle_since >= timeout:
                relay.terminate(
                    "57P05",
                    "terminating connection due to idle timeout",
                    hint=f"the gateway closes connections idle for {timeout:g} s",
                )

    async def recheck(self) -> None:
        """Check every live connection's key and access again; close the ones whose key
        is no longer valid or whose access is gone or weaker than their role."""
        await self._rechecker.recheck()

    async def _verdict(self, relay: Relay) -> Verdict | None:
        owner = relay.owner
        return await database_verdict(
            self.store, owner.api_key, owner.database, owner.database_id, owner.sql_role
        )

    def _end(self, relay: Relay, verdict: Verdict) -> None:
        relay.terminate("28000", verdict.message)


class _Closing(Exception):
    def __init__(self, message: bytes) -> None:
        super().__init__("closing")
        self.message = message


def _refuse(client: ClientEndpoint, message: bytes) -> None:
    transport = client.transport
    if transport is not None and not transport.is_closing():
        with contextlib.suppress(RuntimeError, OSError):
            transport.write(message)
    client.close()
