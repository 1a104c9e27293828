"""Companies and users: addressed by any of their keys (one ``flag_*_keys`` row per key,
unique per environment), created or updated by upserts, identify and track events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from millpond.models.flags import Company, TraitValue, User

from ..errors import ServiceError, conflict
from .changes import new_id


@dataclass(frozen=True)
class Kind:
    """Companies or users: their tables and names."""

    name: str
    table: sql.Identifier
    keys_table: sql.Identifier
    id_column: sql.Identifier
    prefix: str
    not_found_code: str


COMPANY = Kind(
    "company",
    sql.Identifier("flag_companies"),
    sql.Identifier("flag_company_keys"),
    sql.Identifier("company_id"),
    "comp",
    "company_not_found",
)
USER = Kind(
    "user",
    sql.Identifier("flag_users"),
    sql.Identifier("flag_user_keys"),
    sql.Identifier("user_id"),
    "user",
    "user_not_found",
)

_COMPANY_COLUMNS = sql.SQL(
    "e.id, e.keys, e.name, e.traits, e.plan_id, e.created_at, e.updated_at, e.last_seen_at"
)
_USER_COLUMNS = sql.SQL(
    "e.id, e.keys, e.name, e.traits, e.created_at, e.updated_at, e.last_seen_at,"
    " coalesce((SELECT array_agg(m.company_id ORDER BY m.company_id) FROM flag_memberships m"
    " WHERE m.user_id = e.id), '{}') AS company_ids"
)


def columns(kind: Kind) -> sql.Composable:
    """The columns of :class:`Company` / :class:`User`, from the table aliased ``e``."""
    return _COMPANY_COLUMNS if kind is COMPANY else _USER_COLUMNS


def to_model(kind: Kind, row: Mapping[str, Any]) -> Company | User:
    if kind is COMPANY:
        return Company.model_validate(row)
    return User.model_validate(row)


def not_found(kind: Kind, what: str) -> ServiceError:
    return ServiceError(404, kind.not_found_code, f"no {kind.name} {what}")


def select(kind: Kind, where: sql.Composable) -> sql.Composed:
    return sql.SQL("SELECT {} FROM {} e WHERE {}").format(columns(kind), kind.table, where)


async def get(
    conn: AsyncConnection[DictRow], kind: Kind, env_id: str, entity_id: str
) -> Company | User | None:
    cur = await conn.execute(
        select(kind, sql.SQL("e.environment_id = %s AND e.id = %s")), (env_id, entity_id)
    )
    row = await cur.fetchone()
    return to_model(kind, row) if row is not None else None


async def find(
    conn: AsyncConnection[DictRow],
    kind: Kind,
    env_id: str,
    keys: Mapping[str, str],
    *,
    lock: bool = False,
) -> list[Company | User]:
    """The entities owning any of ``keys`` (normally none or one)."""
    query = select(
        kind,
        sql.SQL(
            "e.id IN (SELECT k.{id} FROM {keys} k"
            " JOIN unnest(%s::text[], %s::text[]) AS q(name, value)"
            " ON k.environment_id = %s AND k.name = q.name AND k.value = q.value)"
        ).format(id=kind.id_column, keys=kind.keys_table),
    )
    if lock:
        query = sql.SQL("{} ORDER BY e.id FOR UPDATE OF e").format(query)
    cur = await conn.execute(query, (list(keys), list(keys.values()), env_id))
    return [to_model(kind, row) for row in await cur.fetchall()]


_UNSET: Any = object()


async def upsert(
    conn: AsyncConnection[DictRow],
    kind: Kind,
    env_id: str,
    keys: Mapping[str, str],
    *,
    name: str | None = None,
    traits: Mapping[str, TraitValue] | None = None,
    plan_id: str | None = _UNSET,
    version: int | None = None,
) -> tuple[Company | User | None, Company | User]:
    """Create the entity owning none of ``keys``, or update the one owning some: keys added
    (a name already set takes the new value), traits merged, name (and, for companies,
    plan) set when given, ``last_seen_at`` now. Returns (before, after); before is None
    when created. Two entities owning the keys is 409 ``key_conflict``."""
    found = await find(conn, kind, env_id, keys, lock=True)
    if len(found) > 1:
        raise conflict(
            "key_conflict",
            f"these keys belong to {len(found)} different {kind.name} records: "
            + ", ".join(e.id for e in found),
        )
    set_plan = plan_id is not _UNSET and kind is COMPANY
    if not found:
        entity_id = new_id(kind.prefix)
        fields: dict[str, Any] = {
            "id": entity_id,
            "environment_id": env_id,
            "keys": Jsonb(dict(keys)),
            "name": name,
            "traits": Jsonb(dict(traits or {})),
            "version": version or 0,
        }
        if set_plan:
            fields["plan_id"] = plan_id
        await conn.execute(
            sql.SQL("INSERT INTO {} ({}, last_seen_at) VALUES ({}, now())").format(
                kind.table,
                sql.SQL(", ").join(map(sql.Identifier, fields)),
                sql.SQL(", ").join(sql.Placeholder() * len(fields)),
            ),
            tuple(fields.values()),
        )
        await _add_keys(conn, kind, env_id, entity_id, keys)
        created = await get(conn, kind, env_id, entity_id)
        assert created is not None
        return None, created
    before = found[0]
    changed = {n: v for n, v in keys.items() if before.keys.get(n) != v}
    sets = [sql.SQL("last_seen_at = now()")]
    params: list[Any] = []
    if changed:
        await _add_keys(conn, kind, env_id, before.id, changed)
        sets.append(sql.SQL("keys = keys || %s"))
        params.append(Jsonb(changed))
    if name is not None:
        sets.append(sql.SQL("name = %s"))
        params.append(name)
    if traits:
        sets.append(sql.SQL("traits = traits || %s"))
        params.append(Jsonb(dict(traits)))
    if set_plan:
        sets.append(sql.SQL("plan_id = %s"))
        params.append(plan_id)
    if version is not None:
        sets.append(sql.SQL("version = %s, updated_at = now()"))
        params.append(version)
    elif len(sets) > 1:
        sets.append(sql.SQL("updated_at = now()"))
    await conn.execute(
        sql.SQL("UPDATE {} SET {} WHERE id = %s").format(kind.table, sql.SQL(", ").join(sets)),
        (*params, before.id),
    )
    after = await get(conn, kind, env_id, before.id)
    assert after is not None
    return before, after


async def touch(
    conn: AsyncConnection[DictRow], kind: Kind, env_id: str, keys: Mapping[str, str]
) -> str:
    """The id of the entity owning ``keys`` (created when new; keys merged), seen now."""
    found = await find(conn, kind, env_id, keys, lock=True)
    if len(found) != 1:  # new (or a key conflict, which upsert reports)
        _, created = await upsert(conn, kind, env_id, keys)
        return created.id
    entity = found[0]
    changed = {n: v for n, v in keys.items() if entity.keys.get(n) != v}
    if changed:
        await _add_keys(conn, kind, env_id, entity.id, changed)
        await conn.execute(
            sql.SQL(
                "UPDATE {} SET keys = keys || %s, last_seen_at = now(), updated_at = now()"
                " WHERE id = %s"
            ).format(kind.table),
            (Jsonb(changed), entity.id),
        )
    else:
        await conn.execute(
            sql.SQL("UPDATE {} SET last_seen_at = now() WHERE id = %s").format(kind.table),
            (entity.id,),
        )
    return entity.id


async def _add_keys(
    conn: AsyncConnection[DictRow],
    kind: Kind,
    env_id: str,
    entity_id: str,
    keys: Mapping[str, str],
) -> None:
    await conn.execute(
        sql.SQL(
            "INSERT INTO {keys} (environment_id, name, value, {id})"
            " SELECT %s, n, v, %s FROM unnest(%s::text[], %s::text[]) AS t(n, v)"
            " ON CONFLICT ({id}, name) DO UPDATE SET value = EXCLUDED.value"
        ).format(keys=kind.keys_table, id=kind.id_column),
        (env_id, entity_id, list(keys), list(keys.values())),
    )


async def add_membership(
    conn: AsyncConnection[DictRow], env_id: str, user_id: str, company_id: str
) -> None:
    await conn.execute(
        "INSERT INTO flag_memberships (environment_id, user_id, company_id)"
        " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
        (env_id, user_id, company_id),
    )
