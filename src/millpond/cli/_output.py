"""Everything the CLI prints on stdout, in one place.

``--format json`` (the default, for scripts): one JSON document per command, the models'
``model_dump(mode="json")`` indented; lists are JSON arrays. ``--format table`` (for
people): lists as aligned columns chosen per resource (:data:`VIEWS`), one object as
``field  value`` lines, query results as a table of their columns with a row-count footer.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import typer
from pydantic import BaseModel

from ..models import (
    ApiKey,
    ApiKeyCreated,
    ClusterInfo,
    Collaborator,
    Database,
    QueryResult,
    ServiceAccount,
    User,
    UserCreated,
)
from ..models.flags import Company as FlagCompany
from ..models.flags import Environment as FlagEnvironment
from ..models.flags import Flag, FlagCheck
from ..models.flags import User as FlagUser
from ..models.modules import (
    AnonymousIdentity,
    Connection,
    IdentityCreated,
    ModuleVersion,
    Schedule,
    TokenIssuer,
)
from ..models.transfer import ExportJob, ImportJob


def _every(interval_us: int | None) -> str:
    if interval_us is None:
        return "once"
    seconds = interval_us / 1_000_000
    return f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:g} min"


class OutputFormat(StrEnum):
    """How commands print their results."""

    json = "json"
    table = "table"


# -- cells -------------------------------------------------------------------------------

NUMERIC_TYPES = frozenset({"int2", "int4", "int8", "float4", "float8", "numeric", "oid", "money"})
"""Postgres types whose values are right-aligned in query tables."""

_ESCAPES = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


def cell(value: object, null: str = "") -> str:
    """One value as table text: on one line, JSON for nested data, times in UTC."""
    if value is None:
        return null
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value).translate(_ESCAPES)


def when(value: datetime | None) -> str:
    """A timestamp to the second, in UTC: ``2024-05-01 12:34:56Z``."""
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%SZ")


def size(n: int | None) -> str:
    """Bytes for people: ``512 B``, ``7.2 MiB``."""
    if n is None:
        return ""
    amount = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _width(text: str) -> int:
    """Terminal columns taken by ``text`` (wide East Asian characters count twice)."""
    total = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        total += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return total


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - _width(text))
    return fill + text if right else text + fill


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] = ()) -> str:
    """Aligned columns two spaces apart, under a header and a dashed rule."""
    align = [i < len(right) and right[i] for i in range(len(headers))]
    widths = [_width(h) for h in headers]
    for row in rows:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], _width(text))
    lines = [
        "  ".join(_pad(h, w, a) for h, w, a in zip(headers, widths, align, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    for row in rows:
        lines.append("  ".join(_pad(t, w, a) for t, w, a in zip(row, widths, align, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


# -- views: the columns shown for each resource ----------------------------------------------


@dataclass(frozen=True)
class Column:
    header: str
    get: Callable[[Any], str]
    right: bool = False


@dataclass(frozen=True)
class View:
    noun: str
    """What one row is, for "no databases" and "3 databases"."""
    columns: tuple[Column, ...]


VIEWS: dict[type[BaseModel], View] = {
    Flag: View(
        "flag",
        (
            Column("KEY", lambda f: f.key),
            Column("NAME", lambda f: cell(f.name)),
            Column("DEFAULT", lambda f: "on" if f.default_value else "off"),
            Column("FEATURE", lambda f: cell(f.feature_id)),
            Column("DELETED", lambda f: when(f.deleted_at)),
            Column("UPDATED", lambda f: when(f.updated_at)),
        ),
    ),
    FlagCheck: View(
        "flag",
        (
            Column("FLAG", lambda c: c.flag),
            Column("VALUE", lambda c: "on" if c.value else "off"),
            Column("REASON", lambda c: c.reason),
            Column("RULE", lambda c: cell(c.rule_id)),
        ),
    ),
    FlagCompany: View(
        "company",
        (
            Column("ID", lambda c: c.id),
            Column("KEYS", lambda c: ", ".join(f"{k}={v}" for k, v in c.keys.items())),
            Column("NAME", lambda c: cell(c.name)),
            Column("PLAN", lambda c: cell(c.plan_id)),
        ),
    ),
    FlagEnvironment: View(
        "environment",
        (
            Column("ID", lambda e: e.id),
            Column("NAME", lambda e: e.name),
            Column("TYPE", lambda e: e.environment_type),
            Column("CREATED", lambda e: when(e.created_at)),
        ),
    ),
    FlagUser: View(
        "user",
        (
            Column("ID", lambda u: u.id),
            Column("KEYS", lambda u: ", ".join(f"{k}={v}" for k, v in u.keys.items())),
            Column("NAME", lambda u: cell(u.name)),
        ),
    ),
    ImportJob: View(
        "import job",
        (
            Column("ID", lambda j: j.id),
            Column("STATE", lambda j: j.state),
            Column("DATABASE", lambda j: j.db_name),
            Column("TABLE", lambda j: j.table_name),
            Column("ROWS", lambda j: str(j.rows_done), right=True),
            Column("CREATED", lambda j: when(j.created_at)),
        ),
    ),
    ExportJob: View(
        "export job",
        (
            Column("ID", lambda j: j.id),
            Column("STATE", lambda j: j.state),
            Column("DATABASE", lambda j: j.db_name),
            Column("FORMAT", lambda j: j.export_format),
            Column("ROWS", lambda j: str(j.rows_done), right=True),
            Column("CREATED", lambda j: when(j.created_at)),
        ),
    ),
    Database: View(
        "database",
        (
            Column("NAME", lambda d: d.full_name),
            Column("ROLE", lambda d: cell(d.role)),
            Column("PRIVATE", lambda d: yes_no(d.is_private)),
            Column("LIMIT", lambda d: size(d.storage_limit_bytes) or "none", right=True),
            Column("CREATED", lambda d: when(d.created_at)),
        ),
    ),
    ClusterInfo: View(
        "cluster",
        (
            Column("NAME", lambda c: c.name),
            Column("HOME", lambda c: yes_no(c.home)),
            Column("STATE", lambda c: c.state),
            Column("DATABASES", lambda c: str(c.databases), right=True),
            Column("UP", lambda c: yes_no(c.up)),
            Column("POSTGRES", lambda c: cell(c.postgres)),
            Column("ADDRESS", lambda c: c.address),
        ),
    ),
    Collaborator: View(
        "collaborator",
        (
            Column("USERNAME", lambda c: c.username),
            Column("ROLE", lambda c: c.role),
            Column("SINCE", lambda c: when(c.created_at)),
        ),
    ),
    ApiKey: View(
        "key",
        (
            Column("ID", lambda k: k.id),
            Column("NAME", lambda k: cell(k.name)),
            Column("PREFIX", lambda k: k.prefix),
            Column("SCOPE", lambda k: k.scope),
            Column("CREATED", lambda k: when(k.created_at)),
            Column("EXPIRES", lambda k: when(k.expires_at) or "never"),
            Column("LAST USED", lambda k: when(k.last_used_at) or "never"),
        ),
    ),
    ServiceAccount: View(
        "service account",
        (
            Column("ID", lambda s: str(s.id), right=True),
            Column("NAME", lambda s: s.name),
            Column("OWNER", lambda s: s.owner),
            Column("KEYS", lambda s: str(s.key_count), right=True),
            Column("CREATED", lambda s: when(s.created_at)),
        ),
    ),
    ModuleVersion: View(
        "module version",
        (
            Column("VERSION", lambda v: str(v.version) + (" *" if v.active else ""), right=True),
            Column("PUBLISHED", lambda v: when(v.published_at)),
            Column("BY", lambda v: cell(v.published_by)),
            Column("TABLES", lambda v: ", ".join(v.tables)),
            Column("REDUCERS", lambda v: ", ".join(v.reducers)),
            Column("FROM", lambda v: cell(v.rolled_back_from)),
        ),
    ),
    AnonymousIdentity: View(
        "anonymous identity",
        (
            Column("IDENTITY", lambda i: i.identity),
            Column("CREATED", lambda i: when(i.created_at)),
            Column("LAST USED", lambda i: when(i.last_used_at) or "never"),
            Column("REVOKED", lambda i: when(i.revoked_at) or "no"),
        ),
    ),
    Connection: View(
        "connection",
        (
            Column("IDENTITY", lambda c: c.identity),
            Column("CONNECTION", lambda c: c.connection_id),
            Column("SINCE", lambda c: when(c.connected_at)),
            Column("SERVER", lambda c: c.server),
        ),
    ),
    Schedule: View(
        "schedule",
        (
            Column("TABLE", lambda s: s.table),
            Column("SCHEDULED ID", lambda s: str(s.scheduled_id)),
            Column("REDUCER", lambda s: s.reducer),
            Column("STATE", lambda s: s.state),
            Column("DUE", lambda s: when(s.due) or "-"),
            Column("EVERY", lambda s: _every(s.interval_us)),
            Column("ATTEMPTS", lambda s: str(s.attempts)),
            Column("LAST RUN", lambda s: when(s.last_run) or "-"),
            Column("LAST ERROR", lambda s: s.last_error or ""),
        ),
    ),
    TokenIssuer: View(
        "issuer",
        (
            Column("ISSUER", lambda i: i.issuer),
            Column("AUDIENCES", lambda i: ", ".join(i.audiences)),
            Column(
                "KEYS", lambda i: "inline" if i.jwks is not None else i.jwks_uri or "discovered"
            ),
            Column("CLAIMS", lambda i: ", ".join(f"{k}={v}" for k, v in i.required_claims.items())),
        ),
    ),
    User: View(
        "user",
        (
            Column("ID", lambda u: str(u.id), right=True),
            Column("USERNAME", lambda u: u.username),
            Column("ADMIN", lambda u: yes_no(u.is_admin)),
            Column("CREATED", lambda u: when(u.created_at)),
        ),
    ),
}

SECRET_NOTE = "This secret is shown only once and cannot be retrieved again: store it now."


def _plural(noun: str) -> str:
    return noun[:-1] + "ies" if noun.endswith("y") and not noun.endswith("ey") else noun + "s"


def _view(model: type[BaseModel]) -> View:
    for cls in model.__mro__:
        if cls in VIEWS:
            return VIEWS[cls]
    raise KeyError(f"no table view for {model.__name__}")


# -- printing --------------------------------------------------------------------------------


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            pairs += _flatten(value, f"{key}.")
        elif name.endswith("_bytes") and isinstance(value, int):
            pairs.append((key, f"{value} ({size(value)})"))
        else:
            pairs.append((key, cell(value)))
    return pairs


def _has_secret(item: BaseModel) -> bool:
    return isinstance(item, ApiKeyCreated | UserCreated | IdentityCreated)


def show_one(fmt: OutputFormat, item: BaseModel) -> None:
    """One object: JSON, or ``field  value`` lines (nested fields as ``user.username``)."""
    if fmt is OutputFormat.json:
        typer.echo(to_json(item.model_dump(mode="json")))
        return
    pairs = _flatten(item.model_dump())
    width = max(_width(k) for k, _ in pairs)
    typer.echo("\n".join(f"{_pad(k, width, False)}  {v}".rstrip() for k, v in pairs))
    if _has_secret(item):
        typer.echo(f"\n{SECRET_NOTE}")


def show_list(fmt: OutputFormat, items: Sequence[BaseModel], model: type[BaseModel]) -> None:
    """A list of ``model``: a JSON array, or a table of the columns chosen for it."""
    if fmt is OutputFormat.json:
        typer.echo(to_json([item.model_dump(mode="json") for item in items]))
        return
    view = _view(model)
    if not items:
        typer.echo(f"no {_plural(view.noun)}")
        return
    rows = [[col.get(item) for col in view.columns] for item in items]
    typer.echo(
        table([col.header for col in view.columns], rows, [col.right for col in view.columns])
    )


def show_action(fmt: OutputFormat, data: Mapping[str, Any], text: str) -> None:
    """The outcome of an action that returns nothing (a delete, a revoke): ``data`` as JSON,
    or the sentence ``text``."""
    typer.echo(to_json(dict(data)) if fmt is OutputFormat.json else text)


def query_table(result: QueryResult) -> str:
    """A query result for people: its rows under its column names, then how many rows (or
    the command tag for statements without columns, like ``INSERT 0 3``)."""
    if not result.columns:
        return result.command or plural(result.row_count, "row")
    names = [c.name for c in result.columns]
    rows: list[list[str]] = []
    for row in result.data:
        values = [row.get(n) for n in names] if isinstance(row, dict) else list(row)
        rows.append([cell(v, null="NULL") for v in values])
    right = [c.type in NUMERIC_TYPES for c in result.columns]
    shown = len(result.data)
    if result.truncated:
        footer = f"(truncated: {shown} of {plural(result.row_count, 'row')})"
    else:
        footer = plural(shown, "row")
    return f"{table(names, rows, right)}\n{footer}"


def show_query(fmt: OutputFormat, result: QueryResult) -> None:
    """The whole ``QueryResult`` as JSON, or :func:`query_table`."""
    if fmt is OutputFormat.json:
        typer.echo(to_json(result.model_dump(mode="json")))
    else:
        typer.echo(query_table(result))
