"""The flags pages (flypper's UI): environments, the flags with what each answers, the
for-everyone switch, a flag's page (``flag_page.py``), the audit log as diffs.

"On for everyone" / "Off for everyone" is a ``global_override`` rule (id ``everyone``),
which decides before every other rule, plan and company override; it replaces any other
global override rule, and "Follow the rules" removes it, so the other rules (kept as
they are) decide again."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from millpond.models.flags import AuditEntry, Rule

from ..accounts.service import Principal
from ..errors import ServiceError
from ..flags.schemas import FlagCreate, FlagUpdate, RuleInput
from ..flags.service import FlagService, Page
from . import flag_catalog, flag_page
from . import flag_words as words
from .flag_forms import plain
from .pages import Console, form_session, redirect, session_of, to_login

router = APIRouter(include_in_schema=False)
router.include_router(flag_catalog.router)  # /features, /plans
router.include_router(flag_page.router)  # before /flags/{key}/{action}

SWITCH_ID = "everyone"
_ACTIONS = ("toggle", "everyone", "delete", "restore", "purge")


def _flags_url(env: str, tab: str = "active") -> str:
    return "/console/flags?" + urlencode({"env": env, "tab": tab})


async def _list(session: Console, env: str, tab: str, q: str) -> list[tuple[object, words.State]]:
    """The tab's flags matching ``q``, each with its state."""
    flags, who = session.flags, session.who
    every = await flags.list_flags(who, env, Page(1000), include_deleted=True)
    rules: dict[str, list[Rule]] = {}
    if tab == "active":
        rules = {r.flag.key: r.rules for r in await flags.list_rulesets(who, env)}
    needle = q.lower()
    return [
        (f, words.flag_state(f, rules.get(f.key, [])))
        for f in every
        if (f.deleted_at is not None) == (tab == "deleted")
        and (needle in f.key.lower() or needle in f.name.lower())
    ]


async def _render_list(
    session: Console,
    env: str | None,
    tab: str,
    q: str,
    status: int = 200,
    problem: str = "",
    typed: dict[str, str] | None = None,
) -> HTMLResponse:
    try:
        envs, current = await session.env(env)
        flags = await _list(session, current.id, tab, q) if current is not None else []
    except ServiceError as exc:
        return session.error(exc, "Flags", section="flags")
    return session.render(
        "flags.html",
        status,
        section="flags",
        title="Flags",
        envs=envs,
        env=current,
        flags=flags,
        tab=tab,
        q=q,
        typed=typed or {},
        flash=problem or await session.notice(),
        flash_kind="error" if problem else "ok",
    )


@router.get("/flags", response_class=HTMLResponse)
async def flags_page(
    request: Request, env: str | None = None, tab: str = "active", q: str = ""
) -> Response:
    session = await session_of(request)
    if session is None:
        return to_login(request)
    return await _render_list(session, env, "deleted" if tab == "deleted" else "active", q)


# -- list actions ------------------------------------------------------------------------------


def as_input(rule: Rule) -> RuleInput:
    return RuleInput.model_validate(rule.model_dump(mode="json", exclude={"flag_key"}))


async def switch(flags: FlagService, who: Principal, env: str, key: str, to: str) -> str:
    """Set the for-everyone switch (``to`` on or off) or remove it (rules): one
    replacement of the flag's rules, as ``PUT …/flags/{key}/rules`` does. The notice."""
    rules = await flags.list_rules(who, env, key)
    kept = [as_input(r) for r in rules if r.rule_type != "global_override"]
    if to not in ("on", "off"):
        await flags.replace_rules(who, env, key, kept)
        return f"{key} follows its rules again."
    free = SWITCH_ID not in {r.id for r in kept}
    everyone = RuleInput(
        id=SWITCH_ID if free else None,
        name="For everyone",
        rule_type="global_override",
        value=to == "on",
    )
    await flags.replace_rules(who, env, key, [everyone, *kept])
    return f"{key} is {to} for everyone."


async def _do(session: Console, env: str, action: str, key: str, to: str) -> str:
    flags, who = session.flags, session.who
    if action == "toggle":
        flag = await flags.get_flag(who, env, key)
        update = FlagUpdate(default_value=not flag.default_value)
        done = await flags.update_flag(who, env, key, update)
        return f"Toggled {key}. When no rule matches it is {words.on_off(done.default_value)}."
    if action == "everyone":
        return await switch(flags, who, env, key, to)
    if action == "delete":
        await flags.delete_flag(who, env, key)
        return f"Deleted {key}."
    if action == "restore":
        await flags.restore_flag(who, env, key)
        return f"Restored {key}."
    await flags.purge_flag(who, env, key)
    return f"Deleted {key} for good."


async def _act(request: Request, env: str, action: str, key: str) -> Response:
    session, form = await form_session(request)
    if session is None:
        return to_login(request)
    back = form.get("back") == "flag"
    try:
        if action == "new":
            return await _create(session, env, form)
        text = await _do(session, env, action, key, form.get("to", ""))
    except ServiceError as exc:
        if back:
            failed = flag_page.Failed("switch", [flag_page.sentence(exc.message)])
            return await flag_page.render_flag(session, env, key, exc.status, failed=failed)
        problem = flag_page.sentence(exc.message)
        typed = form if action == "new" else None
        return await _render_list(session, env, "active", "", exc.status, problem, typed)
    await session.notify(text)
    if back:
        return redirect(flag_page.flag_url(env, key))
    return redirect(_flags_url(env, "deleted" if action in ("restore", "purge") else "active"))


async def _create(session: Console, env: str, form: dict[str, str]) -> Response:
    try:
        body = FlagCreate(
            key=form.get("key", ""),
            name=form.get("name", ""),
            default_value=form.get("default_value") == "on",
        )
    except ValueError as exc:
        raise ServiceError(422, "validation_error", _first_error(exc)) from None
    made = await session.flags.create_flag(session.who, env, body)
    await session.notify(f"Created {made.key}.")
    return redirect(flag_page.flag_url(env, made.key))


def _first_error(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        return plain(exc.errors()[0])
    return str(exc)


@router.post("/flags/new")
async def create_flag(request: Request, env: str) -> Response:
    return await _act(request, env, "new", "")


@router.post("/flags/{key}/{action}")
async def flag_action(request: Request, key: str, action: str, env: str) -> Response:
    if action not in _ACTIONS:
        raise ServiceError(404, "not_found", f"no console action {action!r}")
    return await _act(request, env, action, key)


# -- the audit log -----------------------------------------------------------------------------


def _about(entry: AuditEntry, flag_id: str, key: str) -> bool:
    """Whether the entry is a change of the flag or of one of its rules."""
    if entry.entity_id == flag_id:
        return True
    bodies = [b for b in (entry.before, entry.after) if isinstance(b, dict)]
    return entry.entity == "rule" and any(b.get("flag_key") == key for b in bodies)


async def _entries(session: Console, env: str, flag: str | None) -> list[AuditEntry]:
    found = await session.flags.list_audit(session.who, env, 200)
    if not flag:
        return found
    kept = await session.flags.get_flag(session.who, env, flag, include_deleted=True)
    return [e for e in found if _about(e, kept.id or "", flag)]


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request, env: str | None = None, flag: str | None = None) -> Response:
    session = await session_of(request)
    if session is None:
        return to_login(request)
    try:
        _, current = await session.env(env)
        entries = await _entries(session, current.id, flag) if current is not None else []
    except ServiceError as exc:
        return session.error(exc, "Audit log", section="audit")
    return session.render(
        "audit.html",
        section="audit",
        title="Audit log",
        env=current,
        flag=flag,
        entries=[(e, words.audit_subject(e), words.changes(e.before, e.after)) for e in entries],
        actions=words.ACTIONS,
        flash=await session.notice(),
        flash_kind="ok",
    )
