"""``/database/subscribe/{owner}/{name}``: SpacetimeDB 0.7's WebSocket, for its SDK.

The unmodified ``spacetimedb-sdk`` 0.7 connects here (subprotocol
``v1.text.spacetimedb``, its token as ``Authorization: Basic base64("token:" + token)``)
when given the millpond server as its host and ``owner/name`` as the module's address.
The socket is served exactly as millpond's own realtime socket (``realtime/router.py``:
authentication, anonymous identities, access re-checked for its whole life, lifecycle
reducers, row visibility), with a :class:`~.translate.Translator` between the hub and
the wire.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket

from ...limits import too_deep
from ...realtime.hub import Client, Hub
from ...realtime.outbox import Outbox
from ...realtime.router import Caller, Flavor, Session, serve
from .translate import CompatError, Translator

router = APIRouter()
_log = logging.getLogger("millpond.compat.spacetimedb")

SUBPROTOCOL = "v1.text.spacetimedb"


def basic_token(ws: WebSocket) -> str:
    """The token of ``Authorization: Basic base64("token:" + token)`` (a ``Bearer`` works
    too); "" when there is none (a new anonymous identity)."""
    scheme, _, value = ws.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() != "basic":
        return ""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""
    _, _, token = decoded.partition(":")
    return token


class TranslatingOutbox(Outbox):
    """An outbox that queues each hub message as the 0.7 messages it stands for."""

    def __init__(self, max_bytes: int, translator: Translator) -> None:
        super().__init__(max_bytes)
        self.translator = translator

    def put(self, message: str) -> bool:
        if self.closed or self.overflowed:
            return False
        ok = True
        try:
            translated = self.translator.translate(json.loads(message))
        except Exception:  # never into the hub, which fans out to every connection
            _log.exception("cannot translate a message for a SpacetimeDB 0.7 client")
            self.close(1011, "internal_error")
            return False
        for out in translated:
            ok = super().put(json.dumps(out, separators=(",", ":"))) and ok
        if self.translator.close is not None:
            self.close(*self.translator.close)
        return ok


class SpacetimeSession(Session):
    """Reads 0.7 messages; no heartbeat of its own (0.7 clients send none: the
    WebSocket's own pings, which the server sends, find a dead peer)."""

    def __init__(
        self,
        ws: WebSocket,
        hub: Hub,
        client: Client,
        heartbeat: float,
        caller: Caller | None,
        access: Any,
        translator: Translator,
    ) -> None:
        super().__init__(ws, hub, client, heartbeat, caller)
        self.translator = translator
        self.access = access

    async def run(self, hello: dict[str, Any] | None = None) -> None:
        modules: Any = self.ws.app.state.services.extra.get("modules")
        if modules is not None:
            latest = await modules.publisher.latest(self.access.id)
            self.translator.module = latest.definition if latest is not None else None
        await super().run(hello)

    async def _beat(self) -> None:
        await asyncio.Event().wait()

    async def _handle(self, text: str) -> None:
        depth = self.ws.app.state.services.settings.max_json_depth
        if too_deep(text.encode(), depth):
            self.client.outbox.close(1009, "json_too_deep")
            return
        try:
            request = self.translator.request(text)
        except CompatError as exc:
            self.client.outbox.close(1008, str(exc)[:120])
            return
        if request is not None:
            await super()._handle(json.dumps(request))


@router.websocket("/database/subscribe/{owner}/{name}")
async def subscribe(ws: WebSocket, owner: str, name: str) -> None:
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    translator = Translator(basic_token(ws))

    def outbox(max_bytes: int) -> Outbox:
        return TranslatingOutbox(max_bytes, translator)

    def session(
        ws: WebSocket, hub: Hub, client: Client, beat: float, caller: Caller | None, access: Any
    ) -> Session:
        return SpacetimeSession(ws, hub, client, beat, caller, access, translator)

    await serve(ws, owner, name, translator.token, Flavor(outbox, session))


_PUBLIC_NAMED = """
SELECT u.username FROM databases d JOIN users u ON u.id = d.owner_id
WHERE lower(d.name) = lower(%s) AND NOT d.is_private ORDER BY u.username LIMIT 2
"""


@router.websocket("/database/subscribe/{name}")
async def subscribe_unqualified(ws: WebSocket, name: str) -> None:
    """A module named as SpacetimeDB named them, without an owner (``chatqs``): the one
    public database of that name; refused (4004) when there is none or several."""
    svc: Any = ws.app.state.services
    owners = await svc.store.fetchall(_PUBLIC_NAMED, (name,))
    if len(owners) == 1:
        await subscribe(ws, owners[0]["username"], name)
        return
    await ws.accept(subprotocol=SUBPROTOCOL)
    several = "several public databases are" if owners else "no public database is"
    await ws.close(4004, f"database_not_found: {several} named so; connect to owner/name")
