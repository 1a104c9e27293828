"""``millpond service-account``: non-human principals with their own keys."""

from __future__ import annotations

from typing import Annotated

import typer

from ..models import ApiKey, ServiceAccount
from ._context import confirm, group, path_segment, state
from ._output import plural, show_action, show_list, show_one
from ._paging import All, Limit, whole
from .keys import ExpiresIn, KeyName, ReadOnly, scope

app = group(
    "Service accounts: principals for programs, owned by you, with their own keys. Their "
    "keys act with your rights on databases, limited by the key's scope."
)

AccountId = Annotated[
    int,
    typer.Argument(
        metavar="ID",
        help="The service account's id (from `millpond service-account list`).",
        show_default=False,
    ),
]


@app.command("list")
def list_(ctx: typer.Context, limit: Limit = 100, every: All = False) -> None:
    """List your service accounts."""
    st = state(ctx)
    with st.client() as mp:
        found = whole(mp.service_accounts.list(), limit, every)
    show_list(st.format, found, ServiceAccount)


@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="A name for the service account.", show_default=False)
    ],
) -> None:
    """Create a service account; then give it a key with `create-key ID`."""
    st = state(ctx)
    with st.client() as mp:
        show_one(st.format, mp.service_accounts.create(name))


@app.command()
def get(ctx: typer.Context, account_id: AccountId) -> None:
    """Show one service account."""
    st = state(ctx)
    with st.client() as mp:
        show_one(st.format, mp.service_accounts.get(account_id))


@app.command()
def delete(
    ctx: typer.Context,
    account_id: AccountId,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", help="Do not ask for confirmation (needed without a terminal)."
        ),
    ] = False,
) -> None:
    """Delete a service account and revoke all its keys. Asks first unless --yes."""
    confirm(
        f"Delete service account {account_id} and revoke its keys?",
        yes,
        f"delete service account {account_id}",
    )
    st = state(ctx)
    with st.client() as mp:
        mp.service_accounts.delete(account_id)
    show_action(st.format, {"deleted": account_id}, f"Deleted service account {account_id}.")


@app.command("create-key")
def create_key(
    ctx: typer.Context,
    account_id: AccountId,
    name: KeyName = None,
    read_only: ReadOnly = False,
    expires_in: ExpiresIn = None,
) -> None:
    """Create a key for a service account; prints it with its secret, shown this once only."""
    st = state(ctx)
    with st.client() as mp:
        created = mp.service_accounts.create_key(account_id, name, scope(read_only), expires_in)
        show_one(st.format, created)


@app.command("list-keys")
def list_keys(
    ctx: typer.Context, account_id: AccountId, limit: Limit = 100, every: All = False
) -> None:
    """List a service account's keys (never their secrets)."""
    st = state(ctx)
    with st.client() as mp:
        found = whole(mp.service_accounts.list_keys(account_id), limit, every)
    show_list(st.format, found, ApiKey)


@app.command("revoke-keys")
def revoke_keys(
    ctx: typer.Context,
    account_id: AccountId,
    key_id: Annotated[
        str | None,
        typer.Option(
            "--key-id",
            metavar="KEY_ID",
            help="Revoke only this key (default: all of the service account's keys).",
        ),
    ] = None,
) -> None:
    """Revoke a service account's keys: all of them, or one with --key-id. Prints how many
    were revoked."""
    if key_id is not None:
        path_segment(key_id)
    st = state(ctx)
    with st.client() as mp:
        count = mp.service_accounts.revoke_keys(account_id, key_id=key_id)
    show_action(st.format, {"count": count}, f"Revoked {plural(count, 'key')}.")
