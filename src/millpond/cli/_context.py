"""What every client command shares: the root options (:class:`State`), the SDK client
built from them, confirmation prompts, argument checks, and the one place where SDK errors
become a message on stderr and an exit code (:class:`ClientGroup`).

Exit codes: 0 success; 1 the server refused (``ApiError``), could not be reached
(``TransportError``), the configuration is incomplete (no key), or a confirmation was
declined or impossible; 2 bad usage (Click's own code for usage errors).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from ..client import Millpond
from ..errors import (
    ApiError,
    ConfigurationError,
    ConnectError,
    MillpondError,
    TimeoutError,
)
from . import _profiles as profiles
from ._output import OutputFormat

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 60.0
URL_ENV = "MILLPOND_URL"
KEY_ENV = "MILLPOND_API_KEY"
DATA_DIR_ENV = "MILLPOND_DATA_DIR"
DEFAULT_DATA_DIR = Path(".millpond")
ADMIN_KEY_FILE = "admin-key"
"""Where ``millpond up`` writes the first admin's key, in its data directory (the same
name as the server's ``ADMIN_KEY_FILE``; the CLI never imports the server)."""

ANONYMOUS_KEY = "mp_anonymous"
"""Sent by ``millpond health`` when no key is configured: the health endpoint ignores keys,
but the SDK will not build a client without one."""


class NoKeyError(ConfigurationError):
    """No API key in --key, MILLPOND_API_KEY or a local admin key file."""


def admin_key_path() -> Path:
    """``$MILLPOND_DATA_DIR/admin-key``, else ``./.millpond/admin-key``."""
    data_dir = os.environ.get(DATA_DIR_ENV)
    return (Path(data_dir) if data_dir else DEFAULT_DATA_DIR) / ADMIN_KEY_FILE


@dataclass
class State:
    """The root options, resolved; ``ctx.obj`` of every command."""

    url: str
    key: str | None
    key_source: str | None
    format: OutputFormat
    timeout: float
    sql: str | None = None
    """The SQL of ``millpond query``, to point at an SQL error's position."""
    database: str | None = None
    """The database of ``millpond query``, for hints."""
    profile: str | None = None
    """The saved login (``millpond login``) to use: ``--profile``, else
    ``$MILLPOND_PROFILE``, else ``default`` when there is one."""

    def _resolve_key(self) -> str:
        """``--key``, else ``$MILLPOND_API_KEY``, else the profile's saved key, else the
        admin key file of a local ``millpond up``."""
        if self.key:
            return self.key
        saved = profiles.get(self.profile or profiles.DEFAULT_PROFILE)
        if saved is not None:
            self.key, self.key_source = saved.key, f"profile {saved.name} (millpond login)"
            return saved.key
        path = admin_key_path()
        try:
            key = path.read_text().strip()
        except FileNotFoundError:
            key = ""
        except OSError as exc:
            raise NoKeyError(
                f"no API key given, and the admin key file {path} cannot be read: "
                f"{exc.strerror or exc}"
            ) from exc
        if not key:
            raise NoKeyError(
                f"no API key: run `millpond login`, pass --key KEY or set {KEY_ENV} "
                f"(no saved login, and no admin key file at {path.absolute()} either)"
            )
        self.key, self.key_source = key, str(path)
        return key

    def client(self, *, need_key: bool = True, environment: str | None = None) -> Millpond:
        """An SDK client for the root options. The key is ``--key``, else ``$MILLPOND_API_KEY``,
        else the admin key file of a local ``millpond up``; none: ``ConfigurationError``.
        ``environment``: the flags environment of flag commands."""
        if need_key:
            key = self._resolve_key()
        else:
            try:
                key = self._resolve_key()
            except NoKeyError:
                key = ANONYMOUS_KEY
        return Millpond(
            api_key=key, base_url=self.url, timeout=self.timeout, environment=environment
        )


def state(ctx: typer.Context) -> State:
    obj = ctx.find_object(State)
    if obj is None:  # pragma: no cover - the root callback always sets it
        raise RuntimeError("millpond CLI state missing: invoke commands through the root app")
    return obj


# -- errors: the one place they are printed ---------------------------------------------------


_NOT_FOUND_HINTS = {
    "database_not_found": "list your databases with `millpond db list`",
    "user_not_found": "list users with `millpond user list` (needs an admin key)",
    "service_account_not_found": "list your service accounts with `millpond service-account list`",
    "key_not_found": "list your keys with `millpond key list`",
    "cluster_not_found": "`millpond clusters list` shows the clusters (with an admin key)",
}

_HINTS = {
    "admin_required": "this needs an admin key (`millpond me` shows who your key belongs to)",
    "read_only_key": "this key is read-only: use a write key, or create one with "
    "`millpond key create` using a write key",
    "forbidden": "`millpond me` shows who your key belongs to; the database's owner can "
    "share it with `millpond db share`",
    "storage_limit_exceeded": "raise the limit with "
    "`millpond db update OWNER/NAME --storage-limit BYTES` (or --no-storage-limit)",
    "database_exists": "pick another name; `millpond db list` shows the ones you have",
    "database_not_empty": "restore into a new database (`millpond restore FILE --database "
    "OWNER/NEW_NAME` creates it), or delete this one with `millpond db delete` first",
    "user_exists": "pick another username; `millpond user list` shows the existing ones",
    "user_owns_databases": "pass --delete-databases to delete the user with their databases",
    "statement_timeout": "the server's MILLPOND_STATEMENT_TIMEOUT_MS limits each query; "
    "for long work, connect to the database directly",
    "postgres_unavailable": "the server cannot reach its Postgres: check the server's log",
    "internal_error": "the server failed: check its log",
}


_READ_ONLY_SQLSTATES = frozenset({"42501", "25006"})
"""insufficient_privilege, read_only_sql_transaction."""


def _key_hint(st: State | None) -> str:
    where = f" (the key used came from {st.key_source})" if st and st.key_source else ""
    return f"check --key / {KEY_ENV}{where}"


def _sql_position(sql: str, position: int) -> list[str]:
    """psql's ``LINE n: …`` and a caret under character ``position`` (1-based)."""
    before = sql[: max(position - 1, 0)]
    line_no = before.count("\n") + 1
    line = sql.splitlines()[line_no - 1] if sql.splitlines() else ""
    column = len(before) - (before.rfind("\n") + 1)
    prefix = f"LINE {line_no}: "
    return [prefix + line.expandtabs(1), " " * (len(prefix) + column) + "^"]


def _api_error_lines(exc: ApiError, st: State | None) -> list[str]:
    lines = [f"error: {exc.message} ({exc.code})"]
    details = exc.details if isinstance(exc.details, dict) else {}
    if exc.code == "sql_error":
        position = details.get("position")
        if st and st.sql and isinstance(position, int) and 0 < position <= len(st.sql) + 1:
            lines += _sql_position(st.sql, position)
        for label, field in (("DETAIL", "detail"), ("HINT", "hint"), ("SQLSTATE", "sqlstate")):
            if details.get(field):
                lines.append(f"{label}: {details[field]}")
        if details.get("sqlstate") in _READ_ONLY_SQLSTATES:
            db = st.database if st and st.database else "OWNER/NAME"
            lines.append(
                f"hint: your access to {db} may be read-only (a read collaborator, a public "
                f"database or a --read-only key): `millpond db get {db}` shows your role"
            )
        return lines
    if exc.status_code == 401:
        hint: str | None = _key_hint(st)
    elif exc.code in _NOT_FOUND_HINTS:
        hint = _NOT_FOUND_HINTS[exc.code]
    else:
        hint = _HINTS.get(exc.code)
        if hint and st and st.database:
            hint = hint.replace("OWNER/NAME", st.database)
    if hint is None and exc.status_code == 404:
        hint = f"is --url right? ({st.url})" if st else None
    if hint:
        lines.append(f"hint: {hint}")
    return lines


def error_lines(exc: MillpondError, st: State | None) -> list[str]:
    """What to print on stderr for ``exc``: the error, then a hint saying what to do next."""
    if isinstance(exc, ApiError):
        return _api_error_lines(exc, st)
    url = st.url if st else DEFAULT_URL
    if isinstance(exc, ConnectError):
        return [
            f"error: {exc}",
            f"hint: is the server running at {url}? start it with `millpond up`, "
            f"or pass --url / set {URL_ENV}",
        ]
    if isinstance(exc, TimeoutError):
        return [f"error: {exc}", "hint: the server is slow to answer: pass a longer --timeout"]
    if isinstance(exc, NoKeyError):
        return [
            f"error: {exc}",
            "hint: on the machine running `millpond up` the admin key is found on its own "
            f"(set {DATA_DIR_ENV} if the server's data directory is elsewhere); an admin "
            "can create you a user and key with `millpond user create`",
        ]
    if isinstance(exc, ConfigurationError) and str(exc).startswith("invalid millpond URL"):
        return [f"error: {exc}", f"hint: pass --url http://HOST:PORT or set {URL_ENV}"]
    return [f"error: {exc}"]


GLOBAL_OPTIONS = frozenset({"--url", "-k", "--key", "--format", "--timeout", "--profile"})
"""The root's options that take a value; accepted anywhere on the line."""


def hoist_global_options(root: Any, args: list[str]) -> list[str]:
    """``args`` with the root's options moved before the subcommand when they come after
    it (``millpond db list --format table``), unless the command has an option of that
    name itself (``millpond import --format csv``); nothing moves after ``--``."""
    command, first = root, None
    i = 0
    while i < len(args) and hasattr(command, "commands"):
        token = args[i]
        if token == "--":
            break
        if token.startswith("-"):
            i += 2 if token in GLOBAL_OPTIONS else 1
            continue
        sub = command.commands.get(token)
        if sub is None:
            break
        first = i if first is None else first
        command = sub
        i += 1
    if first is None:
        return args
    own = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    front, rest = list(args[:first]), []
    i = first
    while i < len(args):
        token = args[i]
        if token == "--":
            rest += args[i:]
            break
        name = token.split("=", 1)[0]
        if name in GLOBAL_OPTIONS and name not in own:
            takes_next = "=" not in token and i + 1 < len(args)
            front += args[i : i + 2] if takes_next else [token]
            i += 2 if takes_next else 1
            continue
        rest.append(token)
        i += 1
    return front + rest


class ClientGroup(TyperGroup):
    """The root command group. Any ``MillpondError`` a command raises is printed here as
    ``error: <message> (<code>)`` plus a hint on stderr, with exit code 1, never a
    traceback. The root's options may come anywhere on the line
    (:func:`hoist_global_options`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return list(super().parse_args(ctx, hoist_global_options(self, list(args))))

    def invoke(self, ctx: Any) -> Any:  # the Context class of the click typer runs on
        try:
            return super().invoke(ctx)
        except MillpondError as exc:
            st = ctx.find_object(State)
            for line in error_lines(exc, st):
                typer.echo(line, err=True)
            raise typer.Exit(1) from None


def group(help: str) -> typer.Typer:
    """A command group with the CLI's settings (plain help text, no completion)."""
    return typer.Typer(
        help=help,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
    )


# -- confirmations and argument checks -------------------------------------------------------


def interactive() -> bool:
    """Whether a person can answer a prompt (standard input is a terminal)."""
    return sys.stdin.isatty()


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def confirm(question: str, yes: bool, what: str) -> None:
    """Go on if ``--yes`` was given or a person answers yes; otherwise stop with exit 1.
    Without a terminal there is nobody to ask: refuse and say to pass ``--yes``."""
    if yes:
        return
    if not interactive():
        fail(
            f"not going to {what} without confirmation: pass --yes (standard input is not a "
            "terminal, so there is nobody to ask)"
        )
    if not typer.confirm(question, default=False):
        fail("aborted: nothing was changed")


def database_name(value: str) -> str:
    """Check an ``OWNER/NAME`` argument (a usage error, exit 2, when malformed)."""
    owner, sep, name = value.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise typer.BadParameter(
            f"databases are named OWNER/NAME (e.g. alice/shop), not {value!r}; "
            "`millpond db list` shows yours"
        )
    return value


def path_segment(value: str) -> str:
    """Check a name or id that becomes one URL segment."""
    if value in ("", ".", ".."):
        raise typer.BadParameter(f"{value!r} is not a valid name or id")
    return value
