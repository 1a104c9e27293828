"""What every console page shares: the templates, the logged-in caller of a request
(:class:`Console`), the form checks (same site, CSRF token bound to the session) and the
error page.

Login is with an API key, but the key is never kept: the cookie holds a random
server-side session id (``sessions.py``; ``HttpOnly``, ``SameSite=Strict``, ``Secure`` over
https, ``Path=/console``, ``Max-Age`` its lifetime). Every request re-checks the session
and its key, so logout, "sign out everywhere", the session's expiry, or the key being
revoked or expiring ends it at once. Every POST is refused when the browser says it
comes from another site (``Sec-Fetch-Site`` / ``Origin``); the login form carries a
pre-session token (double submit cookie) and every other form a token bound to the
session, so a forged POST changes nothing. Notices are texts the server wrote, kept in
the session: nothing from the query string is ever shown as one. The pages call the same
services as the API, with the same principal, so they can do nothing the API would
refuse; read-only keys see the pages without the buttons. The pages have no inline
script or style (the CSP set by ``server/headers.py`` allows none).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel
from starlette.datastructures import URL

from ..accounts.service import Principal, require_unbound
from ..deps import Services, services
from ..errors import ServiceError
from ..flags.access import Env
from ..flags.service import FlagService
from .sessions import ConsoleSession, load_session, set_flash, take_flash

COOKIE = "millpond_console"
_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)


def same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _templates.get_template(name).render(request=request, **context)
    return HTMLResponse(html, status_code=status)


def to_login_page(notice: str | None = None) -> RedirectResponse:
    query = "?" + urlencode({"notice": notice}) if notice else ""
    return RedirectResponse("/console/login" + query, status_code=303)


def to_login(request: Request) -> RedirectResponse:
    """Where a request without a live session goes ("expired" if it had a cookie)."""
    return to_login_page("expired" if request.cookies.get(COOKIE) else None)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def set_cookie(request: Request, response: Response, name: str, value: str, **kw: Any) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        **kw,
    )


def own_origin(url: URL) -> str:
    """The origin the browser gives the console's own pages (``ws``/``wss`` as the
    ``http``/``https`` of the page that opened the socket)."""
    scheme = {"ws": "http", "wss": "https"}.get(url.scheme, url.scheme)
    return f"{scheme}://{url.netloc}".lower()


def refuse_cross_site(request: Request) -> None:
    """403 for a POST the browser says another site made (CSRF, login CSRF)."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    ours = own_origin(request.url)
    if (site is not None and site not in ("same-origin", "none")) or (
        origin is not None and origin.lower() != ours
    ):
        raise ServiceError(
            403, "cross_site_request", "the console accepts forms from its own pages only"
        )


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], **fields: Any) -> M:
    """``model`` made of a form's fields; else 422 ``validation_error`` with pydantic's
    first line."""
    try:
        return model(**fields)
    except ValueError as exc:
        raise ServiceError(422, "validation_error", str(exc).splitlines()[0]) from None


def positive_number(text: str, what: str, unit: str, example: str = "") -> float | None:
    """A number more than 0 typed in a form field ('' for none): ``what`` names it in
    the 422's message ("the expiry is a number of days")."""
    text = text.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ServiceError(
            422, "validation_error", f"{what} is a number of {unit}{example}"
        ) from None
    if not number > 0:
        raise ServiceError(422, "validation_error", f"{what} must be more than 0 {unit}")
    return number


def home_url(who: Principal) -> str:
    """The first page after login: a key bound to a flags environment sees only flags."""
    return "/console/flags" if who.environment_id is not None else "/console/databases"


class Console:
    """The logged-in caller of one request."""

    def __init__(self, request: Request, svc: Services, session: ConsoleSession) -> None:
        self.request = request
        self.svc = svc
        self.session = session
        self.who: Principal = session.who
        self.csrf = session.csrf

    @property
    def flags(self) -> FlagService:
        flags = self.svc.flags
        if flags is None:  # pragma: no cover - started by the lifespan
            raise ServiceError(503, "unavailable", "flags are not running")
        return flags

    def require_platform(self) -> None:
        """The databases, SQL and keys pages: refused to a key bound to a flags
        environment, as the API refuses it (403 ``environment_key``)."""
        require_unbound(self.who)

    async def env(self, ref: str | None) -> tuple[list[Any], Env | None]:
        envs = await self.flags.list_environments(self.who)
        if ref is None and not envs:
            return envs, None
        wanted = ref or envs[0].id
        return envs, await self.flags.access.resolve(self.who, wanted)  # 404 if not theirs

    async def notify(self, text: str) -> None:
        """Show ``text`` (the server's own words) on the session's next page."""
        await set_flash(self.svc.store, self.session.id_hash, text)

    async def notice(self) -> str | None:
        return await take_flash(self.svc.store, self.session)

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        env = context.get("env")
        return page(
            self.request,
            name,
            status,
            who=self.who,
            csrf=self.csrf,
            can_write=self.who.scope == "write",
            bound=self.who.environment_id is not None,
            env_query="?" + urlencode({"env": env.id}) if env is not None else "",
            **context,
        )

    def error(self, exc: ServiceError, title: str = "Error", **context: Any) -> HTMLResponse:
        """The error page: the service's message and code, with the answer's status."""
        return self.render(
            "error.html",
            exc.status,
            title=title,
            flash=f"{exc.message} ({exc.code})",
            code=exc.code,
            **context,
        )


async def session_of(request: Request) -> Console | None:
    svc = services(request)
    found = await load_session(svc.store, request.cookies.get(COOKIE, ""))
    return Console(request, svc, found) if found is not None else None


async def form_of(request: Request) -> dict[str, str]:
    return {k: str(v) for k, v in (await request.form()).items()}


async def form_session(request: Request) -> tuple[Console | None, dict[str, str]]:
    """The session of a same-site form POST whose CSRF token matches, and its fields."""
    refuse_cross_site(request)
    session = await session_of(request)
    form = await form_of(request)
    if session is not None and not same(form.get("csrf", ""), session.csrf):
        raise ServiceError(403, "csrf_failed", "the form's token is missing or wrong: reload")
    return session, form


async def platform_page(
    request: Request, title: str, section: str, page: Callable[[Console], Awaitable[Response]]
) -> Response:
    """A GET of the platform's pages (all but login and flags): to the login page without
    a session; refused to a key bound to a flags environment, as the API refuses it; the
    error page, with the service's status, when ``page`` raises."""
    console = await session_of(request)
    if console is None:
        return to_login(request)
    try:
        console.require_platform()
        return await page(console)
    except ServiceError as exc:
        return console.error(exc, title, section=section)
