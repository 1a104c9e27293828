"""The check log: the SDK's ``features.list_flag_checks``, ``count_flag_checks``,
``get_latest_flag_checks`` and ``get_flag_check``, from millpond's recorded checks.

millpond records a check when the server records every check (``MILLPOND_FLAGS_RECORD_CHECKS``)
or when a check asks for it (``?record=true`` on millpond's own API); otherwise the log is
empty. A check's id is millpond's (a number, as text)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ...errors import ServiceError
from ...flags import directory, entities
from ...flags.schemas import CheckRecord
from .common import PREFIX, Caller, Ids, Limit, Offset, _Caller
from .flags import check_view, flag_brief
from .views import company_brief, user_brief

router = APIRouter(prefix=PREFIX, tags=["compat: schematic"])

FlagId = Annotated[str | None, Query(max_length=128)]
CheckId = Annotated[str | None, Query(max_length=32)]


async def _optional(caller: _Caller, kind: entities.Kind, entity_id: str | None) -> Any:
    """The company or user, or None when there is none (any more)."""
    if entity_id is None:
        return None
    try:
        return await caller.flags.get_entity(kind, caller.who, caller.environment_id, entity_id)
    except ServiceError as exc:
        if exc.status == 404:
            return None
        raise


async def _detail(caller: _Caller, record: CheckRecord) -> dict[str, Any]:
    """``FlagCheckLogDetailResponseData``: with the company, user and flag as they are now."""
    env = caller.environment_id
    company = await _optional(caller, entities.COMPANY, record.company_id)
    user = await _optional(caller, entities.USER, record.user_id)
    flag = None
    try:
        flag = await caller.flags.get_flag(caller.who, env, record.flag)
    except ServiceError as exc:
        if exc.status != 404:
            raise
    return {
        **check_view(record, env),
        "company": company_brief(company, env) if company is not None else None,
        "environment": None,
        "flag": flag_brief(flag) if flag is not None else None,
        "rule": None,
        "user": user_brief(user, env) if user is not None else None,
    }


def _check_id(value: str | None) -> int | None:
    if value is None:
        return None
    return int(value) if value.isdigit() and len(value) < 19 else -1  # -1: matches none


def _flag_ids(flag_id: str | None, flag_ids: list[str] | None) -> list[str]:
    return [*(flag_ids or ()), *([flag_id] if flag_id is not None else [])]


def _params(**given: Any) -> dict[str, Any]:
    return {name: value for name, value in given.items() if value is not None}


@router.get("/flag-checks")
async def list_flag_checks(
    caller: Caller,
    flag_id: FlagId = None,
    flag_ids: Ids = None,
    id: CheckId = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``ListFlagChecksResponse``: recorded checks, newest first."""
    found = await directory.check_log(
        caller.flags,
        caller.who,
        caller.environment_id,
        flag_ids=_flag_ids(flag_id, flag_ids),
        check_id=_check_id(id),
        limit=limit,
        offset=offset,
    )
    params = _params(flag_id=flag_id, flag_ids=flag_ids, id=id, limit=limit, offset=offset)
    return {"data": [await _detail(caller, r) for r in found], "params": params}


@router.get("/flag-checks/count")
async def count_flag_checks(
    caller: Caller,
    flag_id: FlagId = None,
    flag_ids: Ids = None,
    id: CheckId = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``CountFlagChecksResponse``."""
    ids = _flag_ids(flag_id, flag_ids)
    if id is not None:
        found = await directory.check_log(
            caller.flags, caller.who, caller.environment_id, flag_ids=ids, check_id=_check_id(id)
        )
        count = len(found)
    else:
        count = await directory.count_checks(
            caller.flags, caller.who, caller.environment_id, flag_ids=ids
        )
    params = _params(flag_id=flag_id, flag_ids=flag_ids, id=id, limit=limit, offset=offset)
    return {"data": {"count": count}, "params": params}


@router.get("/flag-checks/latest")
async def get_latest_flag_checks(
    caller: Caller,
    flag_id: FlagId = None,
    flag_ids: Ids = None,
    id: CheckId = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """``GetLatestFlagChecksResponse``: each flag's latest recorded check."""
    found = await directory.check_log(
        caller.flags,
        caller.who,
        caller.environment_id,
        flag_ids=_flag_ids(flag_id, flag_ids),
        check_id=_check_id(id),
        latest=True,
        limit=limit,
        offset=offset,
    )
    params = _params(flag_id=flag_id, flag_ids=flag_ids, id=id, limit=limit, offset=offset)
    return {"data": [check_view(r, caller.environment_id) for r in found], "params": params}


@router.get("/flag-checks/{flag_check_id}")
async def get_flag_check(flag_check_id: str, caller: Caller) -> dict[str, Any]:
    """``GetFlagCheckResponse``."""
    check_id = _check_id(flag_check_id)
    found = await directory.check_log(
        caller.flags, caller.who, caller.environment_id, check_id=check_id, limit=1
    )
    if not found:
        raise ServiceError(404, "check_not_found", f"no recorded check {flag_check_id!r}")
    return {"data": await _detail(caller, found[0]), "params": {}}
