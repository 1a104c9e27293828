"""The realtime inspector: subscribe to a query from the browser and watch its rows, and
every change to them, arrive live.

The page's script opens ``/console/databases/{owner}/{name}/live``, a WebSocket the
console's session authenticates (its cookie is ``SameSite=Strict`` and scoped to
``/console``; the console keeps no key to give the browser). It is served by the
realtime service exactly as ``/v1/realtime`` is — the same protocol, limits, row-level
security and re-checks — for the session's principal; it closes when the session ends
(4001) as a key's socket does when its key is revoked. A handshake from another site's
page is refused (4003 ``cross_site_request``)."""

from __future__ import annotations

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import HTMLResponse, Response

from ...models import QueryRequest
from ..realtime.router import Known, serve
from ..recheck import Verdict
from .databases import database_url
from .pages import COOKIE, Console, own_origin, platform_page
from .sessions import load_session

router = APIRouter(include_in_schema=False)


@router.get("/databases/{owner}/{name}/realtime", response_class=HTMLResponse)
async def inspector_page(request: Request, owner: str, name: str) -> Response:
    return await platform_page(
        request, "Realtime", "databases", lambda console: _inspector(console, f"{owner}/{name}")
    )


async def _inspector(console: Console, full_name: str) -> HTMLResponse:
    db = await console.svc.databases.get(console.who, full_name)
    tables = await console.svc.query.run(console.who, _tables_request(db.full_name))
    return console.render(
        "realtime.html",
        title=f"Realtime · {db.full_name}",
        section="databases",
        db=db,
        url=database_url(db.full_name),
        tables=[row[0] for row in tables["data"]],
    )


def _tables_request(full_name: str) -> QueryRequest:
    """The public tables, to suggest a query (a subscription reads one table)."""
    return QueryRequest(
        database=full_name,
        sql="SELECT pg_catalog.quote_ident(n.nspname) OPERATOR(pg_catalog.||) '.'"
        " OPERATOR(pg_catalog.||) pg_catalog.quote_ident(c.relname)"
        " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public' ORDER BY c.relname LIMIT 200",
    )


def _same_origin(ws: WebSocket) -> bool:
    origin = ws.headers.get("origin")
    return origin is not None and origin.lower() == own_origin(ws.url)


@router.websocket("/databases/{owner}/{name}/live")
async def live(ws: WebSocket, owner: str, name: str) -> None:
    await ws.accept()
    if not _same_origin(ws):
        await ws.close(4003, "cross_site_request")
        return
    store = ws.app.state.services.store
    cookie = ws.cookies.get(COOKIE, "")
    session = await load_session(store, cookie)
    if session is None:
        await ws.close(4001, "unauthorized")
        return
    if session.who.environment_id is not None:
        await ws.close(4003, "environment_key")
        return

    async def still() -> Verdict | None:
        if await load_session(store, cookie) is None:
            return Verdict("unauthorized", "the console session ended")
        return None

    known = Known(session.who, ("console", session.id_hash), still, session.who.expires_at)
    await serve(ws, owner, name, "", known=known)
