"""``millpond login``, ``logout`` and ``whoami``: save a server's URL and an API key once
(per profile), so the other commands find them from any directory."""

from __future__ import annotations

import sys

import typer

from ..errors import MillpondError
from . import _profiles as profiles
from ._context import KEY_ENV, fail, state
from ._output import OutputFormat, show_action, to_json


def login(ctx: typer.Context) -> None:
    """Check an API key against the server and save both for the other commands.

    \b
        millpond login --url https://db.example.com       # asks for the key
        echo "$KEY" | millpond login --profile work       # or reads it from stdin
        millpond --profile work db list

    The key comes from --key, else MILLPOND_API_KEY, else a hidden prompt (or the first
    line of standard input when it is not a terminal). It is stored in
    ~/.config/millpond/credentials.json (or $XDG_CONFIG_HOME, $MILLPOND_CONFIG_DIR), which
    only you can read. Commands then take the key from --key, else MILLPOND_API_KEY, else
    the profile (--profile / MILLPOND_PROFILE, else "default"), else a local server's
    admin key file; and the URL from --url / MILLPOND_URL, else the profile.
    """
    st = state(ctx)
    name = profiles.check_name(st.profile or profiles.DEFAULT_PROFILE)
    key = st.key if st.key_source in ("--key", KEY_ENV) else None
    if key is None:
        key = _read_key()
    st.key, st.key_source = key, "login"
    try:
        with st.client() as mp:
            me = mp.me()
    except MillpondError as exc:
        fail(f"not saved: the server at {st.url} refused the key or could not be reached ({exc})")
    path = profiles.put(profiles.Profile(name, st.url, key))
    who = me.user.username
    if st.format is OutputFormat.json:
        typer.echo(to_json({"profile": name, "url": st.url, "user": who, "stored_in": str(path)}))
        return
    typer.echo(f"logged in to {st.url} as {who} (profile {name}); saved in {path}")


def _read_key() -> str:
    if sys.stdin.isatty():
        key = str(typer.prompt("API key", hide_input=True)).strip()
    else:
        key = sys.stdin.readline().strip()
    if not key:
        fail("no API key given: type it at the prompt, pipe it in, or pass --key")
    return key


def logout(ctx: typer.Context) -> None:
    """Forget a saved login (--profile, else "default"); the key itself stays valid:
    revoke it with `millpond key revoke` if it should end."""
    st = state(ctx)
    name = st.profile or profiles.DEFAULT_PROFILE
    if not profiles.remove(name):
        fail(f"no saved login {name!r} (profiles are made with `millpond login`)")
    show_action(st.format, {"logged_out": name}, f"forgot the saved login {name}")


def whoami(ctx: typer.Context) -> None:
    """Who the commands act as, on which server, and where the key came from."""
    st = state(ctx)
    with st.client() as mp:
        me = mp.me()
    data = {
        "url": st.url,
        "user": me.user.username,
        "is_admin": me.user.is_admin,
        "service_account": me.service_account.name if me.service_account else None,
        "key_source": st.key_source,
    }
    if st.format is OutputFormat.json:
        typer.echo(to_json(data))
        return
    width = max(len(k) for k in data)
    typer.echo("\n".join(f"{k.ljust(width)}  {'' if v is None else v}" for k, v in data.items()))
