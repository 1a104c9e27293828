"""Companies, users, flags, features and recorded checks as a directory, for APIs that page
by offset (the Schematic API): filtered lists and counts, user counts per company,
memberships (list, add, remove), flags by id, each flag's latest check.

Every function resolves the environment through :class:`~.access.Access` as the service
does (a read, or a write for membership changes); a membership change is a configuration
change (one transaction, audited as an update of the user, see :mod:`.changes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import sql
from pydantic import BaseModel

from millpond.models.flags import Company, Feature, Flag, User

from ..accounts.service import Principal
from ..errors import ServiceError
from . import entities
from .changes import FEATURE_COLUMNS, FLAG_COLUMNS, change
from .schemas import CheckRecord
from .service import FlagService

_MAX_IDS = 1000


@dataclass(frozen=True)
class Filter:
    """Which companies or users: by ids, name (``q``, a substring, any case), plan (of a
    company; of a user: of any of its companies), company (users); a page by offset."""

    ids: Sequence[str] = field(default_factory=tuple)
    q: str | None = None
    plan_id: str | None = None
    company_id: str | None = None
    limit: int = 100
    offset: int = 0


class Membership(BaseModel):
    user_id: str
    company_id: str
    created_at: datetime


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _clean(value: str | None, name: str) -> str | None:
    if value is not None and "\x00" in value:
        raise ServiceError(422, "validation_error", f"{name}: must not contain NUL characters")
    return value


def _where(kind: entities.Kind, env_id: str, only: Filter) -> tuple[sql.Composable, list[Any]]:
    if len(only.ids) > _MAX_IDS:
        raise ServiceError(422, "validation_error", f"ids: at most {_MAX_IDS}")
    where: list[sql.Composable] = [sql.SQL("e.environment_id = %s")]
    params: list[Any] = [env_id]
    if only.ids:
        where.append(sql.SQL("e.id = ANY(%s::text[])"))
        params.append([_clean(i, "ids") for i in only.ids])
    if only.q:
        where.append(sql.SQL("e.name ILIKE %s"))
        params.append("%" + _like(_clean(only.q, "q") or "") + "%")
    if only.plan_id is not None:
        if kind is entities.COMPANY:
            where.append(sql.SQL("e.plan_id = %s"))
        else:
            where.append(
                sql.SQL(
                    "e.id IN (SELECT m.user_id FROM flag_memberships m JOIN flag_companies c"
                    " ON c.id = m.company_id WHERE c.plan_id = %s)"
                )
            )
        params.append(_clean(only.plan_id, "plan_id"))
    if only.company_id is not None and kind is entities.USER:
        where.append(
            sql.SQL("e.id IN (SELECT m.user_id FROM flag_memberships m WHERE m.company_id = %s)")
        )
        params.append(_clean(only.company_id, "company_id"))
    return sql.SQL(" AND ").join(where), params


async def list_entities(
    flags: FlagService, who: Principal, ref: str, kind: entities.Kind, only: Filter
) -> list[Company | User]:
    """A page of the environment's companies or users, oldest first."""
    env = await flags.access.resolve(who, ref)
    where, params = _where(kind, env.id, only)
    query = sql.SQL("{} ORDER BY e.created_at, e.id LIMIT %s OFFSET %s").format(
        entities.select(kind, where)
    )
    rows = await flags.store.fetchall(query, (*params, only.limit, only.offset))
    return [entities.to_model(kind, row) for row in rows]


async def count_entities(
    flags: FlagService, who: Principal, ref: str, kind: entities.Kind, only: Filter
) -> int:
    """How many companies or users match (limit and offset ignored)."""
    env = await flags.access.resolve(who, ref)
    where, params = _where(kind, env.id, only)
    query = sql.SQL("SELECT count(*) AS n FROM {} e WHERE {}").format(kind.table, where)
    row = await flags.store.fetchone(query, params)
    return int(row["n"]) if row is not None else 0


async def user_counts(
    flags: FlagService, who: Principal, ref: str, company_ids: Sequence[str]
) -> dict[str, int]:
    """How many users each company has."""
    env = await flags.access.resolve(who, ref)
    rows = await flags.store.fetchall(
        "SELECT company_id, count(*) AS n FROM flag_memberships"
        " WHERE environment_id = %s AND company_id = ANY(%s::text[]) GROUP BY company_id",
        (env.id, list(company_ids)),
    )
    counts = {row["company_id"]: int(row["n"]) for row in rows}
    return {company_id: counts.get(company_id, 0) for company_id in company_ids}


async def list_memberships(
    flags: FlagService,
    who: Principal,
    ref: str,
    *,
    company_id: str | None = None,
    user_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Membership]:
    env = await flags.access.resolve(who, ref)
    rows = await flags.store.fetchall(
        "SELECT user_id, company_id, created_at FROM flag_memberships"
        " WHERE environment_id = %s AND (%s::text IS NULL OR company_id = %s)"
        " AND (%s::text IS NULL OR user_id = %s)"
        " ORDER BY created_at, user_id, company_id LIMIT %s OFFSET %s",
        (
            env.id,
            _clean(company_id, "company_id"),
            company_id,
            _clean(user_id, "user_id"),
            user_id,
            limit,
            offset,
        ),
    )
    return [Membership.model_validate(row) for row in rows]


async def add_membership(
    flags: FlagService, who: Principal, ref: str, company_id: str, user_id: str
) -> Membership:
    """Make the user a member of the company (a member already: unchanged)."""
    env = await flags.access.resolve(who, ref, write=True)
    async with change(flags.store, flags.invalidation, env, who) as ch:
        user = await entities.get(ch.conn, entities.USER, env.id, _clean(user_id, "user_id") or "")
        if user is None:
            raise entities.not_found(entities.USER, repr(user_id))
        company = await entities.get(
            ch.conn, entities.COMPANY, env.id, _clean(company_id, "company_id") or ""
        )
        if company is None:
            raise entities.not_found(entities.COMPANY, repr(company_id))
        await entities.add_membership(ch.conn, env.id, user.id, company.id)
        after = await entities.get(ch.conn, entities.USER, env.id, user.id)
        if isinstance(user, User) and company.id not in user.company_ids:
            await ch.audit("user", user.id, "update", user, after)
        cur = await ch.conn.execute(
            "SELECT user_id, company_id, created_at FROM flag_memberships"
            " WHERE user_id = %s AND company_id = %s",
            (user.id, company.id),
        )
        row = await cur.fetchone()
    assert row is not None
    return Membership.model_validate(row)


async def remove_membership(
    flags: FlagService, who: Principal, ref: str, company_id: str, user_id: str
) -> None:
    """End a membership; 404 ``membership_not_found`` when there is none."""
    env = await flags.access.resolve(who, ref, write=True)
    async with change(flags.store, flags.invalidation, env, who) as ch:
        user = await entities.get(ch.conn, entities.USER, env.id, _clean(user_id, "user_id") or "")
        cur = await ch.conn.execute(
            "DELETE FROM flag_memberships WHERE environment_id = %s AND user_id = %s"
            " AND company_id = %s",
            (env.id, user_id, _clean(company_id, "company_id")),
        )
        if user is None or cur.rowcount == 0:
            raise ServiceError(
                404,
                "membership_not_found",
                f"user {user_id!r} is no member of company {company_id!r}",
            )
        after = await entities.get(ch.conn, entities.USER, env.id, user.id)
        await ch.audit("user", user.id, "update", user, after)


def _flag_where(env_id: str, only: Filter, feature_id: str | None) -> tuple[str, list[Any]]:
    if len(only.ids) > _MAX_IDS:
        raise ServiceError(422, "validation_error", f"ids: at most {_MAX_IDS}")
    pattern = "%" + _like(_clean(only.q, "q") or "") + "%" if only.q else None
    where = (
        "environment_id = %s AND deleted_at IS NULL"
        " AND (cardinality(%s::text[]) = 0 OR id = ANY(%s::text[]))"
        " AND (%s::text IS NULL OR key ILIKE %s OR name ILIKE %s)"
        " AND (%s::text IS NULL OR feature_id = %s)"
    )
    ids = [_clean(i, "ids") for i in only.ids]
    feature = _clean(feature_id, "feature_id")
    return where, [env_id, ids, ids, pattern, pattern, pattern, feature, feature]


async def list_flags(
    flags: FlagService, who: Principal, ref: str, only: Filter, feature_id: str | None = None
) -> list[Flag]:
    """A page of the environment's live flags, oldest first."""
    env = await flags.access.resolve(who, ref)
    where, params = _flag_where(env.id, only, feature_id)
    rows = await flags.store.fetchall(
        f"SELECT {FLAG_COLUMNS} FROM flags WHERE {where} ORDER BY created_at, key"
        " LIMIT %s OFFSET %s",
        (*params, only.limit, only.offset),
    )
    return [Flag.model_validate(row) for row in rows]


async def count_flags(
    flags: FlagService, who: Principal, ref: str, only: Filter, feature_id: str | None = None
) -> int:
    env = await flags.access.resolve(who, ref)
    where, params = _flag_where(env.id, only, feature_id)
    row = await flags.store.fetchone(f"SELECT count(*) AS n FROM flags WHERE {where}", params)
    return int(row["n"]) if row is not None else 0


async def flag_key(flags: FlagService, who: Principal, ref: str, ident: str) -> str:
    """The key of the live flag whose id (or key) is ``ident``; 404 ``flag_not_found``."""
    env = await flags.access.resolve(who, ref)
    row = await flags.store.fetchone(
        "SELECT key FROM flags WHERE environment_id = %s AND deleted_at IS NULL"
        " AND (id = %s OR key = %s) ORDER BY id = %s DESC LIMIT 1",
        (env.id, _clean(ident, "flag_id"), ident, ident),
    )
    if row is None:
        raise ServiceError(404, "flag_not_found", f"no flag {ident!r} in this environment")
    return str(row["key"])


def _feature_where(env_id: str, only: Filter) -> tuple[str, list[Any]]:
    if len(only.ids) > _MAX_IDS:
        raise ServiceError(422, "validation_error", f"ids: at most {_MAX_IDS}")
    pattern = "%" + _like(_clean(only.q, "q") or "") + "%" if only.q else None
    ids = [_clean(i, "ids") for i in only.ids]
    where = (
        "environment_id = %s AND (cardinality(%s::text[]) = 0 OR id = ANY(%s::text[]))"
        " AND (%s::text IS NULL OR name ILIKE %s)"
    )
    return where, [env_id, ids, ids, pattern, pattern]


async def list_features(
    flags: FlagService, who: Principal, ref: str, only: Filter
) -> list[Feature]:
    """A page of the environment's features, oldest first."""
    env = await flags.access.resolve(who, ref)
    where, params = _feature_where(env.id, only)
    rows = await flags.store.fetchall(
        f"SELECT {FEATURE_COLUMNS} FROM flag_features WHERE {where} ORDER BY created_at, id"
        " LIMIT %s OFFSET %s",
        (*params, only.limit, only.offset),
    )
    return [Feature.model_validate(row) for row in rows]


async def count_features(flags: FlagService, who: Principal, ref: str, only: Filter) -> int:
    env = await flags.access.resolve(who, ref)
    where, params = _feature_where(env.id, only)
    row = await flags.store.fetchone(
        f"SELECT count(*) AS n FROM flag_features WHERE {where}", params
    )
    return int(row["n"]) if row is not None else 0


class Definition(BaseModel):
    """A key or trait name in use by the environment's companies or users: since when, last
    changed, and (traits) the JSON type of its values."""

    name: str
    value_type: str | None = None
    created_at: datetime
    updated_at: datetime


async def definitions(
    flags: FlagService, who: Principal, ref: str, kind: entities.Kind, *, traits: bool
) -> list[Definition]:
    """The key names (or trait names) any company (or user) has, by name."""
    env = await flags.access.resolve(who, ref)
    query = sql.SQL(
        "SELECT t.key AS name, {kind} AS value_type, min(e.created_at) AS created_at,"
        " max(e.updated_at) AS updated_at FROM {table} e, jsonb_each(e.{column}) t"
        " WHERE e.environment_id = %s GROUP BY t.key ORDER BY t.key"
    ).format(
        kind=sql.SQL("min(jsonb_typeof(t.value))" if traits else "NULL"),
        table=kind.table,
        column=sql.Identifier("traits" if traits else "keys"),
    )
    rows = await flags.store.fetchall(query, (env.id,))
    return [Definition.model_validate(row) for row in rows]


async def trait_values(
    flags: FlagService,
    who: Principal,
    ref: str,
    kind: entities.Kind,
    trait: str,
    *,
    q: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[str]:
    """The distinct values (as text) the trait has among companies (or users)."""
    env = await flags.access.resolve(who, ref)
    pattern = "%" + _like(_clean(q, "q") or "") + "%" if q else None
    query = sql.SQL(
        "SELECT DISTINCT e.traits ->> %s AS value FROM {} e WHERE e.environment_id = %s"
        " AND e.traits ? %s AND (%s::text IS NULL OR e.traits ->> %s ILIKE %s)"
        " ORDER BY value LIMIT %s OFFSET %s"
    ).format(kind.table)
    name = _clean(trait, "trait")
    rows = await flags.store.fetchall(
        query, (name, env.id, name, pattern, name, pattern, limit, offset)
    )
    return ["" if row["value"] is None else str(row["value"]) for row in rows]


_CHECK_COLUMNS = (
    "id, flag_key AS flag, flag_id, value, reason, rule_id, rule_type, company_id, user_id,"
    ' company_keys AS company, user_keys AS "user", key_id, checked_at'
)


async def check_log(
    flags: FlagService,
    who: Principal,
    ref: str,
    *,
    flag_ids: Sequence[str] = (),
    check_id: int | None = None,
    latest: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> list[CheckRecord]:
    """Recorded checks, newest first: of these flags (any when none), this one; with
    ``latest``, only each flag's newest."""
    env = await flags.access.resolve(who, ref)
    ids = [_clean(i, "flag_ids") for i in flag_ids]
    where = (
        "environment_id = %s AND (cardinality(%s::text[]) = 0 OR flag_id = ANY(%s::text[]))"
        " AND (%s::bigint IS NULL OR id = %s)"
    )
    query = f"SELECT {_CHECK_COLUMNS} FROM flag_checks WHERE {where}"
    if latest:
        query = (
            f"SELECT * FROM (SELECT DISTINCT ON (flag_key) {_CHECK_COLUMNS} FROM flag_checks"
            f" WHERE {where} ORDER BY flag_key, id DESC) AS newest"
        )
    rows = await flags.store.fetchall(
        query + " ORDER BY id DESC LIMIT %s OFFSET %s",
        (env.id, ids, ids, check_id, check_id, limit, offset),
    )
    return [CheckRecord.model_validate(row) for row in rows]


async def count_checks(
    flags: FlagService, who: Principal, ref: str, *, flag_ids: Sequence[str] = ()
) -> int:
    env = await flags.access.resolve(who, ref)
    ids = [_clean(i, "flag_ids") for i in flag_ids]
    row = await flags.store.fetchone(
        "SELECT count(*) AS n FROM flag_checks WHERE environment_id = %s"
        " AND (cardinality(%s::text[]) = 0 OR flag_id = ANY(%s::text[]))",
        (env.id, ids, ids),
    )
    return int(row["n"]) if row is not None else 0
