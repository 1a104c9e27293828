"""The API keys page: the caller's keys (a service account's key sees that account's),
create one — its secret shown on that answer only, never stored or sent again — and
revoke. Revoking the key this session logged in with ends the session."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ...models import ApiKeyCreate, ApiKeyCreated
from ..accounts import service as accounts
from ..errors import ServiceError
from .pages import (
    Console,
    form_session,
    platform_page,
    positive_number,
    redirect,
    to_login,
    validated,
)

router = APIRouter(include_in_schema=False)

_DAY_S = 86400


async def _keys_page(
    console: Console,
    status: int = 200,
    flash: str | None = None,
    created: ApiKeyCreated | None = None,
) -> HTMLResponse:
    keys = await accounts.list_keys(console.svc.store, console.who)
    return console.render(
        "keys.html",
        status,
        title="API keys",
        section="keys",
        keys=keys,
        created=created,
        flash=flash or (None if created else await console.notice()),
        flash_kind="error" if flash else "ok",
    )


@router.get("/keys", response_class=HTMLResponse)
async def keys_page(request: Request) -> Response:
    return await platform_page(request, "API keys", "keys", _keys_page)


def _expiry(text: str) -> int | None:
    """Days typed in the form, in seconds ('' for a key that does not expire)."""
    days = positive_number(text, "the expiry", "days")
    return None if days is None else max(1, round(days * _DAY_S))


def key_form(form: dict[str, str]) -> ApiKeyCreate:
    """The new key a form describes (name, scope, expiry in days)."""
    return validated(
        ApiKeyCreate,
        name=form.get("name", "").strip() or None,
        scope="read" if form.get("scope") == "read" else "write",
        expires_in_seconds=_expiry(form.get("expires_in_days", "")),
    )


@router.post("/keys/new", response_class=HTMLResponse)
async def create_key(request: Request) -> Response:
    console, form = await form_session(request)
    if console is None:
        return to_login(request)
    try:
        console.require_platform()
        limit = accounts.key_limit(console.svc.settings, console.who)
        created = await accounts.create_key(console.svc.store, console.who, key_form(form), limit)
    except ServiceError as exc:
        if exc.code == "environment_key":
            return console.error(exc, "API keys", section="keys")
        return await _keys_page(console, exc.status, f"{exc.message} ({exc.code})")
    # the secret goes in this answer only (never into the session's notice, which is
    # stored): the page says so, and the browser is told not to keep it
    return await _keys_page(console, 201, created=created)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str) -> Response:
    console, _ = await form_session(request)
    if console is None:
        return to_login(request)
    try:
        console.require_platform()
        await accounts.revoke_key(console.svc.store, console.who, key_id)
    except ServiceError as exc:
        if exc.code == "environment_key":
            return console.error(exc, "API keys", section="keys")
        return await _keys_page(console, exc.status, f"{exc.message} ({exc.code})")
    if key_id == console.who.key_id:
        return redirect("/console/login?notice=expired")
    await console.notify("Revoked the key.")
    return redirect("/console/keys")
