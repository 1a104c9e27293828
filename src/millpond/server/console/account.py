"""The account page: who the session is, and setting the user's password (the current
one is needed when there is one). Setting it ends every console session of the user,
this one included (``accounts/logins.py``): the next page is the login."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ...models import PasswordSet
from ..accounts import logins
from ..errors import ServiceError
from .pages import Console, form_session, platform_page, redirect, to_login

router = APIRouter(include_in_schema=False)


async def _account_page(
    console: Console, status: int = 200, flash: str | None = None
) -> HTMLResponse:
    row = await console.svc.store.fetchone(
        "SELECT password_hash IS NOT NULL AS has_password FROM users WHERE id = %s",
        (console.who.user_id,),
    )
    return console.render(
        "account.html",
        status,
        title="Your account",
        section="account",
        has_password=bool(row and row["has_password"]),
        flash=flash or await console.notice(),
        flash_kind="error" if flash else "ok",
    )


@router.get("/account", response_class=HTMLResponse)
async def account_page(request: Request) -> Response:
    return await platform_page(request, "Your account", "account", _account_page)


@router.post("/account/password", response_class=HTMLResponse)
async def set_password(request: Request) -> Response:
    console, form = await form_session(request)
    if console is None:
        return to_login(request)
    try:
        console.require_platform()
        if form.get("password", "") != form.get("again", ""):
            raise ServiceError(422, "passwords_differ", "the two new passwords differ")
        body = PasswordSet(
            password=form.get("password", ""),
            current_password=form.get("current_password") or None,
        )
        await logins.set_own_password(console.svc.store, console.who, body)
    except ServiceError as exc:
        if exc.code == "environment_key":
            return console.error(exc, "Your account", section="account")
        return await _account_page(console, exc.status, f"{exc.message} ({exc.code})")
    return redirect("/console/login?notice=password_set")
