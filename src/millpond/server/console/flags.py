"""The flags pages (flypper's UI): environments, flags, the rule editor, the audit log."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ..accounts.service import Principal
from ..errors import ServiceError
from ..flags.schemas import FlagCreate, FlagUpdate, RuleInput
from ..flags.service import FlagService, Page
from .pages import form_session, redirect, session_of, to_login

router = APIRouter(include_in_schema=False)

CONSOLE_RULES = ("console-actors", "console-rollout", "console-trait")


def _flags_url(env: str, tab: str = "active") -> str:
    return "/console/flags?" + urlencode({"env": env, "tab": tab})


def _flag_url(env: str, key: str) -> str:
    return f"/console/flags/{quote(key, safe='')}?" + urlencode({"env": env})


@router.get("/flags", response_class=HTMLResponse)
async def flags_page(
    request: Request, env: str | None = None, tab: str = "active", q: str = ""
) -> Response:
    session = await session_of(request)
    if session is None:
        return to_login(request)
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
        return session.render(
            "flags.html", exc.status, section="flags", title="Flags", envs=[], flash=exc.message
        )
    return session.render(
        "flags.html",
        section="flags",
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
    session, form = await form_session(request)
    if session is None:
        return to_login(request)
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
            return redirect(_flag_url(env, made.key))
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
            return redirect(_flag_url(env, key))
    except ServiceError as exc:
        envs, current = await session.env(env)
        return session.render(
            "flags.html",
            exc.status,
            section="flags",
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
    return redirect(_flags_url(env, tab))


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
    session = await session_of(request)
    if session is None:
        return to_login(request)
    try:
        _, current = await session.env(env)
        flag = await session.flags.get_flag(session.who, env, key, include_deleted=True)
        rules = [] if flag.deleted_at else await session.flags.list_rules(session.who, env, key)
    except ServiceError as exc:
        return session.render(
            "audit.html",
            exc.status,
            section="audit",
            title="Flag",
            entries=[],
            flash=f"{exc.message} ({exc.code})",
        )
    form = _rules_form(rules)
    others = sum(1 for r in rules if r.id not in CONSOLE_RULES)
    return session.render(
        "flag.html",
        section="flags",
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
    session = await session_of(request)
    if session is None:
        return to_login(request)
    _, current = await session.env(env)
    entries = []
    if current is not None:
        entries = await session.flags.list_audit(
            session.who, current.id, 200, None, None, entity_id
        )
    return session.render(
        "audit.html",
        section="audit",
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
