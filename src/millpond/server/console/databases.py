"""The databases pages: the list (own and shared, each one's size against its limit),
create, and one database's page — its Connect panel (connection string, psql command,
SDK snippet: bit.io's Connect tab), settings, collaborators and delete. Every action
calls the databases service with the session's principal, as the API does."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ...models import CollaboratorSet, DatabaseCreate, DatabaseUpdate
from ..errors import ServiceError
from .pages import (
    Console,
    form_session,
    platform_page,
    positive_number,
    redirect,
    to_login,
    validated,
)

router = APIRouter(include_in_schema=False)

_MB = 1024 * 1024


def database_url(full_name: str, page: str = "") -> str:
    owner, _, name = full_name.partition("/")
    path = f"/console/databases/{quote(owner, safe='')}/{quote(name, safe='')}"
    return path + (f"/{page}" if page else "")


def _limit_bytes(text: str) -> int | None:
    """A storage limit typed in MB ('' for none)."""
    megabytes = positive_number(text, "the storage limit", "MB", ", e.g. 500")
    return None if megabytes is None else int(megabytes * _MB)


def connect_info(console: Console, full_name: str) -> dict[str, str]:
    """What the Connect panel shows: the gateway's address as the browser reached the
    server, the user's name, and the key as a placeholder (it is never kept)."""
    host = console.request.url.hostname or "127.0.0.1"
    port = console.svc.settings.gateway_port
    user = console.who.username
    conninfo = f"host={host} port={port} user={user} dbname={full_name} sslmode=require"
    base = str(console.request.base_url).rstrip("/")
    return {
        "conninfo": conninfo,
        "url": f"postgresql://{quote(user, safe='')}:$MILLPOND_API_KEY@{host}:{port}/"
        f"{quote(full_name, safe='')}?sslmode=require",
        "psql": f'PGPASSWORD=$MILLPOND_API_KEY psql "{conninfo}"',
        "sdk": "from millpond import Millpond\n\n"
        f'mp = Millpond(base_url="{base}")  # the key from MILLPOND_API_KEY\n'
        f'print(mp.query("{full_name}", "SELECT 1").data)',
        "cli": f"millpond db connect {full_name} --psql",
    }


async def _list(console: Console, status: int = 200, flash: str | None = None) -> HTMLResponse:
    databases = await console.svc.databases.list(console.who, sizes=True)
    return console.render(
        "databases.html",
        status,
        title="Databases",
        section="databases",
        databases=databases,
        flash=flash or await console.notice(),
        flash_kind="error" if flash else "ok",
        mb=_MB,
    )


@router.get("/databases", response_class=HTMLResponse)
async def databases_page(request: Request) -> Response:
    return await platform_page(request, "Databases", "databases", lambda console: _list(console))


@router.post("/databases/new")
async def create_database(request: Request) -> Response:
    console, form = await form_session(request)
    if console is None:
        return to_login(request)
    try:
        console.require_platform()
        body = validated(
            DatabaseCreate,
            name=form.get("name", "").strip(),
            is_private=form.get("is_private") == "on",
            storage_limit_bytes=_limit_bytes(form.get("storage_limit_mb", "")),
        )
        made = await console.svc.databases.create(console.who, body)
    except ServiceError as exc:
        if exc.code == "environment_key":
            return console.error(exc, "Databases", section="databases")
        return await _list(console, exc.status, f"{exc.message} ({exc.code})")
    await console.notify(f"Created {made.full_name}.")
    return redirect(database_url(made.full_name))


async def _database_page(
    console: Console, full_name: str, status: int = 200, flash: str | None = None
) -> HTMLResponse:
    db = await console.svc.databases.get(console.who, full_name)
    manage = db.role in ("admin", "owner")
    collaborators = await console.svc.databases.collaborators(console.who, full_name)
    return console.render(
        "database.html",
        status,
        title=db.full_name,
        section="databases",
        db=db,
        url=database_url(db.full_name),
        manage=manage,
        collaborators=collaborators,
        connect=connect_info(console, db.full_name),
        flash=flash or await console.notice(),
        flash_kind="error" if flash else "ok",
        mb=_MB,
    )


@router.get("/databases/{owner}/{name}", response_class=HTMLResponse)
async def database_page(request: Request, owner: str, name: str) -> Response:
    return await platform_page(
        request, "Database", "databases", lambda console: _database_page(console, f"{owner}/{name}")
    )


_ACTIONS = ("settings", "collaborators", "uncollaborate", "delete")
_NO_PAGE = ("database_not_found", "environment_key")
"""Errors after which there is no database page to show the error on."""


@router.post("/databases/{owner}/{name}/{action}")
async def database_action(request: Request, owner: str, name: str, action: str) -> Response:
    if action not in _ACTIONS:
        raise ServiceError(404, "not_found", f"no console action {action!r}")
    console, form = await form_session(request)
    if console is None:
        return to_login(request)
    full_name = f"{owner}/{name}"
    try:
        console.require_platform()
        done = await _act(console, full_name, action, form)
    except ServiceError as exc:
        if exc.code in _NO_PAGE:
            return console.error(exc, "Database", section="databases")
        return await _database_page(console, full_name, exc.status, f"{exc.message} ({exc.code})")
    text, url = done
    await console.notify(text)
    return redirect(url)


async def _act(
    console: Console, full_name: str, action: str, form: dict[str, str]
) -> tuple[str, str]:
    """Do ``action``: the notice to show and where to go next."""
    dbs, who = console.svc.databases, console.who
    if action == "settings":
        limit = _limit_bytes(form.get("storage_limit_mb", ""))
        body = validated(
            DatabaseUpdate,
            name=form.get("name", "").strip() or None,
            is_private=form.get("is_private") == "on",
            storage_limit_bytes=limit,
            clear_storage_limit=limit is None,
        )
        db = await dbs.update(who, full_name, body)
        return "Saved.", database_url(db.full_name)
    if action == "collaborators":
        username = form.get("username", "").strip()
        role = validated(CollaboratorSet, role=form.get("role", "read"))
        added = await dbs.set_collaborator(who, full_name, username, role)
        return f"{added.username} can now {added.role} it.", database_url(full_name)
    if action == "uncollaborate":
        username = form.get("username", "")
        await dbs.remove_collaborator(who, full_name, username)
        return f"{username} no longer has access.", database_url(full_name)
    if form.get("confirm", "") != full_name:
        raise ServiceError(
            422, "confirmation_failed", f"type {full_name} to confirm that it is to be deleted"
        )
    await dbs.delete(who, full_name)
    return f"Deleted {full_name}.", "/console/databases"
