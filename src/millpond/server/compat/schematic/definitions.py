"""Entity key and trait definitions, and trait values: the SDK's ``companies`` client's
``*_entity_key_definition*``, ``*_entity_trait_definition*`` and ``get_entity_trait_values``.

millpond stores no definitions: a key or trait *is* defined by the companies or users that
have it. Definition ids are derived (``ekd_<company|user>_<key>``,
``etd_<company|user>_<trait>``, as the companies' and users' views report them); a trait's
type is the JSON type of its values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from millpond.models.common import RequestModel

from ...errors import ServiceError
from ...flags import directory, entities
from .common import PREFIX, Caller, Ids, Limit, Offset, Text, _Caller

router = APIRouter(prefix=PREFIX, tags=["compat: schematic"])

EntityType = Annotated[Literal["company", "user"] | None, Query()]
_KINDS = {"company": entities.COMPANY, "user": entities.USER}
_TYPES = {"string": "string", "number": "number", "boolean": "boolean"}


def _kinds(entity_type: str | None) -> list[str]:
    return [entity_type] if entity_type is not None else ["company", "user"]


async def _keys(caller: _Caller, entity_type: str | None) -> list[dict[str, Any]]:
    found = []
    for name in _kinds(entity_type):
        for d in await directory.definitions(
            caller.flags, caller.who, caller.environment_id, _KINDS[name], traits=False
        ):
            found.append(
                {
                    "created_at": d.created_at,
                    "entity_type": name,
                    "id": f"ekd_{name}_{d.name}",
                    "key": d.name,
                    "updated_at": d.updated_at,
                }
            )
    return found


def _trait_view(
    entity_type: str, name: str, trait_type: str, created: datetime, updated: datetime
) -> dict[str, Any]:
    return {
        "created_at": created,
        "display_name": name,
        "entity_type": entity_type,
        "hierarchy": [name],
        "id": f"etd_{entity_type}_{name}",
        "trait_type": trait_type,
        "updated_at": updated,
    }


async def _traits(caller: _Caller, entity_type: str | None) -> list[dict[str, Any]]:
    found = []
    for name in _kinds(entity_type):
        for d in await directory.definitions(
            caller.flags, caller.who, caller.environment_id, _KINDS[name], traits=True
        ):
            trait_type = _TYPES.get(d.value_type or "", "string")
            found.append(_trait_view(name, d.name, trait_type, d.created_at, d.updated_at))
    return found


def _parse(definition_id: str) -> tuple[str, str]:
    """(entity type, trait name) of a trait definition id; 404 when it is none."""
    entity_type, _, name = definition_id.removeprefix("etd_").partition("_")
    if not definition_id.startswith("etd_") or entity_type not in _KINDS or not name:
        raise _no_definition(definition_id)
    return entity_type, name


def _no_definition(definition_id: str) -> ServiceError:
    return ServiceError(
        404, "definition_not_found", f"no entity trait definition {definition_id!r}"
    )


def _page(items: list[dict[str, Any]], limit: int, offset: int) -> list[dict[str, Any]]:
    return items[offset : offset + limit]


def _params(**given: Any) -> dict[str, Any]:
    return {name: value for name, value in given.items() if value is not None}


@router.get("/entity-key-definitions")
async def list_entity_key_definitions(
    caller: Caller,
    entity_type: EntityType = None,
    ids: Ids = None,
    key: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``ListEntityKeyDefinitionsResponse``: the key names in use, by entity type and name."""
    found = [
        d
        for d in await _keys(caller, entity_type)
        if (not ids or d["id"] in ids) and (key is None or d["key"] == key)
    ]
    params = _params(entity_type=entity_type, ids=ids, key=key, limit=limit, offset=offset)
    return {"data": _page(found, limit, offset), "params": params}


@router.get("/entity-key-definitions/count")
async def count_entity_key_definitions(
    caller: Caller,
    entity_type: EntityType = None,
    ids: Ids = None,
    key: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``CountEntityKeyDefinitionsResponse``."""
    found = [
        d
        for d in await _keys(caller, entity_type)
        if (not ids or d["id"] in ids) and (key is None or d["key"] == key)
    ]
    params = _params(entity_type=entity_type, ids=ids, key=key, limit=limit, offset=offset)
    return {"data": {"count": len(found)}, "params": params}


def _matching(
    items: list[dict[str, Any]], ids: list[str] | None, trait_type: str | None, q: str | None
) -> list[dict[str, Any]]:
    return [
        d
        for d in items
        if (not ids or d["id"] in ids)
        and (trait_type is None or d["trait_type"] == trait_type)
        and (q is None or q.lower() in d["display_name"].lower())
    ]


@router.get("/entity-trait-definitions")
async def list_entity_trait_definitions(
    caller: Caller,
    entity_type: EntityType = None,
    ids: Ids = None,
    trait_type: Text = None,
    q: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``ListEntityTraitDefinitionsResponse``: the trait names in use."""
    found = _matching(await _traits(caller, entity_type), ids, trait_type, q)
    params = _params(
        entity_type=entity_type, ids=ids, trait_type=trait_type, q=q, limit=limit, offset=offset
    )
    return {"data": _page(found, limit, offset), "params": params}


@router.get("/entity-trait-definitions/count")
async def count_entity_trait_definitions(
    caller: Caller,
    entity_type: EntityType = None,
    ids: Ids = None,
    trait_type: Text = None,
    q: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``CountEntityTraitDefinitionsResponse``."""
    found = _matching(await _traits(caller, entity_type), ids, trait_type, q)
    params = _params(
        entity_type=entity_type, ids=ids, trait_type=trait_type, q=q, limit=limit, offset=offset
    )
    return {"data": {"count": len(found)}, "params": params}


class TraitDefinitionBody(RequestModel):
    """Schematic's ``CreateEntityTraitDefinitionRequestBody``."""

    entity_type: Literal["company", "user"]
    hierarchy: list[str] = Field(min_length=1, max_length=1)
    trait_type: Literal["boolean", "currency", "date", "number", "string", "url"]
    display_name: str | None = Field(default=None, max_length=4096)


@router.post("/entity-trait-definitions")
async def get_or_create_entity_trait_definition(
    body: TraitDefinitionBody, caller: Caller
) -> dict[str, Any]:
    """``GetOrCreateEntityTraitDefinitionResponse``: the trait's definition (one in use, or
    that of a trait no one has yet: nothing is stored, any trait may be set)."""
    (name,) = body.hierarchy
    if not name or len(name) > 255 or "\x00" in name:
        raise ServiceError(422, "validation_error", "hierarchy: one trait name, 1-255 chars")
    for found in await _traits(caller, body.entity_type):
        if found["display_name"] == name:
            return {"data": found, "params": {}}
    now = datetime.now(UTC)
    return {
        "data": _trait_view(body.entity_type, name, body.trait_type, now, now),
        "params": {},
    }


@router.get("/entity-trait-definitions/{entity_trait_definition_id}")
async def get_entity_trait_definition(
    entity_trait_definition_id: str, caller: Caller
) -> dict[str, Any]:
    """``GetEntityTraitDefinitionResponse``: a trait in use."""
    entity_type, _ = _parse(entity_trait_definition_id)
    for found in await _traits(caller, entity_type):
        if found["id"] == entity_trait_definition_id:
            return {"data": found, "params": {}}
    raise _no_definition(entity_trait_definition_id)


@router.get("/entity-trait-values")
async def get_entity_trait_values(
    caller: Caller,
    definition_id: Annotated[str, Query(max_length=512)],
    q: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``GetEntityTraitValuesResponse``: the distinct values of a trait, as text."""
    entity_type, name = _parse(definition_id)
    values = await directory.trait_values(
        caller.flags,
        caller.who,
        caller.environment_id,
        _KINDS[entity_type],
        name,
        q=q,
        limit=limit,
        offset=offset,
    )
    data = [{"definition_id": definition_id, "value": v} for v in values]
    params = _params(definition_id=definition_id, q=q, limit=limit, offset=offset)
    return {"data": data, "params": params}
