"""Configuration changes: one transaction each, which first bumps the environment's version
(locking its row, so versions commit in order within an environment), then changes rows,
writes the audit entries, and rebuilds the ``flag_rulesets`` rows of every flag whose
ruleset the change touched (their version becomes the change's)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from millpond.models.flags import Entitlement, Feature, Flag, FlagRuleset, Rule

from ..accounts.service import Principal
from ..store import Store
from ..store.notifications import Invalidation
from .access import Env, environment_not_found

FLAG_COLUMNS = (
    "id, key, name, description, flag_type, default_value, feature_id, version,"
    " created_at, updated_at, deleted_at"
)
FEATURE_COLUMNS = (
    "id, name, description, feature_type, event_name, metric_aggregation, trait_key,"
    " created_at, updated_at"
)
ENTITLEMENT_COLUMNS = (
    "id, plan_id, feature_id, value_type, value_bool, value_numeric, value_trait_key, metric_period"
)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def as_json(value: BaseModel | Iterable[BaseModel] | dict[str, Any] | None) -> Any:
    """A model (or models) as plain JSON data, for audit entries."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return [item.model_dump(mode="json") for item in value]


@dataclass
class Change:
    """An open change: its connection, environment, version and author."""

    conn: AsyncConnection[DictRow]
    env: Env
    version: int
    who: Principal

    async def audit(
        self,
        entity: str,
        entity_id: str,
        action: str,
        before: BaseModel | Iterable[BaseModel] | dict[str, Any] | None = None,
        after: BaseModel | Iterable[BaseModel] | dict[str, Any] | None = None,
    ) -> None:
        before_json, after_json = as_json(before), as_json(after)
        await self.conn.execute(
            "INSERT INTO flag_audit (environment_id, version, key_id, user_id, username,"
            " entity, entity_id, action, before, after)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                self.env.id,
                self.version,
                self.who.key_id or None,  # None: a console password session
                self.who.user_id,
                self.who.username,
                entity,
                entity_id,
                action,
                Jsonb(before_json) if before_json is not None else None,
                Jsonb(after_json) if after_json is not None else None,
            ),
        )

    async def rebuild(
        self, *, flag_ids: Collection[str] = (), feature_ids: Collection[str] = ()
    ) -> dict[str, Flag]:
        """Give the flags ``flag_ids`` and those gating ``feature_ids`` this change's version
        and rewrite their rulesets; return them by id."""
        return await rebuild_rulesets(self, flag_ids, feature_ids)


@asynccontextmanager
async def change(
    store: Store, invalidation: Invalidation, env: Env, who: Principal
) -> AsyncIterator[Change]:
    """Open a change of ``env``; it commits when the block ends without an exception. The
    local flags cache is dropped right after the commit (so this replica's next check sees
    the change at once); other replicas drop theirs on the NOTIFY the commit sends."""
    async with store.transaction() as conn:
        cur = await conn.execute(
            "UPDATE flag_environments SET version = version + 1 WHERE id = %s RETURNING version",
            (env.id,),
        )
        row = await cur.fetchone()
        if row is None:  # deleted meanwhile
            raise environment_not_found(env.name)
        yield Change(conn, env, int(row["version"]), who)
    invalidation.bump()


async def rebuild_rulesets(
    ch: Change, flag_ids: Collection[str], feature_ids: Collection[str]
) -> dict[str, Flag]:
    conn, env_id = ch.conn, ch.env.id
    if not flag_ids and not feature_ids:
        return {}
    cur = await conn.execute(
        f"UPDATE flags SET version = %s WHERE environment_id = %s"
        f" AND (id = ANY(%s) OR feature_id = ANY(%s)) RETURNING {FLAG_COLUMNS}",
        (ch.version, env_id, list(flag_ids), list(feature_ids)),
    )
    flags = {row["id"]: Flag.model_validate(row) for row in await cur.fetchall()}
    if not flags:
        return {}
    rules: dict[str, list[Rule]] = {flag_id: [] for flag_id in flags}
    cur = await conn.execute(
        "SELECT flag_id, rule FROM flag_rules WHERE flag_id = ANY(%s) ORDER BY flag_id, position",
        (list(flags),),
    )
    for row in await cur.fetchall():
        rules[row["flag_id"]].append(Rule.model_validate(row["rule"]))
    gated = sorted({f.feature_id for f in flags.values() if f.feature_id is not None})
    features: dict[str, Feature] = {}
    entitlements: dict[str, list[Entitlement]] = {feature_id: [] for feature_id in gated}
    if gated:
        cur = await conn.execute(
            f"SELECT {FEATURE_COLUMNS} FROM flag_features WHERE environment_id = %s"
            " AND id = ANY(%s)",
            (env_id, gated),
        )
        features = {row["id"]: Feature.model_validate(row) for row in await cur.fetchall()}
        cur = await conn.execute(
            f"SELECT {ENTITLEMENT_COLUMNS} FROM flag_entitlements WHERE environment_id = %s"
            " AND feature_id = ANY(%s) ORDER BY plan_id, id",
            (env_id, gated),
        )
        for row in await cur.fetchall():
            entitlements[row["feature_id"]].append(Entitlement.model_validate(row))
    keys, ids, deleted, bodies = [], [], [], []
    for flag_id, flag in flags.items():
        feature = features.get(flag.feature_id) if flag.feature_id is not None else None
        ruleset = FlagRuleset(
            flag=flag,
            rules=rules[flag_id],
            feature=feature,
            entitlements=entitlements.get(flag.feature_id, []) if flag.feature_id else [],
        )
        keys.append(flag.key)
        ids.append(flag_id)
        deleted.append(flag.deleted_at)
        bodies.append(Jsonb(ruleset.model_dump(mode="json")))
    await conn.execute(
        "INSERT INTO flag_rulesets (environment_id, flag_key, flag_id, version, deleted_at,"
        " ruleset) SELECT %s, k, i, %s, d, r"
        " FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::jsonb[]) AS t(k, i, d, r)"
        " ON CONFLICT (environment_id, flag_key) DO UPDATE SET flag_id = EXCLUDED.flag_id,"
        " version = EXCLUDED.version, deleted_at = EXCLUDED.deleted_at,"
        " ruleset = EXCLUDED.ruleset, updated_at = now()",
        (env_id, ch.version, keys, ids, deleted, bodies),
    )
    return flags
