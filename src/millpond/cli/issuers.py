"""``millpond module issuers …``: login providers whose tokens a database's module accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..models.modules import TokenIssuer
from ._context import database_name, fail, group, state
from ._output import show_list, show_one
from ._paging import All, Limit, whole

app = group(
    "Login providers (OpenID Connect, or any JWT issuer) whose tokens the module accepts: "
    "their end users call reducers and subscribe as the identity sha256(issuer, subject)."
)

Database = Annotated[
    str,
    typer.Argument(metavar="OWNER/NAME", help="The database.", callback=database_name),
]
Issuer = Annotated[str, typer.Argument(metavar="ISSUER", help="The tokens' iss, exactly.")]


@app.command("list")
def list_(ctx: typer.Context, database: Database, limit: Limit = 100, every: All = False) -> None:
    """List the login providers the module trusts (owner and admins)."""
    st = state(ctx)
    with st.client() as mp:
        found = whole(mp.modules.issuers(database), limit, every)
    show_list(st.format, found, TokenIssuer)


def _claims(pairs: list[str]) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            fail(f"--claim takes NAME=VALUE, not {pair!r}", code=2)
        try:
            claims[name] = json.loads(text)
        except ValueError:
            claims[name] = text  # a bare word is a string
    return claims


@app.command()
def add(
    ctx: typer.Context,
    database: Database,
    issuer: Issuer,
    audience: Annotated[
        list[str],
        typer.Option("--audience", "-a", help="A token's aud must be one of these (repeat)."),
    ],
    jwks_file: Annotated[
        Path | None,
        typer.Option("--jwks-file", help="The issuer's public keys: a JSON Web Key Set file."),
    ] = None,
    jwks_uri: Annotated[
        str | None,
        typer.Option("--jwks-uri", help="Where the server fetches the issuer's keys."),
    ] = None,
    claim: Annotated[
        list[str] | None,
        typer.Option(
            "--claim",
            help="A claim tokens must carry: NAME=VALUE, the value as JSON or a bare word "
            "(repeat).",
        ),
    ] = None,
) -> None:
    """Trust a login provider's tokens (or change how). Without --jwks-file or --jwks-uri
    the server finds the keys through ISSUER/.well-known/openid-configuration."""
    st = state(ctx)
    jwks = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text())
        except (OSError, ValueError) as exc:
            fail(f"cannot read the key set {jwks_file}: {exc}", code=2)
    with st.client() as mp:
        added = mp.modules.put_issuer(
            database,
            issuer,
            audiences=audience,
            jwks=jwks,
            jwks_uri=jwks_uri,
            required_claims=_claims(claim or []),
        )
    show_one(st.format, added)


@app.command()
def remove(ctx: typer.Context, database: Database, issuer: Issuer) -> None:
    """Stop trusting a login provider: its tokens are refused and their realtime
    connections close at once."""
    st = state(ctx)
    with st.client() as mp:
        mp.modules.remove_issuer(database, issuer)
    typer.echo(f"{database} no longer accepts tokens of {issuer}")
