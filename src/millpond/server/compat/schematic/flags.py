"""Flags and their rules: the routes of the SDK's ``features`` client for flags (list, count,
create, read, update, delete, replace rules), as ``FlagDetailResponseData``.

A flag is addressed by its id (as Schematic does) or by its key. Schematic names traits by
definition id: here a trait's definition id is ``etd_<company|user>_<trait key>`` (as the
companies' ``entity_traits`` report them), so rules can name them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field, ValidationError

from millpond.models.common import RequestModel
from millpond.models.flags import Condition, Flag, Rule

from ...errors import ServiceError
from ...flags import directory
from ...flags.directory import Filter
from ...flags.schemas import CheckRecord, FlagCreate, FlagUpdate, RuleInput
from .common import PREFIX, Caller, Ids, Limit, Offset, Text, _Caller, invalid_input

router = APIRouter(prefix=PREFIX, tags=["compat: schematic"])

_TRAIT_PREFIX = "etd_"


class FlagBody(RequestModel):
    """Schematic's ``CreateFlagRequestBody`` (and ``UpdateFlagRequestBody``)."""

    default_value: bool
    description: str = Field(max_length=4096)
    flag_type: str = Field(max_length=64)
    key: str = Field(max_length=128)
    name: str = Field(max_length=4096)
    feature_id: str | None = Field(default=None, max_length=128)


class ConditionBody(RequestModel):
    """Schematic's ``CreateOrUpdateConditionRequestBody``."""

    comparison_trait_id: str | None = Field(default=None, max_length=512)
    condition_type: str = Field(max_length=64)
    event_subtype: str | None = Field(default=None, max_length=255)
    id: str | None = Field(default=None, max_length=128)
    metric_period: str | None = Field(default=None, max_length=64)
    metric_value: int = 0
    operator: str = Field(max_length=16)
    resource_ids: list[str] = Field(default_factory=list, max_length=1000)
    trait_id: str | None = Field(default=None, max_length=512)
    trait_value: str | None = Field(default=None, max_length=4096)


class ConditionGroupBody(RequestModel):
    conditions: list[ConditionBody] = Field(max_length=100)
    flag_id: str | None = None
    id: str | None = Field(default=None, max_length=128)
    plan_id: str | None = None


class RuleBody(RequestModel):
    """Schematic's ``CreateOrUpdateRuleRequestBody``."""

    condition_groups: list[ConditionGroupBody] = Field(default_factory=list, max_length=100)
    conditions: list[ConditionBody] = Field(default_factory=list, max_length=100)
    id: str | None = Field(default=None, max_length=128)
    name: str = Field(max_length=4096)
    priority: int = Field(ge=-(2**31), le=2**31 - 1)
    rule_type: str | None = Field(default=None, max_length=64)
    value: bool


class RulesBody(RequestModel):
    rules: list[RuleBody] = Field(max_length=100)


def _trait(trait_id: str | None, name: str) -> tuple[str, str] | None:
    """(entity, trait key) of a trait definition id."""
    if trait_id is None:
        return None
    entity, _, key = trait_id.removeprefix(_TRAIT_PREFIX).partition("_")
    if not trait_id.startswith(_TRAIT_PREFIX) or entity not in ("company", "user") or not key:
        raise ServiceError(
            422,
            "validation_error",
            f"{name}: {trait_id!r} is no trait definition id (etd_company_<key>, etd_user_<key>)",
        )
    return entity, key


def _native_condition(body: ConditionBody) -> dict[str, Any]:
    data: dict[str, Any] = {
        "condition_type": body.condition_type,
        "operator": body.operator,
        "resource_ids": body.resource_ids,
    }
    if body.id is not None:
        data["id"] = body.id
    trait = _trait(body.trait_id, "trait_id")
    comparison = _trait(body.comparison_trait_id, "comparison_trait_id")
    if trait is not None:
        data["trait_entity"], data["trait_key"] = trait
    if comparison is not None:
        data["trait_entity"], data["comparison_trait_key"] = comparison
    if body.condition_type == "trait":
        data["trait_value"] = body.trait_value
    if body.condition_type == "metric":
        data["event_name"] = body.event_subtype
        data["metric_period"] = body.metric_period or "all_time"
        data["metric_value"] = body.metric_value
    return data


def _native_rules(bodies: list[RuleBody]) -> list[RuleInput]:
    try:
        return [
            RuleInput.model_validate(
                {
                    **({"id": rule.id} if rule.id is not None else {}),
                    "name": rule.name,
                    "priority": rule.priority,
                    "rule_type": rule.rule_type or "standard",
                    "value": rule.value,
                    "conditions": [_native_condition(c) for c in rule.conditions],
                    "condition_groups": [
                        {
                            **({"id": g.id} if g.id is not None else {}),
                            "conditions": [_native_condition(c) for c in g.conditions],
                        }
                        for g in rule.condition_groups
                    ],
                }
            )
            for rule in bodies
        ]
    except ValidationError as exc:
        raise invalid_input(exc) from None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _condition_view(
    c: Condition, rule: Rule, flag: Flag, env_id: str, group_id: str | None
) -> dict[str, Any]:
    trait_id = f"{_TRAIT_PREFIX}{c.trait_entity}_{c.trait_key}" if c.trait_key else None
    comparison = (
        f"{_TRAIT_PREFIX}{c.trait_entity}_{c.comparison_trait_key}"
        if c.comparison_trait_key
        else None
    )
    metric = c.metric_value if c.metric_value is not None else 0
    return {
        "comparison_trait_id": comparison,
        "condition_group_id": group_id,
        "condition_type": c.condition_type,
        "created_at": flag.created_at,
        "environment_id": env_id,
        "event_subtype": c.event_name,
        "flag_id": flag.id,
        "id": c.id or "",
        "metric_period": c.metric_period if c.condition_type == "metric" else None,
        "metric_value": int(metric),
        "operator": c.operator,
        "plan_id": None,
        "resource_ids": c.resource_ids,
        "resources": [],
        "rule_id": rule.id or "",
        "trait_entity_type": c.trait_entity if c.condition_type in ("trait", "metric") else None,
        "trait_id": trait_id,
        "trait_value": _text(c.trait_value),
        "updated_at": flag.updated_at,
    }


def rule_view(rule: Rule, flag: Flag, env_id: str) -> dict[str, Any]:
    """``RuleDetailResponseData``."""
    return {
        "condition_groups": [
            {
                "conditions": [_condition_view(c, rule, flag, env_id, g.id) for c in g.conditions],
                "created_at": flag.created_at,
                "environment_id": env_id,
                "flag_id": flag.id,
                "id": g.id or "",
                "plan_id": None,
                "rule_id": rule.id or "",
                "updated_at": flag.updated_at,
            }
            for g in rule.condition_groups
        ],
        "conditions": [_condition_view(c, rule, flag, env_id, None) for c in rule.conditions],
        "created_at": flag.created_at,
        "environment_id": env_id,
        "flag_id": flag.id,
        "id": rule.id or "",
        "name": rule.name,
        "plan_id": None,
        "priority": rule.priority,
        "rule_type": rule.rule_type,
        "updated_at": flag.updated_at,
        "value": rule.value,
    }


def flag_brief(flag: Flag) -> dict[str, Any]:
    """``FlagResponseData``."""
    return {
        "created_at": flag.created_at,
        "default_value": flag.default_value,
        "description": flag.description,
        "feature_id": flag.feature_id,
        "flag_type": flag.flag_type,
        "id": flag.id,
        "key": flag.key,
        "name": flag.name,
        "updated_at": flag.updated_at,
    }


def check_view(record: CheckRecord, env_id: str) -> dict[str, Any]:
    """``FlagCheckLogResponseData``."""
    return {
        "check_status": "completed",
        "company_id": record.company_id,
        "created_at": record.checked_at,
        "environment_id": env_id,
        "error": None,
        "flag_id": record.flag_id,
        "flag_key": record.flag,
        "id": str(record.id),
        "reason": record.reason,
        "req_company": record.company,
        "req_user": record.user,
        "rule_id": record.rule_id,
        "updated_at": record.checked_at,
        "user_id": record.user_id,
        "value": record.value,
    }


async def flag_detail(caller: _Caller, flag: Flag) -> dict[str, Any]:
    """``FlagDetailResponseData`` (without the feature), with its latest recorded check."""
    rules = await caller.flags.list_rules(caller.who, caller.environment_id, flag.key)
    assert flag.id is not None
    latest = await directory.check_log(
        caller.flags, caller.who, caller.environment_id, flag_ids=[flag.id], limit=1
    )
    return {
        **flag_brief(flag),
        "feature": None,
        "latest_check": check_view(latest[0], caller.environment_id) if latest else None,
        "rules": [rule_view(r, flag, caller.environment_id) for r in rules],
    }


def _params(**given: Any) -> dict[str, Any]:
    return {name: value for name, value in given.items() if value is not None}


@router.get("/flags")
async def list_flags(
    caller: Caller,
    feature_id: Text = None,
    ids: Ids = None,
    q: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``ListFlagsResponse``: live flags, oldest first."""
    only = Filter(ids=ids or (), q=q, limit=limit, offset=offset)
    found = await directory.list_flags(
        caller.flags, caller.who, caller.environment_id, only, feature_id
    )
    params = _params(feature_id=feature_id, ids=ids, q=q, limit=limit, offset=offset)
    return {"data": [await flag_detail(caller, flag) for flag in found], "params": params}


@router.get("/flags/count")
async def count_flags(
    caller: Caller,
    feature_id: Text = None,
    ids: Ids = None,
    q: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``CountFlagsResponse``."""
    only = Filter(ids=ids or (), q=q)
    count = await directory.count_flags(
        caller.flags, caller.who, caller.environment_id, only, feature_id
    )
    params = _params(feature_id=feature_id, ids=ids, q=q, limit=limit, offset=offset)
    return {"data": {"count": count}, "params": params}


@router.post("/flags")
async def create_flag(body: FlagBody, caller: Caller) -> dict[str, Any]:
    """``CreateFlagResponse``."""
    try:
        create = FlagCreate.model_validate(body.model_dump(exclude_none=True))
    except ValidationError as exc:
        raise invalid_input(exc) from None
    flag = await caller.flags.create_flag(caller.who, caller.environment_id, create)
    return {"data": await flag_detail(caller, flag), "params": {}}


@router.get("/flags/{flag_id}")
async def get_flag(flag_id: str, caller: Caller) -> dict[str, Any]:
    """``GetFlagResponse``: by id (or key)."""
    key = await directory.flag_key(caller.flags, caller.who, caller.environment_id, flag_id)
    flag = await caller.flags.get_flag(caller.who, caller.environment_id, key)
    return {"data": await flag_detail(caller, flag), "params": {}}


@router.put("/flags/{flag_id}")
async def update_flag(flag_id: str, body: FlagBody, caller: Caller) -> dict[str, Any]:
    """``UpdateFlagResponse``: name, description, default value, feature (a flag's key and
    type do not change in millpond)."""
    key = await directory.flag_key(caller.flags, caller.who, caller.environment_id, flag_id)
    if body.key != key:
        raise ServiceError(422, "validation_error", f"key: a flag's key cannot change ({key!r})")
    if body.flag_type != "boolean":
        raise ServiceError(422, "validation_error", "flag_type: only 'boolean' flags")
    update = FlagUpdate(
        name=body.name,
        description=body.description,
        default_value=body.default_value,
        feature_id=body.feature_id,
    )
    flag = await caller.flags.update_flag(caller.who, caller.environment_id, key, update)
    return {"data": await flag_detail(caller, flag), "params": {}}


@router.delete("/flags/{flag_id}")
async def delete_flag(flag_id: str, caller: Caller) -> dict[str, Any]:
    """``DeleteFlagResponse``."""
    key = await directory.flag_key(caller.flags, caller.who, caller.environment_id, flag_id)
    await caller.flags.delete_flag(caller.who, caller.environment_id, key)
    return {"data": {"deleted": True}, "params": {}}


@router.put("/flags/{flag_id}/rules")
async def update_flag_rules(flag_id: str, body: RulesBody, caller: Caller) -> dict[str, Any]:
    """``UpdateFlagRulesResponse`` (``RulesDetailResponseData``): the flag's rules replaced."""
    key = await directory.flag_key(caller.flags, caller.who, caller.environment_id, flag_id)
    rules = _native_rules(body.rules)
    stored = await caller.flags.replace_rules(caller.who, caller.environment_id, key, rules)
    flag = await caller.flags.get_flag(caller.who, caller.environment_id, key)
    views = [rule_view(r, flag, caller.environment_id) for r in stored]
    return {"data": {"Flag": flag_brief(flag), "rules": views}, "params": {}}
