"""The root Typer app: the root options, and each command group from its own module."""

from __future__ import annotations

from typing import Annotated

import typer

from .._version import __version__
from . import _profiles as profiles
from . import (
    backup,
    clusters,
    compat,
    completion,
    db,
    flags,
    generate,
    identities,
    issuers,
    keys,
    login,
    modules,
    query,
    schedules,
    service_accounts,
    status,
    track,
    transfer,
    up,
    users,
)
from ._context import DEFAULT_TIMEOUT, DEFAULT_URL, KEY_ENV, URL_ENV, ClientGroup, State
from ._output import OutputFormat
from ._profiles import PROFILE_ENV

HELP = """millpond: Postgres databases, realtime, reducers and feature flags, self-hosted.

`millpond up` runs the server. The other commands are clients of its HTTP API: they print
JSON (for scripts) unless given --format table (for people), put errors on stderr and
exit 1 when the server refuses or cannot be reached (2 for bad usage).

The API key comes from --key, else MILLPOND_API_KEY, else the admin key file that
`millpond up` writes ($MILLPOND_DATA_DIR/admin-key, else ./.millpond/admin-key), so on the
machine running the server the commands just work. Root options (--url, --key, --format,
--timeout) go anywhere on the line, except where the command has an option of that name
(import and export have their own --format, the file's):

\b
    millpond db create shop
    millpond db list --format table
    millpond query -d admin/shop -q 'SELECT count(*) FROM orders'
    millpond query -d admin/shop -f migrations.sql
    MILLPOND_URL=https://db.example.com MILLPOND_API_KEY=mp_... millpond me
"""

app = typer.Typer(
    name="millpond",
    cls=ClientGroup,
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"millpond {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option(
            "--url",
            envvar=URL_ENV,
            metavar="URL",
            help="The millpond server's URL.",
        ),
    ] = DEFAULT_URL,
    key: Annotated[
        str | None,
        typer.Option(
            "-k",
            "--key",
            envvar=KEY_ENV,
            metavar="KEY",
            help="Your API key (mp_…). Prefer the environment variable: it keeps the key out "
            "of `ps` and shell history. Default: the local server's admin key file.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            help="json: one JSON document, for scripts; table: aligned columns, for people.",
        ),
    ] = OutputFormat.json,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            min=0.001,
            help="Give up on a request after this long.",
        ),
    ] = DEFAULT_TIMEOUT,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            envvar=PROFILE_ENV,
            metavar="NAME",
            help="The saved login to use (millpond login): its URL and key, unless --url or "
            "--key say otherwise. Default: the one named default, if any.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print millpond's version and exit.",
        ),
    ] = False,
) -> None:
    source = None
    if key:
        # compared by name: typer may bring its own copy of click's ParameterSource
        from_env = getattr(ctx.get_parameter_source("key"), "name", None) == "ENVIRONMENT"
        source = KEY_ENV if from_env else "--key"
    # compared by name: typer may bring its own copy of click's ParameterSource
    url_given = getattr(ctx.get_parameter_source("url"), "name", None) != "DEFAULT"
    if profile is not None:
        profiles.check_name(profile)
    saved = profiles.get(profile or profiles.DEFAULT_PROFILE) if not (key and url_given) else None
    if profile is not None and saved is None and not key and ctx.invoked_subcommand != "login":
        raise typer.BadParameter(
            f"no saved login {profile!r}: make it with `millpond login --profile {profile}`",
            param_hint="--profile",
        )
    if saved is not None and not url_given:
        url = saved.url
    ctx.obj = State(
        url=url,
        key=key or None,
        key_source=source,
        format=output,
        timeout=timeout,
        profile=profile,
    )


app.command("up")(up.up)
app.command("health")(status.health)
app.command("login")(login.login)
app.command("logout")(login.logout)
app.command("whoami")(login.whoami)
app.command("me")(status.me)
app.add_typer(db.app, name="db")
app.command("query")(query.query)
app.command("import")(transfer.import_)
app.command("export")(transfer.export)
app.command("jobs")(transfer.jobs)
app.command("publish")(modules.publish)
app.command("call")(modules.call)
app.command("logs")(modules.logs)
app.command("generate")(generate.generate)
app.add_typer(modules.app, name="module")
app.add_typer(identities.app, name="identities")
app.command("schedules")(schedules.schedules)
modules.app.add_typer(issuers.app, name="issuers")
app.add_typer(keys.app, name="key")
app.add_typer(service_accounts.app, name="service-account")
app.add_typer(users.app, name="user")
app.add_typer(clusters.app, name="clusters")
app.command("track")(track.track)
app.add_typer(flags.app, name="flags")
app.add_typer(flags.companies_app, name="companies")
app.add_typer(compat.app, name="compat")
app.command("backup")(backup.backup)
app.command("restore")(backup.restore)
app.command("completion")(completion.completion)


def main() -> None:
    completion.answering()  # the shell asking what may come next: Typer answers
    app(complete_var=completion.COMPLETE_VAR)  # (whatever the program's name)
