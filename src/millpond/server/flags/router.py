"""Routes for /v1/flags/… (thin: see service.py). ``{env}`` is an environment id or the
name of one of the caller's account's environments."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response

from ...models import ApiKey, ApiKeyCreate, ApiKeyCreated
from ...models.databases import MAX_BIGINT
from ...models.flags import (
    CheckFlagRequest,
    Company,
    CompanyOverride,
    Entitlement,
    EventBatch,
    EventsAccepted,
    Feature,
    Flag,
    FlagCheck,
    FlagChecks,
    FlagRuleset,
    MetricValue,
    Plan,
    Rule,
    User,
)
from ..deps import Caller, Svc
from ..errors import ServiceError, invalid
from . import entities
from .schemas import (
    AuditEntry,
    CheckRecord,
    CompanyUpsert,
    EntitlementCreate,
    EntityLookup,
    EnvironmentCreate,
    EnvironmentUpdate,
    EventRecord,
    FeatureCreate,
    FeatureUpdate,
    FlagCreate,
    FlagEnvironment,
    FlagUpdate,
    GrantUpdate,
    OverrideCreate,
    PlanCreate,
    PlanUpdate,
    RuleInput,
    RulesReplace,
    UserUpsert,
)
from .service import FlagService, Page

router = APIRouter(prefix="/v1/flags", tags=["flags"])
E = "/environments/{env}"


async def _flags(svc: Svc) -> FlagService:
    service = svc.flags
    if service is None:  # pragma: no cover - started by the lifespan
        raise ServiceError(503, "unavailable", "flags are not running")
    return service


Flags = Annotated[FlagService, Depends(_flags)]
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many items")]
Before = Annotated[int | None, Query(ge=0, le=MAX_BIGINT, description="Items older than this id")]
SinceVersion = Annotated[int | None, Query(ge=0, le=MAX_BIGINT)]


async def _page(
    limit: Limit = 100,
    after: Annotated[str | None, Query(max_length=255, description="Items after this")] = None,
) -> Page:
    if after is not None and "\x00" in after:
        raise invalid("validation_error", "after: must not contain NUL characters")
    return Page(limit, after)


Paged = Annotated[Page, Depends(_page)]


# -- environments and their keys ---------------------------------------------------------


@router.post("/environments", response_model=FlagEnvironment, status_code=201)
async def create_environment(body: EnvironmentCreate, flags: Flags, who: Caller) -> FlagEnvironment:
    return await flags.create_environment(who, body)


@router.post("/environments/defaults", response_model=list[FlagEnvironment])
async def create_default_environments(flags: Flags, who: Caller) -> list[FlagEnvironment]:
    return await flags.create_default_environments(who)


@router.get("/environments", response_model=list[FlagEnvironment])
async def list_environments(flags: Flags, who: Caller) -> list[FlagEnvironment]:
    return await flags.list_environments(who)


@router.get(E, response_model=FlagEnvironment)
async def get_environment(env: str, flags: Flags, who: Caller) -> FlagEnvironment:
    return await flags.get_environment(who, env)


@router.patch(E, response_model=FlagEnvironment)
async def update_environment(
    env: str, body: EnvironmentUpdate, flags: Flags, who: Caller
) -> FlagEnvironment:
    return await flags.update_environment(who, env, body)


@router.delete(E, status_code=204)
async def delete_environment(env: str, flags: Flags, who: Caller) -> Response:
    await flags.delete_environment(who, env)
    return Response(status_code=204)


@router.post(E + "/keys", response_model=ApiKeyCreated, status_code=201)
async def create_key(env: str, body: ApiKeyCreate, flags: Flags, who: Caller) -> ApiKeyCreated:
    return await flags.create_key(who, env, body)


@router.get(E + "/keys", response_model=list[ApiKey])
async def list_keys(env: str, flags: Flags, who: Caller) -> list[ApiKey]:
    return await flags.list_keys(who, env)


@router.delete(E + "/keys/{key_id}", status_code=204)
async def revoke_key(env: str, key_id: str, flags: Flags, who: Caller) -> Response:
    await flags.revoke_key(who, env, key_id)
    return Response(status_code=204)


# -- features ----------------------------------------------------------------------------


@router.post(E + "/features", response_model=Feature, status_code=201)
async def create_feature(env: str, body: FeatureCreate, flags: Flags, who: Caller) -> Feature:
    return await flags.create_feature(who, env, body)


@router.get(E + "/features", response_model=list[Feature])
async def list_features(env: str, page: Paged, flags: Flags, who: Caller) -> list[Feature]:
    return await flags.list_features(who, env, page)


@router.get(E + "/features/{feature_id}", response_model=Feature)
async def get_feature(env: str, feature_id: str, flags: Flags, who: Caller) -> Feature:
    return await flags.get_feature(who, env, feature_id)


@router.patch(E + "/features/{feature_id}", response_model=Feature)
async def update_feature(
    env: str, feature_id: str, body: FeatureUpdate, flags: Flags, who: Caller
) -> Feature:
    return await flags.update_feature(who, env, feature_id, body)


@router.delete(E + "/features/{feature_id}", status_code=204)
async def delete_feature(env: str, feature_id: str, flags: Flags, who: Caller) -> Response:
    await flags.delete_feature(who, env, feature_id)
    return Response(status_code=204)


# -- flags, rules, rulesets --------------------------------------------------------------


@router.post(E + "/flags", response_model=Flag, status_code=201)
async def create_flag(env: str, body: FlagCreate, flags: Flags, who: Caller) -> Flag:
    return await flags.create_flag(who, env, body)


@router.get(E + "/flags", response_model=list[Flag])
async def list_flags(
    env: str,
    page: Paged,
    flags: Flags,
    who: Caller,
    since_version: SinceVersion = None,
    include_deleted: bool = False,
) -> list[Flag]:
    return await flags.list_flags(who, env, page, since_version, include_deleted)


@router.get(E + "/flags/{key}", response_model=Flag)
async def get_flag(
    env: str, key: str, flags: Flags, who: Caller, include_deleted: bool = False
) -> Flag:
    return await flags.get_flag(who, env, key, include_deleted)


@router.patch(E + "/flags/{key}", response_model=Flag)
async def update_flag(env: str, key: str, body: FlagUpdate, flags: Flags, who: Caller) -> Flag:
    return await flags.update_flag(who, env, key, body)


@router.delete(E + "/flags/{key}", status_code=204)
async def delete_flag(env: str, key: str, flags: Flags, who: Caller) -> Response:
    await flags.delete_flag(who, env, key)
    return Response(status_code=204)


@router.post(E + "/flags/{key}/restore", response_model=Flag)
async def restore_flag(env: str, key: str, flags: Flags, who: Caller) -> Flag:
    return await flags.restore_flag(who, env, key)


@router.post(E + "/flags/{key}/purge", status_code=204)
async def purge_flag(env: str, key: str, flags: Flags, who: Caller) -> Response:
    """Hard delete a soft-deleted flag."""
    await flags.purge_flag(who, env, key)
    return Response(status_code=204)


@router.get(E + "/flags/{key}/ruleset", response_model=FlagRuleset)
async def get_ruleset(env: str, key: str, flags: Flags, who: Caller) -> FlagRuleset:
    return await flags.get_ruleset(who, env, key)


@router.get(E + "/rulesets", response_model=list[FlagRuleset])
async def list_rulesets(
    env: str,
    flags: Flags,
    who: Caller,
    since_version: SinceVersion = None,
) -> list[FlagRuleset]:
    return await flags.list_rulesets(who, env, since_version)


@router.get(E + "/flags/{key}/rules", response_model=list[Rule])
async def list_rules(env: str, key: str, flags: Flags, who: Caller) -> list[Rule]:
    return await flags.list_rules(who, env, key)


@router.put(E + "/flags/{key}/rules", response_model=list[Rule])
async def replace_rules(
    env: str, key: str, body: RulesReplace, flags: Flags, who: Caller
) -> list[Rule]:
    return await flags.replace_rules(who, env, key, body.rules)


@router.post(E + "/flags/{key}/rules", response_model=Rule, status_code=201)
async def add_rule(env: str, key: str, body: RuleInput, flags: Flags, who: Caller) -> Rule:
    return await flags.add_rule(who, env, key, body)


@router.get(E + "/flags/{key}/rules/{rule_id}", response_model=Rule)
async def get_rule(env: str, key: str, rule_id: str, flags: Flags, who: Caller) -> Rule:
    return await flags.get_rule(who, env, key, rule_id)


@router.put(E + "/flags/{key}/rules/{rule_id}", response_model=Rule)
async def replace_rule(
    env: str, key: str, rule_id: str, body: RuleInput, flags: Flags, who: Caller
) -> Rule:
    return await flags.replace_rule(who, env, key, rule_id, body)


@router.delete(E + "/flags/{key}/rules/{rule_id}", status_code=204)
async def delete_rule(env: str, key: str, rule_id: str, flags: Flags, who: Caller) -> Response:
    await flags.delete_rule(who, env, key, rule_id)
    return Response(status_code=204)


# -- checks ------------------------------------------------------------------------------


@router.post(E + "/flags/{key}/check", response_model=FlagCheck)
async def check_flag(
    env: str,
    key: str,
    body: CheckFlagRequest,
    flags: Flags,
    who: Caller,
    record: bool = False,
) -> FlagCheck:
    return await flags.check(who, env, key, body, record)


@router.post(E + "/check", response_model=FlagChecks)
async def check_flags(
    env: str, body: CheckFlagRequest, flags: Flags, who: Caller, record: bool = False
) -> FlagChecks:
    return await flags.check_all(who, env, body, record)


@router.get(E + "/checks", response_model=list[CheckRecord])
async def list_checks(
    env: str,
    flags: Flags,
    who: Caller,
    limit: Limit = 100,
    before: Before = None,
    flag: Annotated[str | None, Query(max_length=255)] = None,
) -> list[CheckRecord]:
    return await flags.list_checks(who, env, limit, before, flag)


# -- plans, entitlements, overrides ------------------------------------------------------


@router.post(E + "/plans", response_model=Plan, status_code=201)
async def create_plan(env: str, body: PlanCreate, flags: Flags, who: Caller) -> Plan:
    return await flags.create_plan(who, env, body)


@router.get(E + "/plans", response_model=list[Plan])
async def list_plans(env: str, page: Paged, flags: Flags, who: Caller) -> list[Plan]:
    return await flags.list_plans(who, env, page)


@router.get(E + "/plans/{plan_id}", response_model=Plan)
async def get_plan(env: str, plan_id: str, flags: Flags, who: Caller) -> Plan:
    return await flags.get_plan(who, env, plan_id)


@router.patch(E + "/plans/{plan_id}", response_model=Plan)
async def update_plan(env: str, plan_id: str, body: PlanUpdate, flags: Flags, who: Caller) -> Plan:
    return await flags.update_plan(who, env, plan_id, body)


@router.delete(E + "/plans/{plan_id}", status_code=204)
async def delete_plan(env: str, plan_id: str, flags: Flags, who: Caller) -> Response:
    await flags.delete_plan(who, env, plan_id)
    return Response(status_code=204)


@router.post(E + "/entitlements", response_model=Entitlement, status_code=201)
async def create_entitlement(
    env: str, body: EntitlementCreate, flags: Flags, who: Caller
) -> Entitlement:
    return await flags.create_entitlement(who, env, body)


@router.get(E + "/entitlements", response_model=list[Entitlement])
async def list_entitlements(
    env: str,
    page: Paged,
    flags: Flags,
    who: Caller,
    plan_id: Annotated[str | None, Query(max_length=255)] = None,
    feature_id: Annotated[str | None, Query(max_length=255)] = None,
) -> list[Entitlement]:
    return await flags.list_entitlements(who, env, page, plan_id, feature_id)


@router.get(E + "/entitlements/{entitlement_id}", response_model=Entitlement)
async def get_entitlement(env: str, entitlement_id: str, flags: Flags, who: Caller) -> Entitlement:
    return await flags.get_entitlement(who, env, entitlement_id)


@router.patch(E + "/entitlements/{entitlement_id}", response_model=Entitlement)
async def update_entitlement(
    env: str, entitlement_id: str, body: GrantUpdate, flags: Flags, who: Caller
) -> Entitlement:
    return await flags.update_entitlement(who, env, entitlement_id, body)


@router.delete(E + "/entitlements/{entitlement_id}", status_code=204)
async def delete_entitlement(env: str, entitlement_id: str, flags: Flags, who: Caller) -> Response:
    await flags.delete_entitlement(who, env, entitlement_id)
    return Response(status_code=204)


@router.post(E + "/overrides", response_model=CompanyOverride, status_code=201)
async def create_override(
    env: str, body: OverrideCreate, flags: Flags, who: Caller
) -> CompanyOverride:
    return await flags.create_override(who, env, body)


@router.get(E + "/overrides", response_model=list[CompanyOverride])
async def list_overrides(
    env: str,
    page: Paged,
    flags: Flags,
    who: Caller,
    company_id: Annotated[str | None, Query(max_length=255)] = None,
    feature_id: Annotated[str | None, Query(max_length=255)] = None,
) -> list[CompanyOverride]:
    return await flags.list_overrides(who, env, page, company_id, feature_id)


@router.get(E + "/overrides/{override_id}", response_model=CompanyOverride)
async def get_override(env: str, override_id: str, flags: Flags, who: Caller) -> CompanyOverride:
    return await flags.get_override(who, env, override_id)


@router.patch(E + "/overrides/{override_id}", response_model=CompanyOverride)
async def update_override(
    env: str, override_id: str, body: GrantUpdate, flags: Flags, who: Caller
) -> CompanyOverride:
    return await flags.update_override(who, env, override_id, body)


@router.delete(E + "/overrides/{override_id}", status_code=204)
async def delete_override(env: str, override_id: str, flags: Flags, who: Caller) -> Response:
    await flags.delete_override(who, env, override_id)
    return Response(status_code=204)


# -- companies and users -----------------------------------------------------------------

Q = Annotated[str | None, Query(max_length=255, description="Name contains (any case)")]


@router.post(E + "/companies", response_model=Company)
async def upsert_company(
    env: str, body: CompanyUpsert, response: Response, flags: Flags, who: Caller
) -> Company:
    company, created = await flags.upsert_company(who, env, body)
    response.status_code = 201 if created else 200
    return company


@router.get(E + "/companies", response_model=list[Company])
async def list_companies(
    env: str,
    page: Paged,
    flags: Flags,
    who: Caller,
    q: Q = None,
    plan_id: Annotated[str | None, Query(max_length=255)] = None,
) -> list[Company]:
    found: list[Company] = await flags.list_entities(
        entities.COMPANY, who, env, page, q=q, plan_id=plan_id
    )
    return found


@router.post(E + "/companies/lookup", response_model=Company)
async def lookup_company(env: str, body: EntityLookup, flags: Flags, who: Caller) -> Company:
    found: Company = await flags.lookup_entity(entities.COMPANY, who, env, body)
    return found


@router.get(E + "/companies/{company_id}", response_model=Company)
async def get_company(env: str, company_id: str, flags: Flags, who: Caller) -> Company:
    found: Company = await flags.get_entity(entities.COMPANY, who, env, company_id)
    return found


@router.delete(E + "/companies/{company_id}", status_code=204)
async def delete_company(env: str, company_id: str, flags: Flags, who: Caller) -> Response:
    await flags.delete_entity(entities.COMPANY, who, env, company_id)
    return Response(status_code=204)


@router.get(E + "/companies/{company_id}/metrics", response_model=list[MetricValue])
async def company_metrics(
    env: str, company_id: str, flags: Flags, who: Caller
) -> list[MetricValue]:
    return await flags.entity_metrics(entities.COMPANY, who, env, company_id)


@router.post(E + "/users", response_model=User)
async def upsert_user(
    env: str, body: UserUpsert, response: Response, flags: Flags, who: Caller
) -> User:
    user, created = await flags.upsert_user(who, env, body)
    response.status_code = 201 if created else 200
    return user


@router.get(E + "/users", response_model=list[User])
async def list_users(
    env: str,
    page: Paged,
    flags: Flags,
    who: Caller,
    q: Q = None,
    company_id: Annotated[str | None, Query(max_length=255)] = None,
) -> list[User]:
    found: list[User] = await flags.list_entities(
        entities.USER, who, env, page, q=q, company_id=company_id
    )
    return found


@router.post(E + "/users/lookup", response_model=User)
async def lookup_user(env: str, body: EntityLookup, flags: Flags, who: Caller) -> User:
    found: User = await flags.lookup_entity(entities.USER, who, env, body)
    return found


@router.get(E + "/users/{user_id}", response_model=User)
async def get_user(env: str, user_id: str, flags: Flags, who: Caller) -> User:
    found: User = await flags.get_entity(entities.USER, who, env, user_id)
    return found


@router.delete(E + "/users/{user_id}", status_code=204)
async def delete_user(env: str, user_id: str, flags: Flags, who: Caller) -> Response:
    await flags.delete_entity(entities.USER, who, env, user_id)
    return Response(status_code=204)


@router.get(E + "/users/{user_id}/metrics", response_model=list[MetricValue])
async def user_metrics(env: str, user_id: str, flags: Flags, who: Caller) -> list[MetricValue]:
    return await flags.entity_metrics(entities.USER, who, env, user_id)


# -- events and audit --------------------------------------------------------------------


@router.post(E + "/events", response_model=EventsAccepted)
async def send_events(env: str, body: EventBatch, flags: Flags, who: Caller) -> EventsAccepted:
    return await flags.ingest(who, env, body)


@router.get(E + "/events", response_model=list[EventRecord])
async def list_events(
    env: str,
    flags: Flags,
    who: Caller,
    limit: Limit = 100,
    before: Before = None,
    event_type: Literal["identify", "track"] | None = None,
    event: Annotated[str | None, Query(max_length=255)] = None,
    company_id: Annotated[str | None, Query(max_length=255)] = None,
    user_id: Annotated[str | None, Query(max_length=255)] = None,
) -> list[EventRecord]:
    return await flags.list_events(who, env, limit, before, event_type, event, company_id, user_id)


@router.get(E + "/audit", response_model=list[AuditEntry])
async def list_audit(
    env: str,
    flags: Flags,
    who: Caller,
    limit: Limit = 100,
    before: Before = None,
    entity: Annotated[str | None, Query(max_length=255)] = None,
    entity_id: Annotated[str | None, Query(max_length=255)] = None,
) -> list[AuditEntry]:
    return await flags.list_audit(who, env, limit, before, entity, entity_id)
