"""A database's module in the console: the running version's tables and reducers, a form
to call each reducer (its arguments typed as the module declares them), the published
versions, the scheduled runs, who is connected, and the module's log (its page follows
new lines). Everything is the modules service's, as the API's module routes are: a
call here is a call as the session's principal, with the same checks and errors."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ..errors import ServiceError
from ..modules.service import ModuleService
from .databases import database_url
from .pages import Console, form_session, platform_page, to_login

router = APIRouter(include_in_schema=False)

TEXT_TYPES = ("text", "numeric", "timestamptz", "date", "uuid", "bytea", "identity")
"""Argument types whose JSON form is a string: what is typed is sent as it is."""
LOG_LINES = 200


def _service(console: Console) -> ModuleService:
    service = console.svc.extra.get("modules")
    if not isinstance(service, ModuleService):  # pragma: no cover - started by the lifespan
        raise ServiceError(503, "unavailable", "modules are not running")
    return service


def callable_reducers(definition: dict[str, Any]) -> list[dict[str, Any]]:
    """The reducers a client may call (not the lifecycle or scheduled ones)."""
    return [
        r
        for r in definition.get("reducers", [])
        if not r.get("lifecycle") and not r.get("scheduled")
    ]


def argument(param: dict[str, Any], text: str) -> tuple[bool, Any]:
    """(given, value) of a form's text for ``param``: left empty, a parameter with a
    default is not given (the default applies) and a nullable one is null; text types
    are sent as typed; the others are read as JSON (numbers, true/false, arrays,
    objects)."""
    kind = param["type"]
    if text == "" and param.get("has_default"):
        return False, None
    if text == "" and kind.get("nullable"):
        return True, None
    if kind["name"] in TEXT_TYPES and not kind.get("array"):
        return True, text
    try:
        return True, json.loads(text)
    except ValueError:
        raise ServiceError(
            422,
            "validation_error",
            f"{param['name']}: write a JSON value for a {_type_name(kind)}, e.g. "
            + ("[1, 2]" if kind.get("array") else "42" if "int" in kind["name"] else '{"a": 1}'),
        ) from None


def _type_name(kind: dict[str, Any]) -> str:
    name = str(kind.get("record") or kind["name"])
    return name + ("[]" if kind.get("array") else "") + ("?" if kind.get("nullable") else "")


async def _optional(call: Any) -> Any:
    """What an owner-and-admins listing returns, or None for other callers (and when the
    module has nothing of the kind: no schedule tables, no lifecycle reducers)."""
    try:
        return await call
    except ServiceError as exc:
        if exc.status == 403 or exc.code in ("connections_not_tracked", "no_schedules"):
            return None
        raise


async def _module_page(
    console: Console,
    full_name: str,
    status: int = 200,
    called: dict[str, Any] | None = None,
) -> HTMLResponse:
    db = await console.svc.databases.get(console.who, full_name)
    service = _service(console)
    try:
        schema = await service.schema(console.who, full_name)
    except ServiceError as exc:
        if exc.status != 404 or exc.code == "database_not_found":
            raise
        schema = None
    context: dict[str, Any] = {"schema": schema, "versions": None, "schedules": None}
    if schema is not None:
        context["versions"] = await _optional(service.versions(console.who, full_name))
        context["schedules"] = await _optional(
            service.scheduler.schedules(console.who, full_name, 200)
        )
        context["connections"] = await _optional(
            service.lifecycle.connections(console.who, full_name)
        )
        context["reducers"] = callable_reducers(schema["definition"])
    return console.render(
        "module.html",
        status,
        title=f"Module · {db.full_name}",
        section="databases",
        db=db,
        url=database_url(db.full_name),
        called=called,
        type_name=_type_name,
        **context,
    )


@router.get("/databases/{owner}/{name}/module", response_class=HTMLResponse)
async def module_page(request: Request, owner: str, name: str) -> Response:
    return await platform_page(
        request, "Module", "databases", lambda console: _module_page(console, f"{owner}/{name}")
    )


@router.post("/databases/{owner}/{name}/module/call", response_class=HTMLResponse)
async def call_reducer(request: Request, owner: str, name: str) -> Response:
    """Call the form's reducer; the page again, with the outcome or the error."""
    console, form = await form_session(request)
    if console is None:
        return to_login(request)
    full_name = f"{owner}/{name}"
    reducer = form.get("reducer", "")
    try:
        console.require_platform()
        schema = await _service(console).schema(console.who, full_name)
        found = [r for r in callable_reducers(schema["definition"]) if r["name"] == reducer]
        if not found:
            raise ServiceError(404, "reducer_not_found", f"the module has no reducer {reducer!r}")
        args = {}
        for param in found[0]["params"]:
            given, value = argument(param, form.get(f"arg:{param['name']}", ""))
            if given:
                args[param["name"]] = value
        outcome = await _service(console).call(console.who, full_name, reducer, args)
    except ServiceError as exc:
        if exc.code in ("database_not_found", "environment_key"):
            return console.error(exc, "Module", section="databases")
        called = {"reducer": reducer, "form": form, "error": exc}
        return await _module_page(console, full_name, exc.status, called)
    called = {"reducer": reducer, "form": form, "outcome": outcome.model_dump(by_alias=True)}
    return await _module_page(console, full_name, 200, called)


@router.get("/databases/{owner}/{name}/module/logs", response_class=HTMLResponse)
async def logs_page(request: Request, owner: str, name: str, follow: str = "1") -> Response:
    """The newest log lines; the page reloads itself every 2 s while ``follow``."""
    return await platform_page(
        request,
        "Module log",
        "databases",
        lambda console: _logs(console, f"{owner}/{name}", follow == "1"),
    )


async def _logs(console: Console, full_name: str, follow: bool) -> HTMLResponse:
    db = await console.svc.databases.get(console.who, full_name)
    lines = await _service(console).logs(console.who, full_name, 0, LOG_LINES, LOG_LINES)
    return console.render(
        "module_logs.html",
        title=f"Module log · {db.full_name}",
        section="databases",
        db=db,
        url=database_url(db.full_name),
        lines=list(reversed(lines)),
        follow=follow,
    )
