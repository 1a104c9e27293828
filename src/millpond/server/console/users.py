"""Users, for admins: every user of the server, create one (their first key shown once),
reset a user's password (their console sessions end), delete one (with their databases
when asked). The accounts service's, as ``/v1/users`` is: anyone but an admin is refused
(403), as the API refuses them."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ...models import ApiKeyCreated, PasswordReset, UserCreate
from ..accounts import logins
from ..accounts import service as accounts
from ..errors import ServiceError
from .pages import Console, form_session, platform_page, redirect, to_login

router = APIRouter(include_in_schema=False)
LIST = "/console/users"


async def _users_page(
    console: Console,
    status: int = 200,
    flash: str | None = None,
    created: ApiKeyCreated | None = None,
) -> HTMLResponse:
    users = await accounts.list_users(console.svc.store, console.who)
    with_password = {
        r["id"]
        for r in await console.svc.store.fetchall(
            "SELECT id FROM users WHERE password_hash IS NOT NULL"
        )
    }
    return console.render(
        "users.html",
        status,
        title="Users",
        section="users",
        users=users,
        with_password=with_password,
        created=created,
        flash=flash or (None if created else await console.notice()),
        flash_kind="error" if flash else "ok",
    )


@router.get("/users", response_class=HTMLResponse)
async def users_page(request: Request) -> Response:
    return await platform_page(request, "Users", "users", _users_page)


@router.post("/users/new", response_class=HTMLResponse)
async def create_user(request: Request) -> Response:
    console, form = await form_session(request)
    if console is None:
        return to_login(request)
    try:
        console.require_platform()
        body = UserCreate(
            username=form.get("username", "").strip(), is_admin=form.get("is_admin") == "on"
        )
        made = await accounts.create_user(console.svc.store, console.who, body)
    except ServiceError as exc:
        return await _failed(console, exc)
    return await _users_page(console, 201, created=made.api_key)  # its key, shown once


@router.post("/users/{username}/{action}", response_class=HTMLResponse)
async def user_action(request: Request, username: str, action: str) -> Response:
    """``password`` (reset it) or ``delete``."""
    if action not in ("password", "delete"):
        raise ServiceError(404, "not_found", f"no console action {action!r}")
    console, form = await form_session(request)
    if console is None:
        return to_login(request)
    store, who = console.svc.store, console.who
    try:
        console.require_platform()
        if action == "password":
            await logins.reset_password(
                store, who, username, PasswordReset(password=form.get("password", ""))
            )
            done = f"Set {username}'s password; their console sessions ended."
        else:
            await accounts.delete_user_and_databases(
                store,
                who,
                username,
                form.get("delete_databases") == "on",
                console.svc.databases.drop_marked,
            )
            done = f"Deleted {username}."
    except ServiceError as exc:
        return await _failed(console, exc)
    if action == "password" and username.lower() == who.username.lower() and not who.key_id:
        return redirect("/console/login?notice=password_set")  # this session ended too
    await console.notify(done)
    return redirect(LIST)


async def _failed(console: Console, exc: ServiceError) -> HTMLResponse:
    if exc.status in (401, 403):
        return console.error(exc, "Users", section="users")
    return await _users_page(console, exc.status, f"{exc.message} ({exc.code})")
