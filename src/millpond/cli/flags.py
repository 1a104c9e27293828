"""``millpond flags`` and ``millpond companies``: manage and check feature flags, and the
companies and users they are checked for, in one flags environment (``-e ENV``, else
``$MILLPOND_ENVIRONMENT``, else the environment the key is bound to)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import typer

from ..client import Millpond
from ..models.flags import Company, EnvironmentType, Flag, FlagCheck, User
from ..models.flags import Environment as FlagEnvironment
from ._context import confirm, group, state
from ._output import show_action, show_list, show_one
from ._paging import PAGE, All, Limit, page_size, shown, whole

ENVIRONMENT_ENV = "MILLPOND_ENVIRONMENT"


class EnvironmentKind(StrEnum):
    development = "development"
    staging = "staging"
    production = "production"


_ENVIRONMENT_TYPES: dict[EnvironmentKind, EnvironmentType] = {
    EnvironmentKind.development: "development",
    EnvironmentKind.staging: "staging",
    EnvironmentKind.production: "production",
}


class KeyKind(StrEnum):
    read = "read"
    write = "write"


app = group(
    "Feature flags: list, create, update, toggle, delete, restore and check them. Rules "
    "are JSON (see docs/api.md); `millpond flags check` asks the server for a company/user."
)
environments_app = group(
    "Your account's flags environments (development, production…): list them, create one. "
    "An application gets a key bound to one: `millpond flags keys create -e ENV`."
)
keys_app = group(
    "Keys bound to one flags environment: they reach its flags, companies and users only "
    "(the key to give an application)."
)
app.add_typer(environments_app, name="environments")
app.add_typer(keys_app, name="keys")
companies_app = group(
    "The companies (and their users) flags are checked for: list, get, create or update, "
    "delete. Companies and users are addressed by any of their keys (id=acme)."
)

Environment = Annotated[
    str | None,
    typer.Option(
        "-e",
        "--environment",
        envvar=ENVIRONMENT_ENV,
        metavar="ENV",
        help="The flags environment (id or name). Default: the one the key is bound to.",
        show_default=False,
    ),
]
FlagKey = Annotated[str, typer.Argument(metavar="KEY", help="The flag's key.", show_default=False)]
CompanyKeys = Annotated[
    list[str] | None,
    typer.Option(
        "--company",
        metavar="NAME=VALUE",
        help="A key of the company (repeat for several), e.g. --company id=acme.",
        show_default=False,
    ),
]
UserKeys = Annotated[
    list[str] | None,
    typer.Option(
        "--user",
        metavar="NAME=VALUE",
        help="A key of the user (repeat for several), e.g. --user email=w@acme.net.",
        show_default=False,
    ),
]


def keys_option(values: list[str] | None, option: str) -> dict[str, str] | None:
    """``["id=acme", "email=a@b.c"]`` → ``{"id": "acme", "email": "a@b.c"}``."""
    if not values:
        return None
    keys: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise typer.BadParameter(
                f"keys are given as NAME=VALUE (e.g. id=acme), not {item!r}", param_hint=option
            )
        keys[name] = value
    return keys


def _json_option(value: str | None, what: str, option: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{what} must be JSON: {exc}", param_hint=option) from None


def _rules(value: str | None) -> list[dict[str, Any]]:
    rules = _json_option(value, "--rules", "'--rules'")
    if rules is None:
        return []
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise typer.BadParameter("--rules is a JSON array of rule objects", param_hint="'--rules'")
    return rules


# -- flags ---------------------------------------------------------------------------------


@environments_app.command("list")
def environments_list(ctx: typer.Context, limit: Limit = 100, every: All = False) -> None:
    """List your account's environments (an account key: not one bound to an environment)."""
    st = state(ctx)
    with st.client() as mp:
        found = whole(mp.flags.environments(), limit, every)
    show_list(st.format, found, FlagEnvironment)


@environments_app.command("create")
def environments_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Its name, e.g. production.")],
    environment_type: Annotated[
        EnvironmentKind | None,
        typer.Option("--type", help="What it is for (default: development).", show_default=False),
    ] = None,
) -> None:
    """Create an environment of your account.

    \b
        millpond flags environments create production --type production
        millpond flags keys create -e production --name web
    """
    st = state(ctx)
    with st.client() as mp:
        kind = _ENVIRONMENT_TYPES[environment_type] if environment_type else None
        show_one(st.format, mp.flags.create_environment(name, environment_type=kind))


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    environment: Environment = None,
    name: Annotated[
        str | None, typer.Option("--name", help="A name to know it by.", show_default=False)
    ] = None,
    scope: Annotated[
        KeyKind, typer.Option("--scope", help="read: checks only; write: changes too.")
    ] = KeyKind.write,
) -> None:
    """Create a key bound to an environment (-e; its secret is shown once)."""
    st = state(ctx)
    with st.client(environment=environment) as mp:
        show_one(st.format, mp.flags.create_key(name=name, scope=scope.value))


@app.command("list")
def list_(
    ctx: typer.Context,
    environment: Environment = None,
    deleted: Annotated[bool, typer.Option("--deleted", help="Include deleted flags.")] = False,
    limit: Limit = 100,
    every: All = False,
) -> None:
    """List the flags by key."""
    st = state(ctx)
    with st.client(environment=environment) as mp:
        found = mp.flags.iter(include_deleted=deleted, page_size=page_size(limit, every))
        flags = shown(found, limit, every)
    show_list(st.format, flags, Flag)


@app.command()
def get(ctx: typer.Context, key: FlagKey, environment: Environment = None) -> None:
    """Show a flag (deleted ones too)."""
    st = state(ctx)
    with st.client(environment=environment) as mp:
        show_one(st.format, mp.flags.get(key, include_deleted=True))


@app.command()
def create(
    ctx: typer.Context,
    key: FlagKey,
    environment: Environment = None,
    name: Annotated[str, typer.Option("--name", metavar="NAME", help="Display name.")] = "",
    description: Annotated[
        str, typer.Option("--description", metavar="TEXT", help="Free text.")
    ] = "",
    on: Annotated[bool, typer.Option("--on", help="Default value true (else false).")] = False,
    feature: Annotated[
        str | None, typer.Option("--feature", metavar="FEATURE_ID", help="The feature it gates.")
    ] = None,
    rules: Annotated[
        str | None,
        typer.Option("--rules", metavar="JSON", help="Its rules, a JSON array (see docs/api.md)."),
    ] = None,
) -> None:
    """Create a flag."""
    parsed = _rules(rules)
    st = state(ctx)
    with st.client(environment=environment) as mp:
        made = mp.flags.create(
            key,
            name=name,
            description=description,
            default_value=on,
            feature_id=feature,
            rules=parsed,
        )
        show_one(st.format, made)


@app.command()
def update(
    ctx: typer.Context,
    key: FlagKey,
    environment: Environment = None,
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="Display name.")
    ] = None,
    description: Annotated[
        str | None, typer.Option("--description", metavar="TEXT", help="Free text.")
    ] = None,
    default: Annotated[
        bool | None, typer.Option("--on/--off", help="Set the default value.", show_default=False)
    ] = None,
    feature: Annotated[
        str | None, typer.Option("--feature", metavar="FEATURE_ID", help="Gate this feature.")
    ] = None,
    no_feature: Annotated[bool, typer.Option("--no-feature", help="Gate no feature.")] = False,
    rules: Annotated[
        str | None,
        typer.Option("--rules", metavar="JSON", help="Replace all its rules (a JSON array)."),
    ] = None,
) -> None:
    """Change a flag's name, description, default value, feature or rules."""
    if feature is not None and no_feature:
        raise typer.BadParameter(
            "give --feature or --no-feature, not both", param_hint="'--feature'"
        )
    parsed = _rules(rules) if rules is not None else None
    st = state(ctx)
    with st.client(environment=environment) as mp:
        if parsed is not None:
            mp.flags.set_rules(key, parsed)
        changed = mp.flags.update(
            key,
            name=name,
            description=description,
            default_value=default,
            feature_id=feature,
            clear_feature=no_feature,
        )
        show_one(st.format, changed)


@app.command()
def toggle(ctx: typer.Context, key: FlagKey, environment: Environment = None) -> None:
    """Flip a flag's default value."""
    st = state(ctx)
    with st.client(environment=environment) as mp:
        show_one(st.format, mp.flags.toggle(key))


@app.command()
def delete(
    ctx: typer.Context,
    key: FlagKey,
    environment: Environment = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask to confirm.")] = False,
) -> None:
    """Delete a flag (soft: `millpond flags restore` brings it back)."""
    confirm(f"Delete flag {key}?", yes, f"delete flag {key}")
    st = state(ctx)
    with st.client(environment=environment) as mp:
        mp.flags.delete(key)
    show_action(st.format, {"deleted": key}, f"deleted flag {key} (restore brings it back)")


@app.command()
def purge(
    ctx: typer.Context,
    key: FlagKey,
    environment: Environment = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask to confirm.")] = False,
) -> None:
    """Hard delete a deleted flag, for good (the audit log keeps its record)."""
    confirm(f"Purge flag {key} for good?", yes, f"purge flag {key}")
    st = state(ctx)
    with st.client(environment=environment) as mp:
        mp.flags.purge(key)
    show_action(st.format, {"purged": key}, f"purged flag {key}")


@app.command()
def restore(ctx: typer.Context, key: FlagKey, environment: Environment = None) -> None:
    """Restore a deleted flag."""
    st = state(ctx)
    with st.client(environment=environment) as mp:
        show_one(st.format, mp.flags.restore(key))


@app.command("import-flypper")
def import_flypper(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Argument(
            metavar="URL",
            help="The SQLAlchemy URL of the database holding flypper-sqlalchemy's tables, "
            "e.g. postgresql+psycopg://user:password@host/app (needs SQLAlchemy and the "
            "database's driver).",
            show_default=False,
        ),
    ],
    environment: Environment = None,
) -> None:
    """Copy flypper-sqlalchemy's flags (its flypper_flags table) into the environment:
    each created, updated or left unchanged, deleted ones kept deleted; running it again
    changes nothing. Exits 1 if a flag could not be copied (the others are)."""
    from ..flags import import_flypper as copy

    st = state(ctx)
    with st.client(environment=environment) as mp:
        done = copy(mp, url)
    failed = [(name, str(outcome)) for name, outcome in done if isinstance(outcome, Exception)]
    copied = [(name, outcome) for name, outcome in done if not isinstance(outcome, Exception)]
    summary = {"flags": [{"name": n, "outcome": o} for n, o in copied]}
    lines = [f"{outcome} flag {name}" for name, outcome in copied] or ["no flags to import"]
    show_action(st.format, summary | {"failed": dict(failed)}, "\n".join(lines))
    for name, error in failed:
        typer.echo(f"error: flag {name!r} was not imported: {error}", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def check(
    ctx: typer.Context,
    key: Annotated[
        str | None,
        typer.Argument(metavar="[KEY]", help="The flag (none: every flag).", show_default=False),
    ] = None,
    environment: Environment = None,
    company: CompanyKeys = None,
    user: UserKeys = None,
) -> None:
    """Check a flag (or every flag) for a company and/or user, with the reason."""
    c, u = keys_option(company, "'--company'"), keys_option(user, "'--user'")
    st = state(ctx)
    with st.client(environment=environment) as mp:
        if key is None:
            # the flags listed first: a failure is an error here, never an empty answer
            results = mp.check_flags(_every_flag(mp), company=c, user=u)
        else:
            results = [mp.check_flag_details(key, company=c, user=u)]
    for result in results:
        if result.reason == "ERROR":
            raise typer.Exit(_error(result))
    if key is None:
        show_list(st.format, results, FlagCheck)
    else:
        show_one(st.format, results[0])


def _every_flag(mp: Millpond) -> list[str]:
    return [flag.key for flag in mp.flags.iter(page_size=PAGE)]


def _error(result: FlagCheck) -> int:
    typer.echo(f"error: the check failed: {result.error}", err=True)
    return 1


# -- companies -----------------------------------------------------------------------------


@companies_app.command("list")
def companies_list(
    ctx: typer.Context,
    environment: Environment = None,
    q: Annotated[str | None, typer.Option("--q", metavar="TEXT", help="Name contains.")] = None,
    users: Annotated[bool, typer.Option("--users", help="List users instead.")] = False,
    limit: Limit = 100,
    every: All = False,
) -> None:
    """List companies (or users) by id."""
    size = page_size(limit, every)
    st = state(ctx)
    with st.client(environment=environment) as mp:
        if users:
            found_users = shown(mp.companies.iter_users(q=q, page_size=size), limit, every)
            show_list(st.format, found_users, User)
        else:
            found = shown(mp.companies.iter_companies(q=q, page_size=size), limit, every)
            show_list(st.format, found, Company)


@companies_app.command("get")
def companies_get(
    ctx: typer.Context,
    keys: Annotated[list[str], typer.Argument(metavar="NAME=VALUE...", help="Any of its keys.")],
    environment: Environment = None,
    user: Annotated[bool, typer.Option("--user", help="A user, not a company.")] = False,
) -> None:
    """Show a company (or user) found by any of its keys."""
    found = keys_option(keys, "NAME=VALUE") or {}
    st = state(ctx)
    with st.client(environment=environment) as mp:
        item = mp.companies.get_user(found) if user else mp.companies.get_company(found)
        show_one(st.format, item)


@companies_app.command("upsert")
def companies_upsert(
    ctx: typer.Context,
    keys: Annotated[list[str], typer.Argument(metavar="NAME=VALUE...", help="Its keys.")],
    environment: Environment = None,
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="Display name.")
    ] = None,
    traits: Annotated[
        str | None,
        typer.Option("--traits", metavar="JSON", help='Traits to set, e.g. {"seats": 10}.'),
    ] = None,
    plan: Annotated[
        str | None, typer.Option("--plan", metavar="PLAN_ID", help="Put it on this plan.")
    ] = None,
) -> None:
    """Create or update a company (traits are merged)."""
    found = keys_option(keys, "NAME=VALUE") or {}
    parsed = _json_option(traits, "--traits", "'--traits'")
    if parsed is not None and not isinstance(parsed, dict):
        raise typer.BadParameter("--traits is a JSON object", param_hint="'--traits'")
    st = state(ctx)
    with st.client(environment=environment) as mp:
        made = mp.companies.upsert_company(keys=found, name=name, traits=parsed, plan_id=plan)
        show_one(st.format, made)


@companies_app.command("delete")
def companies_delete(
    ctx: typer.Context,
    company_id: Annotated[str, typer.Argument(metavar="ID", help="The company's id (co_…).")],
    environment: Environment = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask to confirm.")] = False,
) -> None:
    """Delete a company with its overrides and usage counters."""
    confirm(f"Delete company {company_id}?", yes, f"delete company {company_id}")
    st = state(ctx)
    with st.client(environment=environment) as mp:
        mp.companies.delete_company(company_id)
    show_action(st.format, {"deleted": company_id}, f"deleted company {company_id}")
