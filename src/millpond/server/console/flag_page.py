"""One flag's page: its state, settings, every rule (read as sentences, edited through
forms or as JSON), the plans that grant its feature, and an Evaluate panel. Every read
and change goes through the flags service as the API's routes call it
(``flags/router.py``); a form that fails is shown again with what was typed and the
problem in plain words (422, or the service's status)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from millpond.models.flags import (
    CheckFlagRequest,
    Company,
    CompanyOverride,
    Entitlement,
    FlagCheck,
    MetricValue,
    Rule,
    User,
)

from ..errors import ServiceError
from ..flags import entities
from ..flags.schemas import EntitlementCreate, FlagUpdate, GrantUpdate
from ..flags.service import Page
from . import catalog_forms
from . import flag_words as words
from .flag_forms import (
    KIND_CHOICES,
    RULE_TYPE_CHOICES,
    Form,
    Problems,
    RuleDraft,
    add_to,
    draft_from_form,
    plain,
    rule_draft,
    rule_from_json,
    rule_input,
    rule_json,
)
from .pages import Console, form_session, redirect, session_of, to_login

router = APIRouter(include_in_schema=False)

_ALL = Page(1000)
NEW_RULE_JSON = """{
  "name": "Beta testers",
  "value": true,
  "conditions": [
    {"condition_type": "actor_list", "actor_entity": "user",
     "actors": [{"email": "ada@example.com"}]}
  ]
}"""


def flag_url(env: str, key: str, anchor: str = "") -> str:
    return f"/console/flags/{quote(key, safe='')}?" + urlencode({"env": env}) + anchor


@dataclass
class Failed:
    """A form that did not go through: which one (``target``), why, and what was typed."""

    target: str
    problems: list[str]
    form: Form = field(default_factory=dict)
    notice: bool = False
    """Not a failure: the form is shown again to be completed (e.g. a condition added)."""


@dataclass
class Evaluation:
    company: str = ""
    user: str = ""
    result: FlagCheck | None = None
    rule: Rule | None = None
    grant: Entitlement | CompanyOverride | None = None
    found_company: Company | None = None
    found_user: User | None = None
    metrics: list[MetricValue] = field(default_factory=list)


@dataclass
class Grants:
    """The flag's feature's plans: entitlements, company overrides, every plan."""

    feature: Any = None
    entitlements: list[Entitlement] = field(default_factory=list)
    overrides: list[CompanyOverride] = field(default_factory=list)
    plans: list[Any] = field(default_factory=list)
    companies: dict[str, Company] = field(default_factory=dict)
    """The overrides' companies, by id."""

    @property
    def by_plan(self) -> dict[str, Entitlement]:
        return {e.plan_id: e for e in self.entitlements}


# -- the page ----------------------------------------------------------------------------------


async def _grants(session: Console, env: str, feature_id: str | None) -> Grants:
    if feature_id is None:
        return Grants()
    flags, who = session.flags, session.who
    overrides = await flags.list_overrides(who, env, _ALL, feature_id=feature_id)
    return Grants(
        await flags.get_feature(who, env, feature_id),
        await flags.list_entitlements(who, env, _ALL, feature_id=feature_id),
        overrides,
        await flags.list_plans(who, env, _ALL),
        await companies_of(session, env, [o.company_id for o in overrides]),
    )


async def companies_of(session: Console, env: str, ids: list[str]) -> dict[str, Company]:
    """The companies of ``ids`` that are still there, by id."""
    found = {}
    for company_id in dict.fromkeys(ids):
        try:
            found[company_id] = await session.flags.get_entity(
                entities.COMPANY, session.who, env, company_id
            )
        except ServiceError:
            continue
    return found


def _drafts(
    rules: list[Rule], failed: Failed | None
) -> tuple[dict[str, RuleDraft], dict[str, str]]:
    drafts = {rule.id or "": rule_draft(rule) for rule in rules}
    drafts[""] = RuleDraft()
    texts = {rule.id or "": rule_json(rule) for rule in rules}
    texts[""] = NEW_RULE_JSON
    if failed is not None and failed.target.startswith("rule:"):
        drafts[failed.target[5:]] = renumbered(draft_from_form(failed.form))
    if failed is not None and failed.target.startswith("json:"):
        texts[failed.target[5:]] = failed.form.get("json", "")
    return drafts, texts


def renumbered(draft: RuleDraft) -> RuleDraft:
    """The draft's fields named by position again (after conditions were added)."""
    for i, c in enumerate(draft.conditions):
        c.prefix = f"c{i}."
    for j, g in enumerate(draft.groups):
        g.prefix = f"g{j}."
        for i, c in enumerate(g.conditions):
            c.prefix = f"g{j}.c{i}."
    return draft


async def render_flag(
    session: Console,
    env: str,
    key: str,
    status: int = 200,
    *,
    failed: Failed | None = None,
    drafts: dict[str, RuleDraft] | None = None,
    evaluation: Evaluation | None = None,
) -> HTMLResponse:
    """The flag page (the not-found page when the flag or environment is not there)."""
    flags, who = session.flags, session.who
    current = None
    try:
        _, current = await session.env(env)
        flag = await flags.get_flag(who, env, key, include_deleted=True)
        rules = [] if flag.deleted_at else await flags.list_rules(who, env, key)
        features = await flags.list_features(who, env, _ALL)
        grants = await _grants(session, env, flag.feature_id)
    except ServiceError as exc:
        return session.error(exc, "Flag", section="flags", env=current)
    shown, texts = _drafts(rules, failed)
    shown.update(drafts or {})
    return session.render(
        "flag.html",
        status,
        section="flags",
        title=key,
        env=current,
        flag=flag,
        rules=words.ordered(rules),
        state=words.flag_state(flag, rules),
        default=words.default_value(flag, rules),
        features=features,
        grants=grants,
        drafts=shown,
        texts=texts,
        failed=failed,
        evaluation=evaluation or Evaluation(),
        words=words,
        company_label=catalog_forms.company_label,
        kinds=KIND_CHOICES,
        rule_types=RULE_TYPE_CHOICES,
        flash=await session.notice(),
        flash_kind="ok",
    )


@router.get("/flags/{key}", response_class=HTMLResponse)
async def flag_page(
    request: Request, key: str, env: str, company: str = "", user: str = "", check: str = ""
) -> Response:
    session = await session_of(request)
    if session is None:
        return to_login(request)
    if not check:
        return await render_flag(session, env, key)
    evaluation = Evaluation(company, user)
    try:
        await _evaluate(session, env, key, evaluation)
    except Problems as exc:
        failed = Failed("evaluate", exc.problems, {"company": company, "user": user})
        return await render_flag(session, env, key, 422, failed=failed, evaluation=evaluation)
    except ServiceError as exc:
        if exc.status == 404:
            return await render_flag(session, env, key)  # the page says what is missing
        failed = Failed("evaluate", [sentence(exc.message)])
        return await render_flag(session, env, key, exc.status, failed=failed)
    return await render_flag(session, env, key, evaluation=evaluation)


# -- Evaluate ----------------------------------------------------------------------------------


def parse_keys(text: str) -> dict[str, str] | None:
    """Keys typed as ``name=value, name=value`` (a bare value is the ``id``)."""
    keys = {}
    for pair in (p.strip() for p in text.split(",")):
        if pair:
            name, sep, value = pair.partition("=")
            keys[name.strip() if sep else "id"] = value.strip() if sep else name
    return keys or None


async def _evaluate(session: Console, env: str, key: str, into: Evaluation) -> None:
    try:
        body = CheckFlagRequest.model_validate(
            {"company": parse_keys(into.company), "user": parse_keys(into.user)}
        )
    except ValidationError as exc:
        raise Problems([plain(e) for e in exc.errors()]) from None
    flags, who = session.flags, session.who
    result = await flags.check(who, env, key, body)  # as POST …/flags/{key}/check does
    into.result = result
    if result.company_id is not None:
        into.found_company = await flags.get_entity(entities.COMPANY, who, env, result.company_id)
        into.metrics = await flags.entity_metrics(entities.COMPANY, who, env, result.company_id)
    if result.user_id is not None:
        into.found_user = await flags.get_entity(entities.USER, who, env, result.user_id)
    if result.rule_id is not None and result.reason in ("GLOBAL_OVERRIDE", "RULE_MATCH", "DEFAULT"):
        rules = await flags.list_rules(who, env, key)
        into.rule = next((r for r in rules if r.id == result.rule_id), None)
    elif result.rule_id is not None and result.company_id is not None:
        into.grant = await _grant(session, env, result.rule_id)


async def _grant(session: Console, env: str, grant_id: str) -> Entitlement | CompanyOverride | None:
    flags, who = session.flags, session.who
    try:
        if grant_id.startswith("ovr"):
            return await flags.get_override(who, env, grant_id)
        return await flags.get_entitlement(who, env, grant_id)
    except ServiceError:
        return None  # a rule of an entitlement type decided: it is listed on the page


# -- forms -------------------------------------------------------------------------------------


def sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


async def _failed(
    session: Console, env: str, key: str, failed: Failed, status: int = 422
) -> HTMLResponse:
    return await render_flag(session, env, key, status, failed=failed)


@router.post("/flags/{key}/save")
async def save_settings(request: Request, key: str, env: str) -> Response:
    session, form = await form_session(request)
    if session is None:
        return to_login(request)
    try:
        update = FlagUpdate(
            name=form.get("name", ""),
            description=form.get("description", ""),
            feature_id=form.get("feature_id") or None,
        )
        await session.flags.update_flag(session.who, env, key, update)
    except ValidationError as exc:
        return await _failed(
            session, env, key, Failed("settings", [plain(e) for e in exc.errors()], form)
        )
    except ServiceError as exc:
        problem = Failed("settings", [sentence(exc.message)], form)
        return await _failed(session, env, key, problem, exc.status)
    await session.notify("Saved.")
    return redirect(flag_url(env, key))


async def _save_rule(session: Console, env: str, key: str, form: Form) -> str:
    """Save (or add) the rule of ``form``; the saved rule's id."""
    flags, who = session.flags, session.who
    rule_id = form.get("rule_id", "")
    body = rule_input(draft_from_form(form))
    if rule_id:
        saved = await flags.replace_rule(who, env, key, rule_id, body)  # PUT …/rules/{id}
    else:
        saved = await flags.add_rule(who, env, key, body)  # POST …/rules
    return saved.id or ""


@router.post("/flags/{key}/rule")
async def rule_form(request: Request, key: str, env: str) -> Response:
    session, form = await form_session(request)
    if session is None:
        return to_login(request)
    rule_id, do = form.get("rule_id", ""), form.get("do", "save")
    target = f"rule:{rule_id}"
    if do == "add":
        draft = draft_from_form(form)
        notice = add_to(draft, form.get("add_where", "condition"), form.get("add_kind", ""))
        failed = Failed(target, [notice], form, notice=True)
        return await render_flag(
            session, env, key, failed=failed, drafts={rule_id: renumbered(draft)}
        )
    try:
        if do == "delete":
            await session.flags.delete_rule(session.who, env, key, rule_id)  # DELETE …/{id}
            await session.notify(f"Removed rule {rule_id}.")
            return redirect(flag_url(env, key, "#rules"))
        saved = await _save_rule(session, env, key, form)
    except Problems as exc:
        return await _failed(session, env, key, Failed(target, exc.problems, form))
    except ServiceError as exc:
        problem = Failed(target, [sentence(exc.message)], form)
        return await _failed(session, env, key, problem, exc.status)
    await session.notify(f"Saved rule {saved}.")
    return redirect(flag_url(env, key, f"#rule-{saved}"))


@router.post("/flags/{key}/rule-json")
async def rule_json_form(request: Request, key: str, env: str) -> Response:
    session, form = await form_session(request)
    if session is None:
        return to_login(request)
    rule_id = form.get("rule_id", "")
    flags, who = session.flags, session.who
    try:
        body = rule_from_json(form.get("json", ""))
        if rule_id:
            saved = await flags.replace_rule(who, env, key, rule_id, body)
        else:
            saved = await flags.add_rule(who, env, key, body)
    except Problems as exc:
        return await _failed(session, env, key, Failed(f"json:{rule_id}", exc.problems, form))
    except ServiceError as exc:
        problem = Failed(f"json:{rule_id}", [sentence(exc.message)], form)
        return await _failed(session, env, key, problem, exc.status)
    await session.notify(f"Saved rule {saved.id}.")
    return redirect(flag_url(env, key, f"#rule-{saved.id}"))


# -- plans: entitlements to the flag's feature, company overrides ------------------------------


async def _save_grant(session: Console, env: str, feature_id: str, form: Form) -> None:
    flags, who = session.flags, session.who
    grant_id, do = form.get("entitlement_id", ""), form.get("do", "save")
    if do == "delete-override":
        await flags.delete_override(who, env, form.get("override_id", ""))
    elif do == "override":
        keys = parse_keys(form.get("company", ""))
        await flags.create_override(who, env, catalog_forms.override_create(form, feature_id, keys))
    elif do == "delete":
        await flags.delete_entitlement(who, env, grant_id)
    elif grant_id:
        await flags.update_entitlement(
            who, env, grant_id, GrantUpdate(**catalog_forms.grant_fields(form))
        )
    else:
        body = EntitlementCreate(
            plan_id=form.get("plan_id", ""),
            feature_id=feature_id,
            **catalog_forms.grant_fields(form),
        )
        await flags.create_entitlement(who, env, body)


@router.post("/flags/{key}/grant")
async def grant_form(request: Request, key: str, env: str) -> Response:
    session, form = await form_session(request)
    if session is None:
        return to_login(request)
    target = f"grant:{form.get('entitlement_id', '')}"
    if form.get("do") == "override":
        target = "override"
    try:
        flag = await session.flags.get_flag(session.who, env, key)
        if flag.feature_id is None:
            raise ServiceError(422, "no_feature", "this flag gates no feature: pick one first")
        await _save_grant(session, env, flag.feature_id, form)
    except ValidationError as exc:
        problems = [plain(e) for e in exc.errors()]
        return await _failed(session, env, key, Failed(target, problems, form))
    except Problems as exc:
        return await _failed(session, env, key, Failed(target, exc.problems, form))
    except ServiceError as exc:
        problem = Failed(target, [sentence(exc.message)], form)
        return await _failed(session, env, key, problem, exc.status)
    await session.notify("Made the override." if target == "override" else "Saved the plans.")
    return redirect(flag_url(env, key, "#plans"))
