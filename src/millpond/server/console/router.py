"""``/console``: the flags web console (flypper's UI), server-rendered, calling the flags
service as the API does (DESIGN principle 2).

Login is with an API key, but the key is never kept: the cookie holds a random
server-side session id (``sessions.py``; ``HttpOnly``, ``SameSite=Strict``, ``Secure`` over
https, ``Path=/console``, ``Max-Age`` its lifetime). Every request re-checks the session
and its key, so logout, "sign out everywhere", the session's expiry, or the key being
revoked or expiring ends it at once; a key bound to an environment sees that environment
only. Every POST is refused when the browser says it comes from another site
(``Sec-Fetch-Site`` / ``Origin``); the login form carries a pre-session token (double
submit cookie) and every other form a token bound to the session, so a forged POST
changes nothing. Notices are texts the server wrote, kept in the session: nothing from
the query string is ever shown as one. Read-only keys see the pages without the buttons,
and the service refuses their POSTs. The pages have no inline script or style (the CSP
set by ``server/headers.py`` allows none).
"""

from __future__ import annotations

import hmac
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..accounts.service import Principal, authenticate
from ..deps import Services, services
from ..errors import ServiceError
from ..flags.access import Env
from ..flags.schemas import FlagCreate, FlagUpdate, RuleInput
from ..flags.service import FlagService, Page
from ..static import StaticFiles
from .sessions import (
    ConsoleSession,
    end_every_session,
    end_session,
    hash_session,
    load_session,
    open_session,
    set_flash,
    take_flash,
)

router = APIRouter(prefix="/console", include_in_schema=False)

COOKIE = "millpond_console"
LOGIN_COOKIE = "millpond_login"
LOGIN_TOKEN_TTL_S = 3600
_LOGIN_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)
_STATIC = StaticFiles(
    Path(__file__).parent / "static",
    {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"},
    "console",
    max_age=3600,
)
CONSOLE_RULES = ("console-actors", "console-rollout", "console-trait")
LOGIN_NOTICES = {
    "expired": "Your session ended: log in again.",
    "signed_out": "You are logged out.",
    "signed_out_everywhere": "You are logged out everywhere.",
}
"""The only notices the login page shows, by the id in ``?notice=``."""


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _templates.get_template(name).render(request=request, **context)
    return HTMLResponse(html, status_code=status)


def _login(notice: str | None = None) -> RedirectResponse:
    query = "?" + urlencode({"notice": notice}) if notice else ""
    return RedirectResponse("/console/login" + query, status_code=303)


def _set_cookie(request: Request, response: Response, name: str, value: str, **kw: Any) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        **kw,
    )


def refuse_cross_site(request: Request) -> None:
    """403 for a POST the browser says another site made (CSRF, login CSRF)."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    ours = f"{request.url.scheme}://{request.url.netloc}".lower()
    if (site is not None and site not in ("same-origin", "none")) or (
        origin is not None and origin.lower() != ours
    ):
        raise ServiceError(
            403, "cross_site_request", "the console accepts forms from its own pages only"
        )


class Console:
    """The logged-in caller of one request."""

    def __init__(self, request: Request, svc: Services, session: ConsoleSession) -> None:
        self.request = request
        self.svc = svc
        self.session = session
        self.who: Principal = session.who
        self.csrf = session.csrf
        flags = svc.flags
        if flags is None:  # pragma: no cover - started by the lifespan
            raise ServiceError(503, "unavailable", "flags are not running")
        self.flags: FlagService = flags

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
        return _page(
            self.request,
            name,
            status,
            who=self.who,
            csrf=self.csrf,
            can_write=self.who.scope == "write",
            env_query="?" + urlencode({"env": env.id}) if env is not None else "",
            **context,
        )


async def _session(request: Request) -> Console | None:
    svc = services(request)
    found = await load_session(svc.store, request.cookies.get(COOKIE, ""))
    return Console(request, svc, found) if found is not None else None


async def _form(request: Request) -> dict[str, str]:
    return {k: str(v) for k, v in (await request.form()).items()}


async def _form_session(request: Request) -> tuple[Console | None, dict[str, str]]:
    """The session of a same-site form POST whose CSRF token matches, and its fields."""
    refuse_cross_site(request)
    session = await _session(request)
    form = await _form(request)
    if session is not None and not _same(form.get("csrf", ""), session.csrf):
        raise ServiceError(403, "csrf_failed", "the form's token is missing or wrong: reload")
    return session, form


# -- login ---------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def home() -> Response:
    return RedirectResponse("/console/flags", status_code=303)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    return _STATIC.response(name)


def _login_page(request: Request, status: int = 200, flash: str | None = None) -> Response:
    """The login form, with its pre-session CSRF token (also in a cookie: double submit)."""
    token = request.cookies.get(LOGIN_COOKIE, "")
    if not _LOGIN_TOKEN.fullmatch(token):
        token = secrets.token_urlsafe(32)
    response = _page(request, "login.html", status, title="Log in", flash=flash, login_csrf=token)
    _set_cookie(
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
    form = await _form(request)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not _LOGIN_TOKEN.fullmatch(expected) or not _same(form.get("csrf", ""), expected):
        raise ServiceError(
            403, "csrf_failed", "the login form's token is missing or wrong: reload the page"
        )
    svc = services(request)
    secret = form.get("api_key", "").strip()
    who = await authenticate(svc.store, secret) if secret else None
    if who is None:
        return _login_page(request, 401, "Unknown, revoked or expired API key.")
    previous = request.cookies.get(COOKIE)
    if previous:  # a new login never keeps an old (perhaps planted) session id
        await end_session(svc.store, hash_session(previous))
    ttl = svc.settings.console_session_ttl_s
    session_id = await open_session(svc.store, who, ttl)
    response = RedirectResponse("/console/flags", status_code=303)
    _set_cookie(request, response, COOKIE, session_id, path="/console", max_age=max(1, int(ttl)))
    response.delete_cookie(LOGIN_COOKIE, path="/console/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session, form = await _form_session(request)
    notice = "signed_out"
    if session is not None and form.get("everywhere"):
        await end_every_session(session.svc.store, session.who)
        notice = "signed_out_everywhere"
    elif session is not None:
        await end_session(session.svc.store, session.session.id_hash)
    response = _login(notice)
    response.delete_cookie(COOKIE, path="/console")
    return response


# -- flags -----------------------------------------------------------------------------------


def _to_login(request: Request) -> RedirectResponse:
    return _login("expired" if request.cookies.get(COOKIE) else None)


def _flags_url(env: str, tab: str = "active") -> str:
    return "/console/flags?" + urlencode({"env": env, "tab": tab})


def _flag_url(env: str, key: str) -> str:
    return f"/console/flags/{quote(key, safe='')}?" + urlencode({"env": env})


@router.get("/flags", response_class=HTMLResponse)
async def flags_page(
    request: Request, env: str | None = None, tab: str = "active", q: str = ""
) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login(request)
    tab = "deleted" if tab == "deleted" else "active"
    try:
        envs, current = await session.env(env)
        flags = []
        if current is not None:
            every = await session.flags.list_flags(
                session.who, current.id, Page(1000), include_deleted=True
            )
            flags = [
                f
                for f in every
                if (f.deleted_at is not None) == (tab == "deleted")
                and (q.lower() in f.key.lower() or q.lower() in f.name.lower())
            ]
    except ServiceError as exc:
        return session.render("flags.html", exc.status, title="Flags", envs=[], flash=exc.message)
    return session.render(
        "flags.html",
        title="Flags",
        envs=envs,
        env=current,
        flags=flags,
        tab=tab,
        q=q,
        flash=await session.notice(),
        flash_kind="ok",
    )


_DONE = {
    "toggle": ("Toggled {key}.", "active"),
    "delete": ("Deleted {key}.", "active"),
    "restore": ("Restored {key}.", "deleted"),
    "purge": ("Deleted {key} for good.", "deleted"),
}
"""What each list action tells the user afterwards, and the tab it returns to."""


async def _act(request: Request, env: str, action: str, key: str) -> Response:
    session, form = await _form_session(request)
    if session is None:
        return _to_login(request)
    flags, who = session.flags, session.who
    try:
        if action == "new":
            body = FlagCreate(
                key=form.get("key", ""),
                name=form.get("name", ""),
                default_value=form.get("default_value") == "on",
            )
            made = await flags.create_flag(who, env, body)
            await session.notify(f"Created {made.key}.")
            return RedirectResponse(_flag_url(env, made.key), status_code=303)
        if action == "toggle":
            flag = await flags.get_flag(who, env, key)
            await flags.update_flag(who, env, key, FlagUpdate(default_value=not flag.default_value))
        elif action == "delete":
            await flags.delete_flag(who, env, key)
        elif action == "restore":
            await flags.restore_flag(who, env, key)
        elif action == "purge":
            await flags.purge_flag(who, env, key)
        elif action == "save":
            await _save(flags, who, env, key, form)
            await session.notify("Saved.")
            return RedirectResponse(_flag_url(env, key), status_code=303)
    except ServiceError as exc:
        envs, current = await session.env(env)
        return session.render(
            "flags.html",
            exc.status,
            title="Flags",
            envs=envs,
            env=current,
            flags=await flags.list_flags(who, env, Page(1000)) if current else [],
            tab="active",
            q="",
            flash=f"{exc.message} ({exc.code})",
        )
    text, tab = _DONE[action]
    await session.notify(text.format(key=key))
    return RedirectResponse(_flags_url(env, tab), status_code=303)


@router.post("/flags/new")
async def create_flag(request: Request, env: str) -> Response:
    return await _act(request, env, "new", "")


@router.post("/flags/{key}/{action}")
async def flag_action(request: Request, key: str, action: str, env: str) -> Response:
    if action not in ("toggle", "delete", "restore", "purge", "save"):
        raise ServiceError(404, "not_found", f"no console action {action!r}")
    return await _act(request, env, action, key)


@router.get("/flags/{key}", response_class=HTMLResponse)
async def flag_page(request: Request, key: str, env: str) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login(request)
    try:
        _, current = await session.env(env)
        flag = await session.flags.get_flag(session.who, env, key, include_deleted=True)
        rules = [] if flag.deleted_at else await session.flags.list_rules(session.who, env, key)
    except ServiceError as exc:
        return session.render(
            "audit.html", exc.status, title="Flag", entries=[], flash=f"{exc.message} ({exc.code})"
        )
    form = _rules_form(rules)
    others = sum(1 for r in rules if r.id not in CONSOLE_RULES)
    return session.render(
        "flag.html",
        title=key,
        env=current,
        flag=flag,
        form=form,
        other_rules=others,
        flash=await session.notice(),
        flash_kind="ok",
    )


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request, env: str | None = None, entity_id: str | None = None
) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login(request)
    _, current = await session.env(env)
    entries = []
    if current is not None:
        entries = await session.flags.list_audit(
            session.who, current.id, 200, None, None, entity_id
        )
    return session.render(
        "audit.html",
        title="Audit log",
        env=current,
        entries=entries,
        flash=await session.notice(),
        flash_kind="ok",
    )


# -- the rule editor ---------------------------------------------------------------------------


def _rules_form(rules: list[Any]) -> dict[str, str]:
    form = {
        "actors_entity": "user",
        "actors_key": "id",
        "actors_ids": "",
        "rollout_entity": "user",
        "rollout_key": "id",
        "rollout_percentage": "",
        "trait_entity": "company",
        "trait_key": "",
        "trait_value": "",
    }
    for rule in rules:
        if not rule.conditions:
            continue
        c = rule.conditions[0]
        if rule.id == "console-actors":
            key = next(iter(c.actors[0])) if c.actors else "id"
            form.update(
                actors_entity=c.actor_entity,
                actors_key=key,
                actors_ids="\n".join(a.get(key, "") for a in c.actors),
            )
        elif rule.id == "console-rollout":
            form.update(
                rollout_entity=c.actor_entity,
                rollout_key=c.actor_key or "id",
                rollout_percentage=f"{c.percentage:g}",
            )
        elif rule.id == "console-trait":
            form.update(
                trait_entity=c.trait_entity,
                trait_key=c.trait_key or "",
                trait_value=str(c.trait_value),
            )
    return form


def _console_rules(form: dict[str, str]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    ids = [v for v in re.split(r"[\s,]+", form.get("actors_ids", "")) if v]
    if ids:
        key = form.get("actors_key") or "id"
        rules.append(
            {
                "id": "console-actors",
                "value": True,
                "conditions": [
                    {
                        "condition_type": "actor_list",
                        "actor_entity": form.get("actors_entity", "user"),
                        "actors": [{key: v} for v in ids],
                    }
                ],
            }
        )
    if form.get("rollout_percentage", "").strip():
        try:
            pct = float(form["rollout_percentage"])
        except ValueError:
            raise ServiceError(422, "validation_error", "the percentage must be a number") from None
        rules.append(
            {
                "id": "console-rollout",
                "value": True,
                "conditions": [
                    {
                        "condition_type": "rollout",
                        "actor_entity": form.get("rollout_entity", "user"),
                        "actor_key": form.get("rollout_key") or None,
                        "percentage": pct,
                    }
                ],
            }
        )
    if form.get("trait_key", "").strip():
        rules.append(
            {
                "id": "console-trait",
                "value": True,
                "conditions": [
                    {
                        "condition_type": "trait",
                        "trait_entity": form.get("trait_entity", "company"),
                        "trait_key": form["trait_key"].strip(),
                        "trait_value": form.get("trait_value", ""),
                    }
                ],
            }
        )
    return rules


async def _save(
    flags: FlagService, who: Principal, env: str, key: str, form: dict[str, str]
) -> None:
    current = await flags.list_rules(who, env, key)
    kept = [
        r.model_dump(exclude={"flag_key"}, exclude_none=True, mode="json")
        for r in current
        if r.id not in CONSOLE_RULES
    ]
    try:
        rules = [RuleInput.model_validate(r) for r in kept + _console_rules(form)]
        update = FlagUpdate(
            name=form.get("name", ""),
            description=form.get("description", ""),
            default_value=form.get("default_value") == "on",
        )
    except ValueError as exc:
        raise ServiceError(422, "validation_error", str(exc).splitlines()[0]) from None
    await flags.replace_rules(who, env, key, rules)
    await flags.update_flag(who, env, key, update)
