"""Logging in and out of the console, its home and its static files.

A login is with a username and password (``accounts/logins.py``: throttled, one answer for
an unknown user and a wrong password) or, when the form has one, with an API key."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ..accounts import logins
from ..accounts.service import Principal, authenticate
from ..deps import Services, services
from ..errors import ServiceError
from ..static import StaticFiles
from .pages import (
    COOKIE,
    form_of,
    form_session,
    home_url,
    page,
    redirect,
    refuse_cross_site,
    same,
    session_of,
    set_cookie,
    to_login_page,
)
from .sessions import (
    end_every_session,
    end_session,
    hash_session,
    open_password_session,
    open_session,
)

router = APIRouter(include_in_schema=False)

LOGIN_COOKIE = "millpond_login"
LOGIN_TOKEN_TTL_S = 3600
_LOGIN_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
_STATIC = StaticFiles(
    Path(__file__).parent / "static",
    {
        "console.css": "text/css; charset=utf-8",
        "flags.css": "text/css; charset=utf-8",
        "console.js": "text/javascript; charset=utf-8",
    },
    "console",
    max_age=3600,
)
LOGIN_NOTICES = {
    "expired": "Your session ended: log in again.",
    "signed_out": "You are logged out.",
    "signed_out_everywhere": "You are logged out everywhere.",
    "password_set": "Your password is set: log in with it.",
}
"""The only notices the login page shows, by the id in ``?notice=``."""
BAD_PASSWORD = "Wrong username or password."


@router.get("", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    session = await session_of(request)
    return redirect(home_url(session.who) if session else "/console/login")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    return _STATIC.response(name)


def _login_page(
    request: Request, status: int = 200, flash: str | None = None, username: str = ""
) -> Response:
    """The login form, with its pre-session CSRF token (also in a cookie: double submit)."""
    token = request.cookies.get(LOGIN_COOKIE, "")
    if not _LOGIN_TOKEN.fullmatch(token):
        token = secrets.token_urlsafe(32)
    response = page(
        request,
        "login.html",
        status,
        title="Log in",
        flash=flash,
        login_csrf=token,
        username=username[:100],
    )
    set_cookie(
        request,
        response,
        LOGIN_COOKIE,
        token,
        path="/console/login",
        max_age=LOGIN_TOKEN_TTL_S,
    )
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, notice: str = "") -> Response:
    return _login_page(request, flash=LOGIN_NOTICES.get(notice))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    refuse_cross_site(request)
    form = await form_of(request)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not _LOGIN_TOKEN.fullmatch(expected) or not same(form.get("csrf", ""), expected):
        raise ServiceError(
            403, "csrf_failed", "the login form's token is missing or wrong: reload the page"
        )
    svc = services(request)
    secret = form.get("api_key", "").strip()
    if secret:  # the API key, when one is given; else the username and password
        who = await authenticate(svc.store, secret)
        if who is None:
            return _login_page(request, 401, "Unknown, revoked or expired API key.")
        return await _logged_in(request, who, await open_session(svc.store, who, _ttl(svc)))
    username, password = form.get("username", "").strip(), form.get("password", "")
    return await _password_login(request, username, password)


def _ttl(svc: Services) -> float:
    return svc.settings.console_session_ttl_s


async def _password_login(request: Request, username: str, password: str) -> Response:
    """Log in with a username and password: one answer for an unknown user and a wrong
    password (401, after the same work); 429 while the username is throttled."""
    svc = services(request)
    try:
        found = await logins.check_login(svc.store, username, password)
    except ServiceError as exc:
        if exc.code != "too_many_attempts":
            raise
        return _login_page(request, exc.status, f"{exc.message}.", username=username)
    session_id = None
    if found is not None:
        session_id = await open_password_session(
            svc.store, found.user_id, found.password_hash, _ttl(svc)
        )
    if found is None or session_id is None:
        return _login_page(request, 401, BAD_PASSWORD, username=username)
    who = Principal(found.user_id, found.username, found.is_admin, key_id="", scope="write")
    return await _logged_in(request, who, session_id)


async def _logged_in(request: Request, who: Principal, session_id: str) -> Response:
    """The answer to a login that worked: the session's cookie, to the first page."""
    svc = services(request)
    previous = request.cookies.get(COOKIE)
    if previous:  # a new login never keeps an old (perhaps planted) session id
        await end_session(svc.store, hash_session(previous))
    ttl = _ttl(svc)
    response = redirect(home_url(who))
    set_cookie(request, response, COOKIE, session_id, path="/console", max_age=max(1, int(ttl)))
    response.delete_cookie(LOGIN_COOKIE, path="/console/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session, form = await form_session(request)
    notice = "signed_out"
    if session is not None and form.get("everywhere"):
        await end_every_session(session.svc.store, session.who)
        notice = "signed_out_everywhere"
    elif session is not None:
        await end_session(session.svc.store, session.session.id_hash)
    response = to_login_page(notice)
    response.delete_cookie(COOKIE, path="/console")
    return response
