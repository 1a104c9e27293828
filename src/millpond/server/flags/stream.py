"""``/v1/flags/stream``: an environment's flags, live — the realtime protocol
(docs/realtime-protocol.md) over the control database's flag tables.

A connection subscribes with ordinary subscription queries to the tables in
:data:`STREAM_TABLES`, each confined to its environment by a top-level
``environment_id = '<env id>'`` conjunct (refused otherwise, before anything is read):
``flag_rulesets`` for the rules, and the ``flag_companies``/``flag_users`` rows (found
through ``flag_company_keys``/``flag_user_keys``), ``flag_company_overrides`` and
``flag_metrics`` of the companies and users it evaluates. It gets their rows, then every
committed change in commit order, from the same hub machinery as user databases: the
control database's WAL, so a change made through any replica (or by hand in SQL) reaches
every stream.

The environment is the one the API key is bound to, or ``?environment=<id or name>`` for
an account key (read access is enough).

Authorization holds for the connection's whole life (``recheck.py``): a key revoked or
expired closes the stream with 4001, an environment deleted or no longer reachable (its
owner's admin rights gone, say) with 4004 ``environment_not_found`` — within about a
second, on every replica.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from fastapi import APIRouter, WebSocket

from ...engine import predicates
from ..accounts.service import authenticate
from ..deps import Services
from ..errors import ServiceError
from ..realtime.hub import Client, SubscribeError
from ..realtime.outbox import Outbox
from ..realtime.router import SUBPROTOCOL, LiveSocket, Session, bearer_token, live_sockets
from ..recheck import Verdict, key_verdict
from ..store import Store
from .access import Access

router = APIRouter()

STREAM_TABLES = (
    "flag_rulesets",
    "flag_companies",
    "flag_company_keys",
    "flag_company_overrides",
    "flag_users",
    "flag_user_keys",
    "flag_memberships",
    "flag_metrics",
)
"""What a flags stream may subscribe to (also the control hub's publication)."""


def environment_guard(env_id: str) -> Callable[[predicates.BoundQuery], None]:
    """Refuse queries on other tables, or not confined to the environment ``env_id``."""

    def guard(query: predicates.BoundQuery) -> None:
        if query.schema != "public" or query.name not in STREAM_TABLES:
            raise SubscribeError(
                "permission_denied",
                f"the flags stream serves only {', '.join(STREAM_TABLES)}",
            )
        confined = any(
            eq.column == "environment_id" and eq.keys == frozenset([env_id])
            for eq in query.equalities
        )
        if not confined:
            raise SubscribeError(
                "permission_denied",
                f"queries on the flags stream must include environment_id = '{env_id}'"
                " as a top-level AND condition",
            )

    return guard


@router.websocket("/v1/flags/stream")
async def flags_stream(ws: WebSocket) -> None:
    svc: Services = ws.app.state.services
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    flags = svc.flags
    if flags is None:  # pragma: no cover - started by the lifespan
        await ws.close(1013, "unavailable")
        return
    sockets = live_sockets(svc, "flags", [svc.store.invalidation, flags.invalidation])
    since = sockets.mark()
    token = bearer_token(ws)
    principal = await authenticate(svc.store, token)
    if principal is None:
        await ws.close(4001, "unauthorized")
        return
    ref = ws.query_params.get("environment") or await flags.access.binding(principal)
    if not ref:
        await ws.close(4000, "environment_required")
        return
    try:
        env = await flags.access.resolve(principal, ref)
    except ServiceError as exc:
        if exc.status >= 500:
            raise  # say, postgres_unavailable: closed with 1013, and the client retries
        await ws.close(4004 if exc.status == 404 else 4003, exc.code)
        return
    hub = await svc.realtime.control_hub(svc.store.pool, STREAM_TABLES)
    client = Client(
        f"c_{secrets.token_hex(8)}",
        Outbox(svc.settings.realtime_send_buffer_bytes),
        identity=principal,
        guard=environment_guard(env.id),
    )
    env_id = env.id
    live = LiveSocket(client.outbox, lambda: stream_verdict(svc.store, flags.access, token, env_id))
    sockets.add(live, (token, env_id), principal.expires_at, since)
    hub.connect(client)
    session = Session(ws, hub, client, svc.settings.realtime_heartbeat_ms / 1000)
    try:
        await session.run(hello={"environment_id": env.id, "environment": env.name})
    finally:
        sockets.discard(live)
        hub.disconnect(client)
        svc.realtime.release(hub)


async def stream_verdict(store: Store, access: Access, api_key: str, env_id: str) -> Verdict | None:
    """None while ``api_key`` still reaches the environment ``env_id``; else why not."""
    checked = await key_verdict(store, api_key)
    if isinstance(checked, Verdict):
        return checked
    try:
        await access.resolve(checked, env_id)
    except ServiceError as exc:
        if exc.status >= 500:
            raise
        if exc.status == 403:
            return Verdict("environment_forbidden", exc.message)
        return Verdict("environment_not_found", exc.message)
    return None
