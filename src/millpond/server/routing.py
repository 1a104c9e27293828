"""The hottest routes (reducer calls, ``POST /v1/query``) as plain Starlette routes, put
before every other: the same checks, errors and answers as their FastAPI routes (which
stay, to document them in the OpenAPI schema), without FastAPI's per-request dependency
solving and validation machinery. Their errors go through the app's handlers like any
route's; these helpers read bodies by FastAPI's rules so that the errors are the same."""

from __future__ import annotations

import email.message
import json
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

M = TypeVar("M", bound=BaseModel)


class NamedRoute(Route):
    """A route the metrics name by its template, as FastAPI's are."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self  # FastAPI's router names only its own routes
        await super().handle(scope, receive, send)


async def json_body(request: Request) -> Any:
    """The body as FastAPI reads one: None when empty, parsed JSON when the content type
    is JSON (``application/json``, ``…+json``), else the bytes (which then fail the
    route's validation)."""
    body = await request.body()
    if not body:
        return None
    content_type = request.headers.get("content-type")
    if not content_type or not is_json(content_type):
        return body
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error"}]
        ) from exc
    except ValueError as exc:  # not text in any encoding JSON allows
        raise HTTPException(400, "There was an error parsing the body") from exc


def model_body(value: Any, model: type[M]) -> M:
    """``value`` (from :func:`json_body`) as ``model``, refused as FastAPI refuses it."""
    if value is None:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required"}
        raise RequestValidationError([missing])
    try:
        return model.model_validate(value, from_attributes=True)  # (as FastAPI validates)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from None


def is_json(content_type: str) -> bool:
    if content_type == "application/json":
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )
