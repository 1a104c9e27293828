"""``/v1/realtime/{owner}/{db}``: the WebSocket (protocol in docs/realtime-protocol.md).

Each connection runs three tasks: a reader (client messages → hub), a writer (the
connection's outbox → socket, closing it when the outbox says so), and a heartbeat.

Authorization holds for the connection's whole life: every open socket is registered
with a live sessions re-checker (``recheck.py``) and closed when its key is revoked or
expires (4001), its access to the database is removed (4003 ``access_revoked``), the
database is deleted (4004) or its role is lowered (4013 ``access_changed``: reconnect with
the new rights) — within about a second, on every replica."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from psycopg_pool import PoolTimeout
from starlette.websockets import WebSocketDisconnected

from ..._version import __version__
from ..accounts.service import Principal, authenticate
from ..databases.service import resolve
from ..deps import Services
from ..errors import ServiceError
from ..limits import has_lone_surrogate, invalid_text_error, too_deep, too_deep_error
from ..modules.identities import (
    REFUSALS,
    TOKEN_PREFIX,
    Identities,
    authenticate_token,
    identity_verdict,
    require_bound,
    sender_of,
)
from ..modules.issuers import Issuers
from ..modules.jwt import looks_like_jwt
from ..modules.lifecycle import Lifecycle
from ..postgres.availability import PostgresUnavailable
from ..recheck import CLOSE_CODES, Rechecker, Verdict, access_verdict, database_verdict
from ..store.notifications import Invalidation
from .hub import Client, Hub, SubscribeError
from .outbox import Outbox
from .replication import StreamStopped, WalLevelError
from .service import StreamLimit

router = APIRouter()
_log = logging.getLogger("millpond.realtime")

SUBPROTOCOL = "millpond.v1.json"
_CLOSE_TIMEOUT_S = 5.0
MAX_CALLS_IN_FLIGHT = 32
"""Reducer calls one connection may have running at once (more: ``too_many_calls``)."""
ROWS_BEFORE_RESULT_S = 2.0
"""How long a call's answer waits for its transaction to reach the caller's stream."""

Caller = Callable[[str, Any, str], Awaitable[dict[str, Any]]]
"""``(reducer, args, connection_id)`` → the call's outcome (``CallResult`` as JSON)."""


def bearer_token(ws: WebSocket) -> str:
    """The API key: ``Authorization: Bearer …``, else ``?access_token=`` (browsers' WebSocket
    API cannot set headers)."""
    header = ws.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if token and scheme.lower() == "bearer":
        return token.strip()
    return ws.query_params.get("access_token", "")


@dataclass(eq=False)
class LiveSocket:
    """An open socket as the re-checker sees it: how to check it again, what to close."""

    outbox: Outbox
    check: Callable[[], Awaitable[Verdict | None]]


async def _check(socket: LiveSocket) -> Verdict | None:
    return await socket.check()


def _end(socket: LiveSocket, verdict: Verdict) -> None:
    socket.outbox.close(CLOSE_CODES[verdict.reason], verdict.reason)


def live_sockets(
    svc: Services, name: str, invalidations: Sequence[Invalidation]
) -> Rechecker[LiveSocket]:
    """The app's re-checker of sockets of kind ``name`` (made on first use)."""
    found = svc.extra.get(f"recheck-{name}")
    if not isinstance(found, Rechecker):
        found = Rechecker(name, invalidations, _check, _end)
        svc.extra[f"recheck-{name}"] = found
    return found


@router.websocket("/v1/realtime/{owner}/{name}")
async def realtime(ws: WebSocket, owner: str, name: str) -> None:
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    await serve(ws, owner, name, bearer_token(ws))


def _plain_session(
    ws: WebSocket, hub: Hub, client: Client, heartbeat: float, caller: Caller | None, access: Any
) -> Session:
    return Session(ws, hub, client, heartbeat, caller)


@dataclass(frozen=True)
class Flavor:
    """What differs between the protocols served over the hub (millpond's, and the
    compatibility ones under ``server/compat/``): the outbox, which encodes the hub's
    messages for the wire, and the session, which reads the client's."""

    outbox: Callable[[int], Outbox] = Outbox
    session: Callable[[WebSocket, Hub, Client, float, Caller | None, Any], Session] = _plain_session


@dataclass(frozen=True)
class Known:
    """A caller identified before the socket was (the console's session): who, what
    ends their login, and how to check that it still holds (None while it does)."""

    principal: Principal
    group: Hashable
    still: Callable[[], Awaitable[Verdict | None]]
    expires_at: datetime | None = None


async def serve(
    ws: WebSocket,
    owner: str,
    name: str,
    token: str,
    flavor: Flavor = Flavor(),
    known: Known | None = None,
) -> None:
    """Serve an accepted socket on ``owner/name`` for the holder of ``token`` (an API
    key, a login provider's JWT, an anonymous identity's token, or "" for a new one), or
    for the ``known`` caller."""
    svc: Services = ws.app.state.services
    sockets = live_sockets(svc, "realtime", [svc.store.invalidation])
    since = sockets.mark()
    who = (known.principal, None) if known else await _identify(svc, token, f"{owner}/{name}")
    if isinstance(who, Refused):
        await ws.close(who.code, who.reason)
        return
    principal, minted = who
    if minted is not None:
        token = minted
    try:
        access = await resolve(svc.store, principal, f"{owner}/{name}")
        require_bound(principal, access)
    except ServiceError as exc:
        if exc.status >= 500:
            raise  # say, postgres_unavailable: closed with 1013, and the client retries
        await ws.close(4003 if exc.status == 403 else 4004, exc.code)
        return
    account, limit = socket_budget(svc, principal, access.id)
    if not svc.realtime_sockets.try_take(account, limit):
        await ws.close(4029, "limit_exceeded")
        return
    try:
        hub = await svc.realtime.hub(access.pg_name, access.cluster)
    except StreamLimit:
        svc.realtime_sockets.give(account)
        await ws.close(4029, "limit_exceeded")
        return
    client_id = f"c_{secrets.token_hex(8)}"
    lifecycle: Lifecycle | None = getattr(svc.extra.get("modules"), "lifecycle", None)
    tracked, refused = False, None
    if lifecycle is not None:
        identity = sender_of(lifecycle.service.secret, principal)
        try:
            tracked, refused = await lifecycle.connected(access, identity, client_id)
        except BaseException:
            svc.realtime_sockets.give(account)
            svc.realtime.release(hub)
            raise
        if refused is not None:
            svc.realtime_sockets.give(account)
            svc.realtime.release(hub)
            await ws.close(4016, refused)
            return
    sender = sender_of(svc.query.secret, principal)  # row visibility rules judge it so
    client = Client(
        client_id,
        flavor.outbox(svc.settings.realtime_send_buffer_bytes),
        identity=principal,
        role=access.sql_role,
        reader=svc.realtime.reader(access.pg_name, access.sql_role, sender, access.cluster),
        sender=sender,
    )
    full_name, db_id, sql_role = f"{owner}/{name}", access.id, access.sql_role
    if known is not None:
        check = _known_check(svc, known, full_name, db_id, sql_role)
        group, expires_at = known.group, known.expires_at
    else:
        check = _live_check(svc, principal, token, full_name, db_id, sql_role)
        group, expires_at = token, principal.expires_at
    live = LiveSocket(client.outbox, check)
    sockets.add(live, (group, full_name, db_id, sql_role), expires_at, since)
    hub.connect(client)
    session = flavor.session(
        ws,
        hub,
        client,
        svc.settings.realtime_heartbeat_ms / 1000,
        _caller(svc, principal, full_name),
        access,
    )
    try:
        await session.run(_hello(svc, principal, minted))
    finally:
        svc.realtime_sockets.give(account)
        sockets.discard(live)
        hub.disconnect(client)
        svc.realtime.release(hub)
        if tracked and lifecycle is not None:
            lifecycle.disconnected(access, identity, client_id)


@dataclass(frozen=True)
class Refused:
    """A socket refused before it was served: its close code and reason."""

    code: int
    reason: str


def _refused(status: int, code: str) -> Refused:
    """The close for an end user's token refused with HTTP ``status`` (401, 403, else 404)."""
    return Refused({401: 4001, 403: 4003}.get(status, 4004), code)


async def _identify(
    svc: Services, token: str, full_name: str
) -> tuple[Principal, str | None] | Refused:
    """Who opens the socket, with the token minted for a new anonymous identity; or the
    close (code, reason) that refuses it."""
    modules = svc.extra.get("modules")
    identities: Identities | None = getattr(modules, "identities", None)
    issuers: Issuers | None = getattr(modules, "issuers", None)
    if issuers is not None and looks_like_jwt(token):
        try:
            return await issuers.authenticate(token, full_name), None
        except ServiceError as exc:
            if exc.status >= 500:
                raise
            return _refused(exc.status, exc.code)
    if identities is not None and (not token or token.startswith(TOKEN_PREFIX)):
        if token:
            found = await authenticate_token(svc.store, identities.secret, token)
            if isinstance(found, str):
                status, code, _ = REFUSALS[found]
                return _refused(status, code)
            return found, None
        try:
            created = await identities.create(full_name)
        except ServiceError as exc:
            if exc.status >= 500:
                raise
            if exc.status == 429:
                return Refused(4029, exc.code)
            if exc.code == "anonymous_disabled":
                return Refused(4003, exc.code)
            return Refused(4001, "unauthorized")  # no key, and no anonymous identities here
        found = await authenticate_token(svc.store, identities.secret, created.token)
        if isinstance(found, str):  # revoked or turned off in the meantime
            return Refused(4003, REFUSALS[found][1])
        return found, created.token
    principal = await authenticate(svc.store, token)
    if principal is None:
        return Refused(4001, "unauthorized")
    if principal.environment_id is not None:  # a key for the flags API only
        return Refused(4003, "environment_key")
    return principal, None


def _live_check(
    svc: Services, principal: Principal, token: str, full_name: str, db_id: int, sql_role: str
) -> Callable[[], Awaitable[Verdict | None]]:
    modules: Any = svc.extra.get("modules")
    if principal.issuer is not None:
        return lambda: modules.issuers.verdict(token, full_name)
    if principal.anonymous:
        return lambda: identity_verdict(svc.store, modules.secret, token)
    return lambda: database_verdict(svc.store, token, full_name, db_id, sql_role)


def _known_check(
    svc: Services, known: Known, full_name: str, db_id: int, sql_role: str
) -> Callable[[], Awaitable[Verdict | None]]:
    async def check() -> Verdict | None:
        ended = await known.still()
        if ended is not None:
            return ended
        return await access_verdict(svc.store, known.principal, full_name, db_id, sql_role)

    return check


def _hello(svc: Services, principal: Principal, minted: str | None) -> dict[str, Any]:
    """The greeting's identity fields: ``identity`` (the ``ctx.sender`` of the connection's
    reducer calls), and ``token`` once, when the connection made a new anonymous one."""
    secret = getattr(svc.extra.get("modules"), "secret", None)
    if not isinstance(secret, bytes):
        return {}
    hello: dict[str, Any] = {
        "identity": sender_of(secret, principal),
        "anonymous": principal.anonymous,
    }
    if principal.issuer is not None:
        hello["issuer"] = principal.issuer
    if minted is not None:
        hello["token"] = minted
    return hello


def _caller(svc: Services, principal: Principal, full_name: str) -> Caller | None:
    modules = svc.extra.get("modules")
    if modules is None:
        return None

    async def call(reducer: str, args: Any, connection_id: str) -> dict[str, Any]:
        result = await modules.call(  # type: ignore[attr-defined]
            principal, full_name, reducer, args, connection_id=connection_id
        )
        answer: dict[str, Any] = result.model_dump(mode="json", by_alias=True)
        return answer

    return call


def socket_budget(svc: Services, principal: Principal, database_id: int) -> tuple[int, int]:
    """The tally a socket counts in and its limit: the caller's account (a user with its
    service accounts) up to ``account_max_realtime_connections``; anonymous identities
    per database, up to ``module_anonymous_max_connections``."""
    settings = svc.settings
    if principal.end_user:
        return -database_id, settings.module_anonymous_max_connections
    if principal.is_admin and settings.account_limits_exempt_admins:
        return principal.user_id, 1 << 62
    return principal.user_id, settings.account_max_realtime_connections


class Session:
    def __init__(
        self,
        ws: WebSocket,
        hub: Hub,
        client: Client,
        heartbeat: float,
        caller: Caller | None = None,
    ) -> None:
        self.ws = ws
        self.hub = hub
        self.client = client
        self.heartbeat = heartbeat
        self.caller = caller
        self.last_heard = time.monotonic()
        self._calls: set[asyncio.Task[None]] = set()

    async def run(self, hello: dict[str, Any] | None = None) -> None:
        """Serve the connection until it ends; ``hello``: extra fields of the greeting."""
        self.client.send(
            {
                "type": "hello",
                "protocol": 1,
                "connection_id": self.client.id,
                "server_version": __version__,
                "heartbeat_interval_ms": int(self.heartbeat * 1000),
                **(hello or {}),
            }
        )
        tasks = [
            asyncio.create_task(self._read()),
            asyncio.create_task(self._write()),
            asyncio.create_task(self._beat()),
            # a writer stuck on a full socket never sees its outbox overflow: watch it here
            asyncio.create_task(self.client.outbox.finished.wait()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        outbox = self.client.outbox
        code, reason = outbox.close_code, outbox.close_reason
        if outbox.overflowed:
            code, reason = 4008, "slow_consumer"
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code, reason), _CLOSE_TIMEOUT_S)

    async def _write(self) -> None:
        while (message := await self.client.outbox.get()) is not None:
            await self.ws.send_text(message)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            if time.monotonic() - self.last_heard > 3 * self.heartbeat:
                self.client.outbox.close(4009, "heartbeat_timeout")
                return
            self.client.send({"type": "ping"})

    async def _read(self) -> None:
        try:
            while True:
                text = await self.ws.receive_text()
                self.last_heard = time.monotonic()
                await self._handle(text)
        except (WebSocketDisconnect, WebSocketDisconnected):  # the client went away
            self.client.outbox.close()
        except (PoolTimeout, PostgresUnavailable) as exc:  # busy or down: come back later
            _log.warning("realtime connection %s: %s; closed with 1013", self.client.id, exc)
            self.client.outbox.close(1013, "postgres_unavailable")
        except psycopg.OperationalError as exc:  # its session ended: Postgres is stopping
            _log.warning("realtime connection %s: %s; closed with 1013", self.client.id, exc)
            self.client.outbox.close(1013, "postgres_unavailable")
        except TimeoutError:  # the change stream did not reach a subscribe's snapshot
            _log.warning("realtime connection %s: the stream fell behind", self.client.id)
            self.client.outbox.close(4011, "stream_failed")
        except StreamStopped as exc:  # it ended while a subscribe waited on it
            _log.warning("realtime connection %s: %s", self.client.id, exc)
            self.client.outbox.close(4011, "stream_failed")
        except Exception:
            _log.exception("realtime connection %s failed", self.client.id)
            self.client.outbox.close(1011, "internal_error")

    async def _handle(self, text: str) -> None:
        request_id: Any = None
        max_depth = self.ws.app.state.services.settings.max_json_depth
        if too_deep(text.encode(), max_depth):  # json.loads would recurse until it fails
            self._error(None, "json_too_deep", too_deep_error(max_depth, "the message").message)
            return
        try:
            message = json.loads(text)
            if has_lone_surrogate(text, message):
                self._error(None, "invalid_text", invalid_text_error().message)
                return
            if not isinstance(message, dict):
                raise SubscribeError("bad_message", "messages are JSON objects with a 'type'")
            request_id = message.get("request_id")
            kind = message.get("type")
            if kind == "subscribe":
                await self.hub.subscribe(self.client, request_id, _strings(message, "queries"))
            elif kind == "unsubscribe":
                self.hub.unsubscribe(self.client, request_id, _strings(message, "query_ids"))
            elif kind == "call":
                self._start_call(request_id, message)
            elif kind == "ping":
                self.client.send({"type": "pong", "request_id": request_id})
            elif kind == "pong":
                pass
            else:
                raise SubscribeError("bad_message", f"unknown message type {kind!r}")
        except json.JSONDecodeError:
            self._error(None, "bad_message", "messages must be JSON")
        except SubscribeError as exc:
            self._error(request_id, exc.code, exc.message)
        except WalLevelError as exc:
            self._error(request_id, "realtime_unavailable", str(exc))
            self.client.outbox.close(4012, "realtime_unavailable")
        except Exception as exc:
            sqlstate = getattr(exc, "sqlstate", None)
            if sqlstate == "42501":
                self._error(request_id, "permission_denied", str(exc).strip())
            else:
                raise

    def _start_call(self, request_id: Any, message: dict[str, Any]) -> None:
        """Run a reducer call beside the reading (it may take a while); its answer is a
        ``call_result`` with the request id, sent after the call's rows when this
        connection subscribed to any of them."""
        reducer, args = message.get("reducer"), message.get("args", [])
        if not isinstance(request_id, str) or not request_id:
            raise SubscribeError("bad_message", "a call needs a 'request_id' string")
        if not isinstance(reducer, str) or not reducer:
            raise SubscribeError("bad_message", "a call needs the 'reducer' to call")
        if self.caller is None:
            self._call_failed(request_id, ServiceError(404, "module_not_found", "no modules"))
            return
        if len(self._calls) >= MAX_CALLS_IN_FLIGHT:
            error = ServiceError(
                429,
                "too_many_calls",
                f"at most {MAX_CALLS_IN_FLIGHT} calls in flight per connection; wait for answers",
            )
            self._call_failed(request_id, error)
            return
        task = asyncio.create_task(self._call(self.caller, request_id, reducer, args))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _call(self, caller: Caller, request_id: str, reducer: str, args: Any) -> None:
        try:
            answer = await caller(reducer, args, self.client.id)
        except ServiceError as exc:
            self._call_failed(request_id, exc)
            return
        except Exception:
            _log.exception("reducer call on %s failed", self.client.id)
            self._call_failed(request_id, ServiceError(500, "internal_error", "internal error"))
            return
        xid = answer.get("xid")
        if isinstance(xid, int) and self.client.keys:
            await self.hub.wait_dispatched(xid, ROWS_BEFORE_RESULT_S)
        self.client.send({"type": "call_result", "request_id": request_id, "outcome": answer})

    def _call_failed(self, request_id: str, exc: ServiceError) -> None:
        self.client.send(
            {
                "type": "call_result",
                "request_id": request_id,
                "status_code": exc.status,
                "error": {"code": exc.code, "message": exc.message, "details": exc.details},
            }
        )

    def _error(self, request_id: Any, code: str, message: str) -> None:
        self.client.send(
            {"type": "error", "request_id": request_id, "code": code, "message": message}
        )


def _strings(message: dict[str, Any], field: str) -> list[str]:
    value = message.get(field)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise SubscribeError("bad_message", f"'{field}' must be a non-empty list of strings")
    return value
