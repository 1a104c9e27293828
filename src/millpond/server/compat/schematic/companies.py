"""Companies, users and memberships: the routes of the SDK's ``companies`` client that
millpond's flags domain backs (upserts, reads, lookups by keys, lists and counts, deletes,
memberships, trait updates)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field, ValidationError

from millpond.models.common import RequestModel
from millpond.models.flags import Company, User

from ...errors import ServiceError
from ...flags import directory, entities
from ...flags.directory import Filter
from ...flags.schemas import CompanyUpsert, EntityLookup, UserUpsert
from .common import PREFIX, Caller, Ids, Limit, Offset, Text, _Caller, bracketed, invalid_input
from .views import Views, company_brief, membership, parse_membership_id, user_brief

router = APIRouter(prefix=PREFIX, tags=["compat: schematic"])


class UpsertCompanyBody(RequestModel):
    """Schematic's ``UpsertCompanyRequestBody``."""

    keys: dict[str, Any] = Field(description="Its keys (at least one)")
    id: str | None = Field(default=None, max_length=128, description="Its Schematic id")
    last_seen_at: datetime | None = Field(default=None, description="Ignored (millpond's)")
    name: str | None = Field(default=None, max_length=4096)
    traits: dict[str, Any] | None = Field(default=None, description="Traits to set")
    update_only: bool | None = Field(default=None, description="Never create")


class UpsertUserBody(UpsertCompanyBody):
    """Schematic's ``UpsertUserRequestBody``: also the company it belongs to."""

    company: dict[str, Any] | None = Field(default=None, description="Keys of its company")
    company_id: str | None = Field(default=None, max_length=128, description="Its company")


class KeysBody(RequestModel):
    keys: dict[str, Any] = Field(description="Any of its keys")


class MembershipBody(RequestModel):
    company_id: str = Field(max_length=128)
    user_id: str = Field(max_length=128)


class UpsertTraitBody(RequestModel):
    """Schematic's ``UpsertTraitRequestBody``: set one trait (``incr`` is refused)."""

    keys: dict[str, Any]
    trait: str = Field(min_length=1, max_length=255)
    incr: int | None = None
    set: str | None = Field(default=None, max_length=4096)
    update_only: bool | None = None


def _lookup(keys: dict[str, Any]) -> EntityLookup:
    try:
        return EntityLookup.model_validate({"keys": keys})
    except ValidationError as exc:
        raise invalid_input(exc) from None


async def _existing(caller: _Caller, kind: entities.Kind, keys: dict[str, Any]) -> Any:
    """The entity owning ``keys``, or None."""
    try:
        return await caller.flags.lookup_entity(
            kind, caller.who, caller.environment_id, _lookup(keys)
        )
    except ServiceError as exc:
        if exc.code == kind.not_found_code:
            return None
        raise


async def _keys_for(caller: _Caller, kind: entities.Kind, body: UpsertCompanyBody) -> Any:
    """The keys to upsert by: the body's, and the keys of the entity its ``id`` names (404
    when there is none); with ``update_only``, 404 when no entity has them."""
    keys = dict(body.keys)
    if body.id is not None:
        named = await caller.flags.get_entity(kind, caller.who, caller.environment_id, body.id)
        keys = {**named.keys, **keys}
    elif body.update_only and await _existing(caller, kind, keys) is None:
        raise entities.not_found(kind, f"with keys {keys!r} (update_only)")
    return keys


async def _upsert_company(caller: _Caller, body: UpsertCompanyBody) -> dict[str, Any]:
    keys = await _keys_for(caller, entities.COMPANY, body)
    data = {"keys": keys, "name": body.name, "traits": body.traits}
    try:
        upsert = CompanyUpsert.model_validate({k: v for k, v in data.items() if v is not None})
    except ValidationError as exc:
        raise invalid_input(exc) from None
    company, _ = await caller.flags.upsert_company(caller.who, caller.environment_id, upsert)
    views = Views(caller.flags, caller.who, caller.environment_id)
    return {"data": await views.company(company), "params": {}}


async def _upsert_user(caller: _Caller, body: UpsertUserBody) -> dict[str, Any]:
    keys = await _keys_for(caller, entities.USER, body)
    member_of = None
    if body.company_id is not None:  # the company must be there before the user changes
        member_of = await caller.flags.get_entity(
            entities.COMPANY, caller.who, caller.environment_id, body.company_id
        )
    data = {"keys": keys, "name": body.name, "traits": body.traits, "company": body.company}
    if not body.company:  # the package requires it: {} is no company
        del data["company"]
    try:
        upsert = UserUpsert.model_validate({k: v for k, v in data.items() if v is not None})
    except ValidationError as exc:
        raise invalid_input(exc) from None
    user, _ = await caller.flags.upsert_user(caller.who, caller.environment_id, upsert)
    if member_of is not None and member_of.id not in user.company_ids:
        await directory.add_membership(
            caller.flags, caller.who, caller.environment_id, member_of.id, user.id
        )
        user = await caller.flags.get_entity(
            entities.USER, caller.who, caller.environment_id, user.id
        )
    views = Views(caller.flags, caller.who, caller.environment_id)
    return {"data": await views.user(user), "params": {}}


def _params(**given: Any) -> dict[str, Any]:
    return {name: value for name, value in given.items() if value is not None}


# -- companies -------------------------------------------------------------------------------


@router.get("/companies")
async def list_companies(
    caller: Caller,
    ids: Ids = None,
    plan_id: Text = None,
    q: Text = None,
    without_feature_override_for: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``ListCompaniesResponse``, oldest first."""
    if without_feature_override_for is not None:
        raise ServiceError(
            422, "not_supported", "without_feature_override_for: not supported by millpond"
        )
    only = Filter(ids=ids or (), q=q, plan_id=plan_id, limit=limit, offset=offset)
    found = await directory.list_entities(
        caller.flags, caller.who, caller.environment_id, entities.COMPANY, only
    )
    views = Views(caller.flags, caller.who, caller.environment_id)
    companies = [c for c in found if isinstance(c, Company)]
    params = _params(ids=ids, plan_id=plan_id, q=q, limit=limit, offset=offset)
    return {"data": await views.companies(companies), "params": params}


@router.get("/companies/count")
async def count_companies(
    caller: Caller,
    ids: Ids = None,
    plan_id: Text = None,
    q: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``CountCompaniesResponse`` (limit and offset do not change the count)."""
    only = Filter(ids=ids or (), q=q, plan_id=plan_id)
    count = await directory.count_entities(
        caller.flags, caller.who, caller.environment_id, entities.COMPANY, only
    )
    params = _params(ids=ids, plan_id=plan_id, q=q, limit=limit, offset=offset)
    return {"data": {"count": count}, "params": params}


@router.post("/companies")
async def upsert_company(body: UpsertCompanyBody, caller: Caller) -> dict[str, Any]:
    """``UpsertCompanyResponse``: create the company, or update the one with these keys."""
    return await _upsert_company(caller, body)


@router.post("/companies/create")
async def create_company(body: UpsertCompanyBody, caller: Caller) -> dict[str, Any]:
    """``CreateCompanyResponse``: as the upsert (Schematic's create upserts too)."""
    return await _upsert_company(caller, body)


@router.get("/companies/lookup")
async def lookup_company(request: Request, caller: Caller) -> dict[str, Any]:
    """``LookupCompanyResponse``: the company with any of ``keys[name]=value``."""
    keys = bracketed(request, "keys")
    found = await caller.flags.lookup_entity(
        entities.COMPANY, caller.who, caller.environment_id, _lookup(keys)
    )
    views = Views(caller.flags, caller.who, caller.environment_id)
    return {"data": await views.company(found), "params": {"keys": keys}}


@router.post("/companies/delete")
async def delete_company_by_keys(body: KeysBody, caller: Caller) -> dict[str, Any]:
    """``DeleteCompanyByKeysResponse``: the company deleted."""
    found = await caller.flags.lookup_entity(
        entities.COMPANY, caller.who, caller.environment_id, _lookup(body.keys)
    )
    await caller.flags.delete_entity(entities.COMPANY, caller.who, caller.environment_id, found.id)
    return {"data": company_brief(found, caller.environment_id), "params": {}}


@router.get("/companies/{company_id}")
async def get_company(company_id: str, caller: Caller) -> dict[str, Any]:
    """``GetCompanyResponse``."""
    found = await caller.flags.get_entity(
        entities.COMPANY, caller.who, caller.environment_id, company_id
    )
    views = Views(caller.flags, caller.who, caller.environment_id)
    return {"data": await views.company(found), "params": {}}


@router.delete("/companies/{company_id}")
async def delete_company(company_id: str, caller: Caller) -> dict[str, Any]:
    """``DeleteCompanyResponse``."""
    await caller.flags.delete_entity(
        entities.COMPANY, caller.who, caller.environment_id, company_id
    )
    return {"data": {"deleted": True}, "params": {}}


# -- users -----------------------------------------------------------------------------------


@router.get("/users")
async def list_users(
    caller: Caller,
    company_id: Text = None,
    ids: Ids = None,
    plan_id: Text = None,
    q: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``ListUsersResponse``, oldest first."""
    only = Filter(
        ids=ids or (), q=q, plan_id=plan_id, company_id=company_id, limit=limit, offset=offset
    )
    found = await directory.list_entities(
        caller.flags, caller.who, caller.environment_id, entities.USER, only
    )
    views = Views(caller.flags, caller.who, caller.environment_id)
    users = [u for u in found if isinstance(u, User)]
    params = _params(
        company_id=company_id, ids=ids, plan_id=plan_id, q=q, limit=limit, offset=offset
    )
    return {"data": await views.users(users), "params": params}


@router.get("/users/count")
async def count_users(
    caller: Caller,
    company_id: Text = None,
    ids: Ids = None,
    plan_id: Text = None,
    q: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``CountUsersResponse``."""
    only = Filter(ids=ids or (), q=q, plan_id=plan_id, company_id=company_id)
    count = await directory.count_entities(
        caller.flags, caller.who, caller.environment_id, entities.USER, only
    )
    params = _params(
        company_id=company_id, ids=ids, plan_id=plan_id, q=q, limit=limit, offset=offset
    )
    return {"data": {"count": count}, "params": params}


@router.post("/users")
async def upsert_user(body: UpsertUserBody, caller: Caller) -> dict[str, Any]:
    """``UpsertUserResponse``: create the user, or update the one with these keys; a member
    of ``company`` (keys, created if new) and of ``company_id`` when given."""
    return await _upsert_user(caller, body)


@router.post("/users/create")
async def create_user(body: UpsertUserBody, caller: Caller) -> dict[str, Any]:
    """``CreateUserResponse``: as the upsert."""
    return await _upsert_user(caller, body)


@router.get("/users/lookup")
async def lookup_user(request: Request, caller: Caller) -> dict[str, Any]:
    """``LookupUserResponse``: the user with any of ``keys[name]=value``."""
    keys = bracketed(request, "keys")
    found = await caller.flags.lookup_entity(
        entities.USER, caller.who, caller.environment_id, _lookup(keys)
    )
    views = Views(caller.flags, caller.who, caller.environment_id)
    return {"data": await views.user(found), "params": {"keys": keys}}


@router.post("/users/delete")
async def delete_user_by_keys(body: KeysBody, caller: Caller) -> dict[str, Any]:
    """``DeleteUserByKeysResponse``: the user deleted."""
    found = await caller.flags.lookup_entity(
        entities.USER, caller.who, caller.environment_id, _lookup(body.keys)
    )
    await caller.flags.delete_entity(entities.USER, caller.who, caller.environment_id, found.id)
    return {"data": user_brief(found, caller.environment_id), "params": {}}


@router.get("/users/{user_id}")
async def get_user(user_id: str, caller: Caller) -> dict[str, Any]:
    """``GetUserResponse``."""
    found = await caller.flags.get_entity(entities.USER, caller.who, caller.environment_id, user_id)
    views = Views(caller.flags, caller.who, caller.environment_id)
    return {"data": await views.user(found), "params": {}}


@router.delete("/users/{user_id}")
async def delete_user(user_id: str, caller: Caller) -> dict[str, Any]:
    """``DeleteUserResponse``."""
    await caller.flags.delete_entity(entities.USER, caller.who, caller.environment_id, user_id)
    return {"data": {"deleted": True}, "params": {}}


# -- memberships and traits ------------------------------------------------------------------


@router.get("/company-memberships")
async def list_company_memberships(
    caller: Caller,
    company_id: Text = None,
    user_id: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``ListCompanyMembershipsResponse``."""
    found = await directory.list_memberships(
        caller.flags,
        caller.who,
        caller.environment_id,
        company_id=company_id,
        user_id=user_id,
        limit=limit,
        offset=offset,
    )
    data = []
    for item in found:
        company = await caller.flags.get_entity(
            entities.COMPANY, caller.who, caller.environment_id, item.company_id
        )
        data.append(membership(item, company, caller.environment_id))
    params = _params(company_id=company_id, user_id=user_id, limit=limit, offset=offset)
    return {"data": data, "params": params}


@router.post("/company-memberships")
async def get_or_create_company_membership(body: MembershipBody, caller: Caller) -> dict[str, Any]:
    """``GetOrCreateCompanyMembershipResponse``."""
    made = await directory.add_membership(
        caller.flags, caller.who, caller.environment_id, body.company_id, body.user_id
    )
    company = await caller.flags.get_entity(
        entities.COMPANY, caller.who, caller.environment_id, made.company_id
    )
    return {"data": membership(made, company, caller.environment_id), "params": {}}


@router.delete("/company-memberships/{company_membership_id}")
async def delete_company_membership(company_membership_id: str, caller: Caller) -> dict[str, Any]:
    """``DeleteCompanyMembershipResponse``; a membership's id is ``<user id>.<company id>``."""
    ids = parse_membership_id(company_membership_id)
    if ids is None:
        raise ServiceError(404, "membership_not_found", f"no membership {company_membership_id!r}")
    user_id, company_id = ids
    await directory.remove_membership(
        caller.flags, caller.who, caller.environment_id, company_id, user_id
    )
    return {"data": {"deleted": True}, "params": {}}


async def _upsert_trait(caller: _Caller, kind: entities.Kind, body: UpsertTraitBody) -> Any:
    if body.incr is not None:
        raise ServiceError(
            422, "not_supported", "incr: not supported by millpond (send the new value in set)"
        )
    if body.set is None:
        raise ServiceError(422, "validation_error", "set: the trait's new value is required")
    upsert = UpsertCompanyBody(
        keys=body.keys, traits={body.trait: body.set}, update_only=body.update_only
    )
    if kind is entities.COMPANY:
        return await _upsert_company(caller, upsert)
    return await _upsert_user(caller, UpsertUserBody(**upsert.model_dump(exclude_none=True)))


@router.post("/company-traits")
async def upsert_company_trait(body: UpsertTraitBody, caller: Caller) -> dict[str, Any]:
    """``UpsertCompanyTraitResponse``: one trait of the company set."""
    result: dict[str, Any] = await _upsert_trait(caller, entities.COMPANY, body)
    return result


@router.post("/user-traits")
async def upsert_user_trait(body: UpsertTraitBody, caller: Caller) -> dict[str, Any]:
    """``UpsertUserTraitResponse``: one trait of the user set."""
    result: dict[str, Any] = await _upsert_trait(caller, entities.USER, body)
    return result
