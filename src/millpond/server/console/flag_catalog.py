"""The flags catalog pages: an environment's features (what plans and company overrides
grant, and flags gate) and plans (what companies subscribe to: their entitlements grant
features). A feature's page lists the flags gating it, the plans granting it and the
companies' overrides of it; a plan's page its entitlements. Every read and change goes
through the flags service as the API's routes call it (``flags/router.py``); a form that
fails is shown again with what was typed and the problem in plain words (422, or the
service's status), an unknown feature or plan is the not-found page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from millpond.models.flags import CompanyOverride, Entitlement, Feature, Flag, Plan

from ..errors import ServiceError
from ..flags.service import Page
from . import catalog_forms as forms
from . import flag_words as words
from .flag_forms import Form, Problems
from .flag_page import Failed, companies_of, parse_keys, sentence
from .pages import Console, form_session, redirect, session_of, to_login

router = APIRouter(include_in_schema=False)

_ALL = Page(1000)
Action = Callable[[Console, str, Form], Awaitable[tuple[str, str]]]
"""A form's change: (session, environment, form) → the notice and the page to go to."""


def features_url(env: str, feature_id: str = "", anchor: str = "") -> str:
    path = f"/{quote(feature_id, safe='')}" if feature_id else ""
    return f"/console/features{path}?" + urlencode({"env": env}) + anchor


def plans_url(env: str, plan_id: str = "", anchor: str = "") -> str:
    path = f"/{quote(plan_id, safe='')}" if plan_id else ""
    return f"/console/plans{path}?" + urlencode({"env": env}) + anchor


@dataclass
class Catalog:
    """An environment's features, plans, flags and grants, to show who grants what."""

    features: list[Feature] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    entitlements: list[Entitlement] = field(default_factory=list)
    overrides: list[CompanyOverride] = field(default_factory=list)

    def gating(self, feature_id: str) -> list[Flag]:
        return [f for f in self.flags if f.feature_id == feature_id and not f.deleted_at]

    def granting(self, feature_id: str) -> list[Entitlement]:
        return [e for e in self.entitlements if e.feature_id == feature_id]

    def granted(self, plan_id: str) -> list[Entitlement]:
        return [e for e in self.entitlements if e.plan_id == plan_id]

    def overriding(self, feature_id: str) -> list[CompanyOverride]:
        return [o for o in self.overrides if o.feature_id == feature_id]

    @property
    def feature_names(self) -> dict[str, str]:
        return {f.id: f.name or f.id for f in self.features}

    @property
    def plan_names(self) -> dict[str, str]:
        return {p.id: p.name or p.id for p in self.plans}


async def _catalog(session: Console, env: str, feature_id: str | None = None) -> Catalog:
    flags, who = session.flags, session.who
    return Catalog(
        await flags.list_features(who, env, _ALL),
        await flags.list_plans(who, env, _ALL),
        await flags.list_flags(who, env, _ALL),
        await flags.list_entitlements(who, env, _ALL, feature_id=feature_id),
        await flags.list_overrides(who, env, _ALL, feature_id=feature_id),
    )


async def _render(
    session: Console,
    env: str | None,
    template: str,
    title: str,
    load: Callable[[str], Awaitable[dict[str, Any]]],
    status: int = 200,
    failed: Failed | None = None,
) -> HTMLResponse:
    """A catalog page: ``load`` gives its context (the not-found page when it raises)."""
    current = None
    try:
        envs, current = await session.env(env)
        context = await load(current.id) if current is not None else {}
    except ServiceError as exc:
        return session.error(exc, title, section="flags", env=current)
    return session.render(
        template,
        status,
        section="flags",
        title=context.pop("title", title),
        envs=envs,
        env=current,
        failed=failed,
        words=words,
        forms=forms,
        flash=await session.notice(),
        flash_kind="ok",
        **context,
    )


async def _post(
    request: Request,
    env: str,
    target: str | Callable[[Form], str],
    change: Action,
    show: Callable[[Console, int, Failed], Awaitable[HTMLResponse]],
) -> Response:
    """A catalog form's POST: ``change`` gives the notice and the page to go to; a failure
    shows the form's page again with the problem next to the form (``show``)."""
    session, form = await form_session(request)
    if session is None:
        return to_login(request)
    try:
        text, url = await change(session, env, form)
    except (Problems, ServiceError) as exc:
        named = target if isinstance(target, str) else target(form)
        if isinstance(exc, Problems):
            return await show(session, 422, Failed(named, exc.problems, form))
        return await show(session, exc.status, Failed(named, [sentence(exc.message)], form))
    await session.notify(text)
    return redirect(url)


# -- features ----------------------------------------------------------------------------------


async def render_features(
    session: Console, env: str | None, status: int = 200, failed: Failed | None = None
) -> HTMLResponse:
    async def load(env_id: str) -> dict[str, Any]:
        return {"catalog": await _catalog(session, env_id), "types": forms.FEATURE_TYPES}

    return await _render(session, env, "flag_features.html", "Features", load, status, failed)


async def render_feature(
    session: Console, env: str, feature_id: str, status: int = 200, failed: Failed | None = None
) -> HTMLResponse:
    async def load(env_id: str) -> dict[str, Any]:
        feature = await session.flags.get_feature(session.who, env_id, feature_id)
        catalog = await _catalog(session, env_id, feature.id)
        ids = [o.company_id for o in catalog.overrides]
        return {
            "title": feature.name or feature.id,
            "feature": feature,
            "catalog": catalog,
            "companies": await companies_of(session, env_id, ids),
            "types": forms.FEATURE_TYPES,
        }

    return await _render(session, env, "flag_feature.html", "Feature", load, status, failed)


@router.get("/features", response_class=HTMLResponse)
async def features_page(request: Request, env: str | None = None) -> Response:
    session = await session_of(request)
    if session is None:
        return to_login(request)
    return await render_features(session, env)


@router.get("/features/{feature_id}", response_class=HTMLResponse)
async def feature_page(request: Request, feature_id: str, env: str) -> Response:
    session = await session_of(request)
    if session is None:
        return to_login(request)
    return await render_feature(session, env, feature_id)


@router.post("/features/new")
async def create_feature(request: Request, env: str) -> Response:
    async def show(session: Console, status: int, failed: Failed) -> HTMLResponse:
        return await render_features(session, env, status, failed)

    return await _post(request, env, "feature:new", _create_feature, show)


@router.post("/features/{feature_id}/{action}")
async def feature_action(request: Request, feature_id: str, action: str, env: str) -> Response:
    changes: dict[str, Action] = {
        "save": lambda s, e, f: _save_feature(s, e, feature_id, f),
        "delete": lambda s, e, f: _delete_feature(s, e, feature_id),
        "override": lambda s, e, f: _override(s, e, feature_id, f),
    }
    if action not in changes:
        raise ServiceError(404, "not_found", f"no console action {action!r}")

    async def show(session: Console, status: int, failed: Failed) -> HTMLResponse:
        return await render_feature(session, env, feature_id, status, failed)

    target = "override" if action == "override" else "feature"
    return await _post(request, env, target, changes[action], show)


async def _create_feature(session: Console, env: str, form: Form) -> tuple[str, str]:
    made = await session.flags.create_feature(session.who, env, forms.feature_create(form))
    return f"Created the feature {made.name or made.id}.", features_url(env, made.id)


async def _save_feature(session: Console, env: str, feature_id: str, form: Form) -> tuple[str, str]:
    body = forms.feature_update(form)
    saved = await session.flags.update_feature(session.who, env, feature_id, body)
    return f"Saved the feature {saved.name or saved.id}.", features_url(env, saved.id)


async def _delete_feature(session: Console, env: str, feature_id: str) -> tuple[str, str]:
    await session.flags.delete_feature(session.who, env, feature_id)
    return f"Deleted the feature {feature_id}.", features_url(env)


async def _override(session: Console, env: str, feature_id: str, form: Form) -> tuple[str, str]:
    """Make a company's override of the feature, or remove one (``do=delete``)."""
    flags, who = session.flags, session.who
    back = features_url(env, feature_id, "#overrides")
    if form.get("do") == "delete":
        override_id = form.get("override_id", "")
        if (await flags.get_override(who, env, override_id)).feature_id != feature_id:
            raise ServiceError(404, "override_not_found", "no such override of this feature")
        await flags.delete_override(who, env, override_id)
        return "Removed the company's override.", back
    body = forms.override_create(form, feature_id, parse_keys(form.get("company", "")))
    made = await flags.create_override(who, env, body)
    return f"Made the override: the company gets {words.grant_text(made)}.", back


# -- plans -------------------------------------------------------------------------------------


async def render_plans(
    session: Console, env: str | None, status: int = 200, failed: Failed | None = None
) -> HTMLResponse:
    async def load(env_id: str) -> dict[str, Any]:
        return {"catalog": await _catalog(session, env_id)}

    return await _render(session, env, "flag_plans_list.html", "Plans", load, status, failed)


async def render_plan(
    session: Console, env: str, plan_id: str, status: int = 200, failed: Failed | None = None
) -> HTMLResponse:
    async def load(env_id: str) -> dict[str, Any]:
        plan = await session.flags.get_plan(session.who, env_id, plan_id)
        catalog = await _catalog(session, env_id)
        return {"title": plan.name or plan.id, "plan": plan, "catalog": catalog}

    return await _render(session, env, "flag_plan.html", "Plan", load, status, failed)


@router.get("/plans", response_class=HTMLResponse)
async def plans_page(request: Request, env: str | None = None) -> Response:
    session = await session_of(request)
    if session is None:
        return to_login(request)
    return await render_plans(session, env)


@router.get("/plans/{plan_id}", response_class=HTMLResponse)
async def plan_page(request: Request, plan_id: str, env: str) -> Response:
    session = await session_of(request)
    if session is None:
        return to_login(request)
    return await render_plan(session, env, plan_id)


@router.post("/plans/new")
async def create_plan(request: Request, env: str) -> Response:
    async def show(session: Console, status: int, failed: Failed) -> HTMLResponse:
        return await render_plans(session, env, status, failed)

    return await _post(request, env, "plan:new", _create_plan, show)


@router.post("/plans/{plan_id}/{action}")
async def plan_action(request: Request, plan_id: str, action: str, env: str) -> Response:
    changes: dict[str, Action] = {
        "save": lambda s, e, f: _save_plan(s, e, plan_id, f),
        "delete": lambda s, e, f: _delete_plan(s, e, plan_id),
        "grant": lambda s, e, f: _grant(s, e, plan_id, f),
    }
    if action not in changes:
        raise ServiceError(404, "not_found", f"no console action {action!r}")

    async def show(session: Console, status: int, failed: Failed) -> HTMLResponse:
        return await render_plan(session, env, plan_id, status, failed)

    def target(form: Form) -> str:
        return f"grant:{form.get('entitlement_id', '')}" if action == "grant" else "plan"

    return await _post(request, env, target, changes[action], show)


async def _create_plan(session: Console, env: str, form: Form) -> tuple[str, str]:
    made = await session.flags.create_plan(session.who, env, forms.plan_create(form))
    return f"Created the plan {made.name or made.id}.", plans_url(env, made.id)


async def _save_plan(session: Console, env: str, plan_id: str, form: Form) -> tuple[str, str]:
    saved = await session.flags.update_plan(session.who, env, plan_id, forms.plan_update(form))
    return f"Saved the plan {saved.name or saved.id}.", plans_url(env, saved.id)


async def _delete_plan(session: Console, env: str, plan_id: str) -> tuple[str, str]:
    await session.flags.delete_plan(session.who, env, plan_id)
    return f"Deleted the plan {plan_id}.", plans_url(env)


async def _grant(session: Console, env: str, plan_id: str, form: Form) -> tuple[str, str]:
    """Give the plan a feature, change what it grants, or take it away (``do=delete``)."""
    flags, who = session.flags, session.who
    grant_id, back = form.get("entitlement_id", ""), plans_url(env, plan_id, "#entitlements")
    if grant_id and (await flags.get_entitlement(who, env, grant_id)).plan_id != plan_id:
        raise ServiceError(404, "entitlement_not_found", "this plan has no such entitlement")
    if form.get("do") == "delete":
        await flags.delete_entitlement(who, env, grant_id)
        return "Took the feature away from the plan.", back
    if grant_id:
        saved = await flags.update_entitlement(who, env, grant_id, forms.grant_update(form))
        return f"The plan now grants {words.grant_text(saved)}.", back
    body = forms.entitlement_create(form, plan_id, form.get("feature_id", ""))
    made = await flags.create_entitlement(who, env, body)
    return f"The plan now grants {words.grant_text(made)}.", back
