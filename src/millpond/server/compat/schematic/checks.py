"""Flag checks and events: ``POST /flags/{key}/check``, ``POST /flags/check``, ``POST
/event-batch`` and ``POST /events`` (the SDK's ``check_flag``, ``identify`` and ``track``
go through these)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError

from ....models.flags import CheckFlagRequest, EventBatch, FlagCheck
from .common import PREFIX, Caller, invalid_input

router = APIRouter(prefix=PREFIX, tags=["compat: schematic"])

_CHECK_FIELDS = ("company_id", "error", "reason", "rule_id", "user_id", "value")


def _check_data(check: FlagCheck, with_key: bool = False) -> dict[str, Any]:
    data = {name: getattr(check, name) for name in _CHECK_FIELDS}
    if with_key:
        data["flag"] = check.flag
    return data


@router.post("/flags/{key}/check")
async def check_flag(key: str, body: CheckFlagRequest, caller: Caller) -> dict[str, Any]:
    """``CheckFlagResponse``: the flag's value for the company and/or user."""
    check = await caller.flags.check(caller.who, caller.environment_id, key, body)
    return {"data": _check_data(check), "params": {}}


@router.post("/flags/check")
async def check_flags(body: CheckFlagRequest, caller: Caller) -> dict[str, Any]:
    """``CheckFlagsResponse``: every flag's value."""
    checks = await caller.flags.check_all(caller.who, caller.environment_id, body)
    return {"data": {"flags": [_check_data(c, True) for c in checks.flags]}, "params": {}}


class SchematicEvent(BaseModel):
    """Schematic's ``CreateEventRequestBody``."""

    event_type: Literal["identify", "track"]
    body: dict[str, Any] = Field(default_factory=dict)
    sent_at: datetime | None = None


class SchematicEventBatch(BaseModel):
    events: list[SchematicEvent] = Field(min_length=1, max_length=1000)


def _native(events: list[SchematicEvent]) -> EventBatch:
    """Schematic's events as millpond's (their bodies carry the same fields)."""
    native = [
        {**event.body, "event_type": event.event_type, "sent_at": event.sent_at} for event in events
    ]
    try:
        return EventBatch.model_validate({"events": native})
    except ValidationError as exc:
        raise invalid_input(exc) from None


def _seen(request: Request) -> dict[str, Any]:
    """``RawEventResponseData``: when and from where an event came."""
    host = request.client.host if request.client is not None else ""
    return {
        "captured_at": datetime.now(UTC).isoformat(),
        "event_id": None,
        "remote_addr": host,
        "remote_ip": host,
        "user_agent": request.headers.get("user-agent", ""),
    }


@router.post("/event-batch")
async def event_batch(
    body: SchematicEventBatch, request: Request, caller: Caller
) -> dict[str, Any]:
    """``CreateEventBatchResponse``: identify and track events, stored before the answer."""
    await caller.flags.ingest(caller.who, caller.environment_id, _native(body.events))
    seen = _seen(request)
    return {"data": {"events": [seen for _ in body.events]}, "params": {}}


@router.post("/events")
async def create_event(body: SchematicEvent, request: Request, caller: Caller) -> dict[str, Any]:
    """``CreateEventResponse``: one identify or track event."""
    await caller.flags.ingest(caller.who, caller.environment_id, _native([body]))
    return {"data": _seen(request), "params": {}}
