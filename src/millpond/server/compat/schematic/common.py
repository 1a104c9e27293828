"""What every route of the Schematic API shares: the caller (its key and environment), the
error shape the SDK parses, and query-string helpers."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...accounts.service import Principal, authenticate
from ...deps import Services, services
from ...errors import ServiceError, forbidden
from ...flags.service import FlagService

PREFIX = "/compat/schematic"

Limit = Annotated[int, Query(ge=1, le=1000, description="Page limit (default 100)")]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1, description="Page offset (default 0)")]
Ids = Annotated[
    list[Annotated[str, Field(max_length=64)]] | None,
    Query(max_length=100, description="Only these ids"),
]
Text = Annotated[str | None, Query(max_length=255)]


class SchematicError(BaseModel):
    """Schematic's error body (the SDK's ``ApiError`` model: ``error`` is the message),
    with millpond's stable ``code`` and ``details`` beside it."""

    error: str = Field(description="What went wrong")
    code: str = Field(description="millpond's stable error code, e.g. company_not_found")
    details: Any = Field(default=None, description="More about it, when there is more")


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


def invalid_input(exc: ValidationError) -> ServiceError:
    """A request the millpond models refuse, as the validation error the API answers."""
    problems = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
    message = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else str(e["msg"])
        for e in problems
    )
    return ServiceError(422, "validation_error", message, problems)


_BRACKETED = re.compile(r"^(\w+)\[([^\]]+)\]$")


def bracketed(request: Request, name: str) -> dict[str, str]:
    """A map the SDK sends in the query string as ``name[key]=value``."""
    found: dict[str, str] = {}
    for param, value in request.query_params.multi_items():
        match = _BRACKETED.match(param)
        if match is not None and match.group(1) == name:
            found[match.group(2)] = value
    return found


class SchematicErrors:
    """Every error answered under ``/compat/schematic`` — by its routes, by FastAPI's
    validation, by the body limits, by the last-resort handler — in Schematic's shape
    ``{"error": "<message>", "code": …, "details": …}`` (the SDK parses ``error`` as a
    string); invalid input is 400, as Schematic answers it (millpond's own API says 422)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def reshaping_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            status, body = reshape(start["status"], b"".join(chunks))
            headers = [
                (name, value)
                for name, value in start.get("headers", [])
                if name.lower() != b"content-length"
            ]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, reshaping_send)


def reshape(status: int, body: bytes) -> tuple[int, bytes]:
    """millpond's error envelope as Schematic's error body (anything else unchanged)."""
    try:
        data = json.loads(body)
    except ValueError:
        return status, body
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict) or "code" not in error:
        return status, body
    shaped = SchematicError(
        error=str(error.get("message") or error["code"]),
        code=str(error["code"]),
        details=error.get("details"),
    )
    return (400 if status == 422 else status), shaped.model_dump_json().encode()
