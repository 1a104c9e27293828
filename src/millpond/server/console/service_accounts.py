"""Service accounts in the console: the user's accounts for programs (each with its own
keys, acting for the user but not as them: they cannot manage accounts), create one,
its keys (created and shown once, revoked), delete it with its keys. The accounts
service's, as ``/v1/service-accounts`` is; a service account's own key is refused, as
the API refuses it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ...models import ApiKeyCreated, KeyRevoke
from ..accounts import service as accounts
from ..errors import ServiceError
from .keys import key_form
from .pages import Console, form_session, platform_page, redirect, to_login

router = APIRouter(include_in_schema=False)
LIST = "/console/service-accounts"


def account_url(sa_id: int) -> str:
    return f"{LIST}/{sa_id}"


async def _list_page(console: Console, status: int = 200, flash: str | None = None) -> Response:
    found = await accounts.list_service_accounts(console.svc.store, console.who)
    return console.render(
        "service_accounts.html",
        status,
        title="Service accounts",
        section="keys",
        accounts=found,
        flash=flash or await console.notice(),
        flash_kind="error" if flash else "ok",
    )


@router.get("/service-accounts", response_class=HTMLResponse)
async def list_page(request: Request) -> Response:
    return await platform_page(request, "Service accounts", "keys", _list_page)


async def _account_page(
    console: Console,
    sa_id: int,
    status: int = 200,
    flash: str | None = None,
    created: ApiKeyCreated | None = None,
) -> Response:
    store = console.svc.store
    account = await accounts.get_service_account(store, console.who, sa_id)
    return console.render(
        "service_account.html",
        status,
        title=f"Service account {account.name}",
        section="keys",
        account=account,
        url=account_url(sa_id),
        keys=await accounts.list_service_account_keys(store, console.who, sa_id),
        created=created,
        flash=flash or (None if created else await console.notice()),
        flash_kind="error" if flash else "ok",
    )


@router.get("/service-accounts/{sa_id}", response_class=HTMLResponse)
async def account_page(request: Request, sa_id: int) -> Response:
    return await platform_page(
        request, "Service account", "keys", lambda console: _account_page(console, sa_id)
    )


@router.post("/service-accounts/new")
async def create_account(request: Request) -> Response:
    console, form = await form_session(request)
    if console is None:
        return to_login(request)
    try:
        console.require_platform()
        name = form.get("name", "").strip()
        if not 1 <= len(name) <= 100:
            raise ServiceError(422, "validation_error", "a name of 1 to 100 characters")
        made = await accounts.create_service_account(console.svc.store, console.who, name)
    except ServiceError as exc:
        if exc.code == "environment_key" or exc.status == 403:
            return console.error(exc, "Service accounts", section="keys")
        return await _list_page(console, exc.status, f"{exc.message} ({exc.code})")
    await console.notify(f"Created the service account {made.name}.")
    return redirect(account_url(made.id))


@router.post("/service-accounts/{sa_id}/{action}", response_class=HTMLResponse)
async def account_action(request: Request, sa_id: int, action: str) -> Response:
    """``keys`` (a new key), ``revoke`` (the form's ``key_id``), ``delete``."""
    if action not in ("keys", "revoke", "delete"):
        raise ServiceError(404, "not_found", f"no console action {action!r}")
    console, form = await form_session(request)
    if console is None:
        return to_login(request)
    store, who = console.svc.store, console.who
    try:
        console.require_platform()
        if action == "keys":
            limit = accounts.key_limit(console.svc.settings, who)
            created = await accounts.create_service_account_key(
                store, who, sa_id, key_form(form), limit
            )
            return await _account_page(console, sa_id, 201, created=created)  # shown once
        if action == "revoke":
            body = KeyRevoke(key_id=form.get("key_id") or "-")
            if not await accounts.revoke_service_account_keys(store, who, sa_id, body):
                raise ServiceError(404, "key_not_found", "no such active key of this account")
            await console.notify("Revoked the key.")
            return redirect(account_url(sa_id))
        await accounts.delete_service_account(store, who, sa_id)
    except ServiceError as exc:
        if exc.status in (401, 403) or exc.code == "service_account_not_found":
            return console.error(exc, "Service account", section="keys")
        return await _account_page(console, sa_id, exc.status, f"{exc.message} ({exc.code})")
    await console.notify("Deleted the service account and its keys.")
    return redirect(LIST)
