"""The Schematic API subset its Python SDK (``schematichq``) uses at run time, at
``/compat/schematic``: point the SDK there and it works unchanged::

    from schematic.client import Schematic, SchematicConfig
    client = Schematic("mp_…", SchematicConfig(base_url="http://127.0.0.1:8000/compat/schematic"))
    client.check_flag("new-editor", company={"id": "acme"})
    client.track(event="api-call", company={"id": "acme"})

- ``POST /flags/{key}/check`` and ``POST /flags/check``: checks (``CheckFlagResponse``,
  ``CheckFlagsResponse``);
- ``POST /event-batch``: identify and track events (``CreateEventBatchResponse``).

The key (header ``X-Schematic-Api-Key``, or ``Authorization: Bearer``) must be a millpond
key bound to a flags environment (``millpond`` keys made by ``POST
/v1/flags/environments/{env}/keys``): that environment is Schematic's. Everything runs
through the flags service, exactly as the native API does; errors use millpond's
envelope (the SDK raises its ``ApiError`` for any non-2xx answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, ValidationError

from ...models.flags import CheckFlagRequest, EventBatch, FlagCheck
from ..accounts.service import Principal, authenticate
from ..deps import Services, services
from ..errors import ServiceError, forbidden
from ..flags.service import FlagService

router = APIRouter(prefix="/compat/schematic", tags=["compat: schematic"])

_CHECK_FIELDS = ("company_id", "error", "reason", "rule_id", "user_id", "value")


@dataclass(frozen=True)
class _Caller:
    who: Principal
    environment_id: str
    flags: FlagService


async def _caller(request: Request) -> _Caller:
    svc: Services = services(request)
    token = request.headers.get("x-schematic-api-key", "").strip()
    if not token:
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        token = bearer.strip() if scheme.lower() == "bearer" else ""
    if not token:
        raise ServiceError(401, "unauthorized", "missing API key: send 'X-Schematic-Api-Key'")
    who = await authenticate(svc.store, token)
    if who is None:
        raise ServiceError(401, "unauthorized", "unknown, revoked or expired API key")
    flags = svc.flags
    if flags is None:  # pragma: no cover - started by the lifespan
        raise ServiceError(503, "unavailable", "flags are not running")
    bound = await flags.access.binding(who)
    if bound is None:
        raise forbidden(
            "the Schematic API needs a key bound to a flags environment: make one with "
            "POST /v1/flags/environments/{env}/keys",
            "environment_required",
        )
    return _Caller(who, bound, flags)


Caller = Annotated[_Caller, Depends(_caller)]


def _check_data(check: FlagCheck, with_key: bool = False) -> dict[str, Any]:
    data = {name: getattr(check, name) for name in _CHECK_FIELDS}
    if with_key:
        data["flag"] = check.flag
    return data


@router.post("/flags/{key}/check")
async def check_flag(key: str, body: CheckFlagRequest, caller: Caller) -> dict[str, Any]:
    check = await caller.flags.check(caller.who, caller.environment_id, key, body)
    return {"data": _check_data(check), "params": {}}


@router.post("/flags/check")
async def check_flags(body: CheckFlagRequest, caller: Caller) -> dict[str, Any]:
    checks = await caller.flags.check_all(caller.who, caller.environment_id, body)
    return {"data": {"flags": [_check_data(c, True) for c in checks.flags]}, "params": {}}


class SchematicEvent(BaseModel):
    """Schematic's ``CreateEventRequestBody``."""

    event_type: Literal["identify", "track"]
    body: dict[str, Any] = Field(default_factory=dict)
    sent_at: datetime | None = None


class SchematicEventBatch(BaseModel):
    events: list[SchematicEvent] = Field(min_length=1, max_length=1000)


def _native(batch: SchematicEventBatch) -> EventBatch:
    """Schematic's events as millpond's (their bodies carry the same fields)."""
    events = [
        {**event.body, "event_type": event.event_type, "sent_at": event.sent_at}
        for event in batch.events
    ]
    try:
        return EventBatch.model_validate({"events": events})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ServiceError(422, "validation_error", problems) from None


@router.post("/event-batch")
async def event_batch(
    body: SchematicEventBatch, request: Request, caller: Caller
) -> dict[str, Any]:
    await caller.flags.ingest(caller.who, caller.environment_id, _native(body))
    now = datetime.now(UTC).isoformat()
    host = request.client.host if request.client is not None else ""
    agent = request.headers.get("user-agent", "")
    seen = {
        "captured_at": now,
        "event_id": None,
        "remote_addr": host,
        "remote_ip": host,
        "user_agent": agent,
    }
    return {"data": {"events": [seen for _ in body.events]}, "params": {}}
