"""``/console``: the flags web console (flypper's UI), server-rendered, calling the flags
service as the API does (DESIGN principle 2).

Login is with an API key: the key itself is kept in an ``HttpOnly``, ``SameSite=Strict``
cookie (``Secure`` over https) scoped to ``/console`` and checked on every request, so a
revoked or expired key ends its session at once, and a key bound to an environment sees
that environment only. Every form carries a CSRF token derived from the key (an attacker
without the cookie cannot compute it); a POST without it is refused and changes nothing.
Read-only keys see the pages without the buttons, and the service refuses their POSTs.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..accounts.service import Principal, authenticate
from ..deps import Services, services
from ..errors import ServiceError
from ..flags.access import Env
from ..flags.schemas import FlagCreate, FlagUpdate, RuleInput
from ..flags.service import FlagService, Page

router = APIRouter(prefix="/console", include_in_schema=False)

COOKIE = "millpond_console"
_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)
CONSOLE_RULES = ("console-actors", "console-rollout", "console-trait")


def csrf_token(secret: str) -> str:
    return hashlib.sha256(b"millpond-console-csrf:" + secret.encode()).hexdigest()[:32]


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _templates.get_template(name).render(request=request, **context)
    return HTMLResponse(html, status_code=status)


def _login(flash: str | None = None) -> RedirectResponse:
    return RedirectResponse("/console/login" + ("?expired=1" if flash else ""), status_code=303)


class Session:
    """The logged-in caller of one request."""

    def __init__(self, request: Request, svc: Services, who: Principal, secret: str) -> None:
        self.request = request
        self.who = who
        self.csrf = csrf_token(secret)
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

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        env = context.get("env")
        return _page(
            self.request,
            name,
            status,
            who=self.who,
            csrf=self.csrf,
            can_write=self.who.scope == "write",
            env_query=f"?env={env.id}" if env is not None else "",
            **context,
        )


async def _session(request: Request) -> Session | None:
    secret = request.cookies.get(COOKIE, "")
    svc = services(request)
    who = await authenticate(svc.store, secret) if secret else None
    return Session(request, svc, who, secret) if who is not None else None


async def _form_session(request: Request) -> tuple[Session | None, dict[str, str]]:
    """The session of a form POST whose CSRF token matches, and its fields."""
    session = await _session(request)
    form = {k: str(v) for k, v in (await request.form()).items()}
    if session is not None and not hmac.compare_digest(form.get("csrf", ""), session.csrf):
        raise ServiceError(403, "csrf_failed", "the form's token is missing or wrong: reload")
    return session, form


# -- login ---------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def home() -> Response:
    return RedirectResponse("/console/flags", status_code=303)


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, expired: int = 0) -> Response:
    flash = "Your session ended: log in again." if expired else None
    return _page(request, "login.html", title="Log in", flash=flash)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    secret = str((await request.form()).get("api_key", "")).strip()
    who = await authenticate(services(request).store, secret) if secret else None
    if who is None:
        flash = "Unknown, revoked or expired API key."
        return _page(request, "login.html", 401, title="Log in", flash=flash)
    response = RedirectResponse("/console/flags", status_code=303)
    response.set_cookie(
        COOKIE,
        secret,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await _form_session(request)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


# -- flags -----------------------------------------------------------------------------------


@router.get("/flags", response_class=HTMLResponse)
async def flags_page(
    request: Request, env: str | None = None, tab: str = "active", q: str = "", flash: str = ""
) -> Response:
    session = await _session(request)
    if session is None:
        return _login("expired" if request.cookies.get(COOKIE) else None)
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
        flash=flash or None,
        flash_kind="ok",
    )


def _back(env: str, tab: str = "active", flash: str = "") -> RedirectResponse:
    query = f"?env={env}&tab={tab}" + (f"&flash={flash}" if flash else "")
    return RedirectResponse("/console/flags" + query, status_code=303)


async def _act(request: Request, env: str, action: str, key: str) -> Response:
    session, form = await _form_session(request)
    if session is None:
        return _login("expired")
    flags, who = session.flags, session.who
    try:
        if action == "new":
            body = FlagCreate(
                key=form.get("key", ""),
                name=form.get("name", ""),
                default_value=form.get("default_value") == "on",
            )
            made = await flags.create_flag(who, env, body)
            return RedirectResponse(f"/console/flags/{made.key}?env={env}", status_code=303)
        if action == "toggle":
            flag = await flags.get_flag(who, env, key)
            await flags.update_flag(who, env, key, FlagUpdate(default_value=not flag.default_value))
        elif action == "delete":
            await flags.delete_flag(who, env, key)
        elif action == "restore":
            await flags.restore_flag(who, env, key)
            return _back(env, "deleted", f"restored {key}")
        elif action == "purge":
            await flags.purge_flag(who, env, key)
            return _back(env, "deleted", f"deleted {key} for good")
        elif action == "save":
            await _save(flags, who, env, key, form)
            return RedirectResponse(f"/console/flags/{key}?env={env}&saved=1", status_code=303)
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
    return _back(env, "active", f"{action}d {key}".replace("toggled", "toggled"))


@router.post("/flags/new")
async def create_flag(request: Request, env: str) -> Response:
    return await _act(request, env, "new", "")


@router.post("/flags/{key}/{action}")
async def flag_action(request: Request, key: str, action: str, env: str) -> Response:
    if action not in ("toggle", "delete", "restore", "purge", "save"):
        raise ServiceError(404, "not_found", f"no console action {action!r}")
    return await _act(request, env, action, key)


@router.get("/flags/{key}", response_class=HTMLResponse)
async def flag_page(request: Request, key: str, env: str, saved: int = 0) -> Response:
    session = await _session(request)
    if session is None:
        return _login("expired")
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
    flash = "Saved." if saved else None
    return session.render(
        "flag.html",
        title=key,
        env=current,
        flag=flag,
        form=form,
        other_rules=others,
        flash=flash,
        flash_kind="ok",
    )


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request, env: str | None = None, entity_id: str | None = None
) -> Response:
    session = await _session(request)
    if session is None:
        return _login("expired")
    _, current = await session.env(env)
    entries = []
    if current is not None:
        entries = await session.flags.list_audit(
            session.who, current.id, 200, None, None, entity_id
        )
    return session.render("audit.html", title="Audit log", env=current, entries=entries)


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
