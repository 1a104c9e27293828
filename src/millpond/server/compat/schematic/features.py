"""Features: the routes of the SDK's ``features`` client for features (list, count, create,
read, update, delete), as ``FeatureDetailResponseData`` with the flags gating them and the
plans entitled to them. A trait feature's ``trait_id`` is a company trait's definition id,
``etd_company_<trait key>``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field, ValidationError

from millpond.models.common import RequestModel
from millpond.models.flags import Feature

from ...errors import ServiceError
from ...flags import directory
from ...flags.directory import Filter
from ...flags.schemas import FeatureCreate, FeatureUpdate, FlagCreate, FlagUpdate
from ...flags.service import Page
from .common import PREFIX, Caller, Ids, Limit, Offset, Text, _Caller, invalid_input
from .flags import flag_detail

router = APIRouter(prefix=PREFIX, tags=["compat: schematic"])

_TRAIT = "etd_company_"


class FeatureFlagBody(RequestModel):
    """Schematic's ``CreateOrUpdateFlagRequestBody``: the flag gating the feature."""

    default_value: bool
    description: str = Field(max_length=4096)
    feature_id: str | None = Field(default=None, max_length=128)
    flag_type: str = Field(max_length=64)
    id: str | None = Field(default=None, max_length=128)
    key: str = Field(max_length=128)
    name: str = Field(max_length=4096)


class FeatureBody(RequestModel):
    """Schematic's ``UpdateFeatureRequestBody`` (``CreateFeatureRequestBody`` requires
    description, feature_type and name)."""

    description: str | None = Field(default=None, max_length=4096)
    event_subtype: str | None = Field(default=None, max_length=255)
    feature_type: str | None = Field(default=None, max_length=64)
    flag: FeatureFlagBody | None = None
    lifecycle_phase: str | None = Field(default=None, max_length=64)
    name: str | None = Field(default=None, max_length=4096)
    trait_id: str | None = Field(default=None, max_length=512)


def _native(body: FeatureBody) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": body.name,
        "description": body.description,
        "feature_type": body.feature_type,
        "event_name": body.event_subtype,
    }
    if body.trait_id is not None:
        if not body.trait_id.startswith(_TRAIT) or len(body.trait_id) == len(_TRAIT):
            raise ServiceError(
                422,
                "validation_error",
                f"trait_id: {body.trait_id!r} is no company trait definition id "
                "(etd_company_<key>)",
            )
        data["trait_key"] = body.trait_id.removeprefix(_TRAIT)
    return {name: value for name, value in data.items() if value is not None}


async def _detail(caller: _Caller, feature: Feature) -> dict[str, Any]:
    """``FeatureDetailResponseData``."""
    env, who = caller.environment_id, caller.who
    gating = await directory.list_flags(caller.flags, who, env, Filter(limit=1000), feature.id)
    granted = await caller.flags.list_entitlements(
        who, env, Page(limit=1000), feature_id=feature.id
    )
    plans = []
    for plan_id in sorted({e.plan_id for e in granted}):
        plan = await caller.flags.get_plan(who, env, plan_id)
        plans.append({"id": plan.id, "image_url": None, "name": plan.name or plan.id})
    trait = None
    if feature.trait_key:
        trait = {
            "created_at": feature.created_at,
            "display_name": feature.trait_key,
            "entity_type": "company",
            "hierarchy": [feature.trait_key],
            "id": _TRAIT + feature.trait_key,
            "trait_type": "number",
            "updated_at": feature.updated_at,
        }
    return {
        "created_at": feature.created_at,
        "description": feature.description,
        "event_subtype": feature.event_name,
        "event_summary": None,
        "feature_type": feature.feature_type,
        "flags": [await flag_detail(caller, flag) for flag in gating],
        "id": feature.id,
        "lifecycle_phase": None,
        "name": feature.name,
        "plans": plans,
        "trait": trait,
        "trait_id": trait["id"] if trait else None,
        "updated_at": feature.updated_at,
    }


async def _gate(caller: _Caller, feature_id: str, body: FeatureFlagBody) -> None:
    """Make (or update) the flag ``body`` gate the feature."""
    if body.flag_type != "boolean":
        raise ServiceError(422, "validation_error", "flag.flag_type: only 'boolean' flags")
    env, who = caller.environment_id, caller.who
    try:
        await directory.flag_key(caller.flags, who, env, body.key)
    except ServiceError as exc:
        if exc.code != "flag_not_found":
            raise
        try:
            create = FlagCreate(
                key=body.key,
                name=body.name,
                description=body.description,
                default_value=body.default_value,
                feature_id=feature_id,
            )
        except ValidationError as invalid:
            raise invalid_input(invalid) from None
        await caller.flags.create_flag(who, env, create)
        return
    update = FlagUpdate(
        name=body.name,
        description=body.description,
        default_value=body.default_value,
        feature_id=feature_id,
    )
    await caller.flags.update_flag(who, env, body.key, update)


def _params(**given: Any) -> dict[str, Any]:
    return {name: value for name, value in given.items() if value is not None}


def _unsupported(**given: str | None) -> None:
    for name, value in given.items():
        if value is not None:
            raise ServiceError(422, "not_supported", f"{name}: not supported by millpond")


@router.get("/features")
async def list_features(
    caller: Caller,
    ids: Ids = None,
    q: Text = None,
    without_company_override_for: Text = None,
    without_plan_entitlement_for: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``ListFeaturesResponse``, oldest first."""
    _unsupported(
        without_company_override_for=without_company_override_for,
        without_plan_entitlement_for=without_plan_entitlement_for,
    )
    only = Filter(ids=ids or (), q=q, limit=limit, offset=offset)
    found = await directory.list_features(caller.flags, caller.who, caller.environment_id, only)
    params = _params(ids=ids, q=q, limit=limit, offset=offset)
    return {"data": [await _detail(caller, f) for f in found], "params": params}


@router.get("/features/count")
async def count_features(
    caller: Caller,
    ids: Ids = None,
    q: Text = None,
    without_company_override_for: Text = None,
    without_plan_entitlement_for: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``CountFeaturesResponse``."""
    _unsupported(
        without_company_override_for=without_company_override_for,
        without_plan_entitlement_for=without_plan_entitlement_for,
    )
    only = Filter(ids=ids or (), q=q)
    count = await directory.count_features(caller.flags, caller.who, caller.environment_id, only)
    params = _params(ids=ids, q=q, limit=limit, offset=offset)
    return {"data": {"count": count}, "params": params}


@router.post("/features")
async def create_feature(body: FeatureBody, caller: Caller) -> dict[str, Any]:
    """``CreateFeatureResponse``; with ``flag``, that flag gates it (created, or updated)."""
    try:
        create = FeatureCreate.model_validate(_native(body))
    except ValidationError as exc:
        raise invalid_input(exc) from None
    feature = await caller.flags.create_feature(caller.who, caller.environment_id, create)
    if body.flag is not None:
        await _gate(caller, feature.id, body.flag)
    return {"data": await _detail(caller, feature), "params": {}}


@router.get("/features/{feature_id}")
async def get_feature(feature_id: str, caller: Caller) -> dict[str, Any]:
    """``GetFeatureResponse``."""
    feature = await caller.flags.get_feature(caller.who, caller.environment_id, feature_id)
    return {"data": await _detail(caller, feature), "params": {}}


@router.put("/features/{feature_id}")
async def update_feature(feature_id: str, body: FeatureBody, caller: Caller) -> dict[str, Any]:
    """``UpdateFeatureResponse``: the fields given change."""
    try:
        update = FeatureUpdate.model_validate(_native(body))
    except ValidationError as exc:
        raise invalid_input(exc) from None
    feature = await caller.flags.update_feature(
        caller.who, caller.environment_id, feature_id, update
    )
    if body.flag is not None:
        await _gate(caller, feature.id, body.flag)
    return {"data": await _detail(caller, feature), "params": {}}


@router.delete("/features/{feature_id}")
async def delete_feature(feature_id: str, caller: Caller) -> dict[str, Any]:
    """``DeleteFeatureResponse``: its entitlements and overrides go; its flags gate nothing."""
    await caller.flags.delete_feature(caller.who, caller.environment_id, feature_id)
    return {"data": {"deleted": True}, "params": {}}
