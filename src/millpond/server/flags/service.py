"""Feature flags and entitlements: environments, features, flags and their rules, plans,
entitlements, company overrides, companies and users, checks, events, audit.

Every configuration change (anything but events and checks) is one transaction that bumps
the environment's version, writes an audit entry (who, what, when, before, after) and keeps
``flag_rulesets`` current (see :mod:`.changes`); checks read compiled rulesets from a cache
dropped on every change (see :mod:`.checks`); events are durable before they are
acknowledged (see :mod:`.events`). Access rules are in :mod:`.access`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from psycopg import AsyncConnection, errors, sql
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ValidationError

from millpond.models import ApiKey, ApiKeyCreate, ApiKeyCreated
from millpond.models.flags import (
    CheckFlagRequest,
    Company,
    CompanyOverride,
    Condition,
    ConditionGroup,
    Entitlement,
    EventBatch,
    EventsAccepted,
    Feature,
    Flag,
    FlagCheck,
    FlagChecks,
    FlagRuleset,
    MetricValue,
    Plan,
    Rule,
    User,
)

from ...engine.flags import PERIODS, bucket_start
from ..accounts.service import Principal, insert_key, key_limit, require_write
from ..config import Settings
from ..errors import ServiceError, conflict, invalid, not_found
from ..store import Store
from ..store.cache import GenerationCache
from ..store.notifications import Invalidation
from . import entities, events
from .access import Access, Env, environment_not_found, require_unbound
from .changes import (
    ENTITLEMENT_COLUMNS,
    FEATURE_COLUMNS,
    FLAG_COLUMNS,
    Change,
    change,
    new_id,
)
from .checks import Checker
from .retention import Retention
from .schemas import (
    ID_PATTERN,
    AuditEntry,
    CheckRecord,
    CompanyUpsert,
    ConditionInput,
    EntitlementCreate,
    EntityLookup,
    EnvironmentCreate,
    EnvironmentUpdate,
    EventRecord,
    FeatureCreate,
    FeatureUpdate,
    FlagCreate,
    FlagEnvironment,
    FlagUpdate,
    GrantUpdate,
    OverrideCreate,
    PlanCreate,
    PlanUpdate,
    RuleInput,
    UserUpsert,
)

CHANNEL = "millpond_flags"
_ID = re.compile(ID_PATTERN)
_ENV_COLUMNS = "id, name, environment_type, version, created_at, updated_at"
_PLAN_COLUMNS = "id, name, description, created_at, updated_at"
_OVERRIDE_COLUMNS = (
    "id, company_id, feature_id, value_type, value_bool, value_numeric, value_trait_key,"
    " metric_period, expires_at, created_at, updated_at"
)
_KEY_COLUMNS = "id, name, prefix, scope, created_at, expires_at, last_used_at, service_account_id"
_DEFAULT_ENVIRONMENTS = ("development", "production")

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Page:
    """Keyset pagination: at most ``limit`` items after (or before) a cursor."""

    limit: int = 100
    after: str | None = None


def _valid_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def _text(value: str | None, name: str) -> str | None:
    """A query parameter that goes to Postgres: no NUL characters."""
    if value is not None and "\x00" in value:
        raise invalid("validation_error", f"{name}: must not contain NUL characters")
    return value


def _merge(model: type[M], current: BaseModel, update: BaseModel) -> M:
    """``current`` with the fields set in ``update``, validated as ``model``."""
    data = {**current.model_dump(), **update.model_dump(exclude_unset=True)}
    data = {k: v for k, v in data.items() if k in model.model_fields}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        raise invalid("validation_error", str(details[0]["msg"]), details) from None


def _feature_not_found(feature_id: str) -> ServiceError:
    return not_found("feature_not_found", f"no feature {feature_id!r} in this environment")


def _flag_not_found(key: str) -> ServiceError:
    return not_found("flag_not_found", f"no flag {key!r} in this environment")


def _plan_not_found(plan_id: str) -> ServiceError:
    return not_found("plan_not_found", f"no plan {plan_id!r} in this environment")


def _with_ids(rule: RuleInput, flag_key: str, taken: set[str]) -> Rule:
    """A rule as stored: ids on the rule (unique in the flag), its conditions and groups."""

    def condition(c: ConditionInput) -> Condition:
        data = c.model_dump()
        data["id"] = c.id or new_id("cond")
        return Condition.model_validate(data)

    rule_id = rule.id or new_id("rule")
    if rule_id in taken:
        raise conflict("rule_exists", f"rule id {rule_id!r} is used twice in this flag")
    taken.add(rule_id)
    return Rule(
        id=rule_id,
        flag_key=flag_key,
        name=rule.name,
        rule_type=rule.rule_type,
        priority=rule.priority,
        value=rule.value,
        conditions=[condition(c) for c in rule.conditions],
        condition_groups=[
            ConditionGroup(
                id=g.id or new_id("grp"), conditions=[condition(c) for c in g.conditions]
            )
            for g in rule.condition_groups
        ],
    )


class FlagService:
    def __init__(self, store: Store, settings: Settings, conninfo: str) -> None:
        self.store = store
        self.settings = settings
        self.invalidation = Invalidation(conninfo, CHANNEL)
        self.cache = GenerationCache(self.invalidation, ttl=settings.flags_cache_ttl_s)
        self.access = Access(store, self.cache)
        self.checker = Checker(store, self.cache)
        self.retention = Retention(store, settings)

    async def start(self) -> None:
        await self.invalidation.start()
        self.retention.start()

    async def close(self) -> None:
        await self.retention.stop()
        await self.invalidation.stop()

    # -- plumbing --------------------------------------------------------------------------

    def _change(self, env: Env, who: Principal) -> AbstractAsyncContextManager[Change]:
        return change(self.store, self.invalidation, env, who)

    async def _write(self, who: Principal, ref: str) -> Env:
        return await self.access.resolve(who, ref, write=True)

    async def _read(self, who: Principal, ref: str) -> Env:
        return await self.access.resolve(who, ref)

    async def _one(
        self, model: type[M], query: str | sql.Composable, params: Any, missing: ServiceError
    ) -> M:
        row = await self.store.fetchone(query, params)
        if row is None:
            raise missing
        return model.model_validate(row)

    async def _all(self, model: type[M], query: str | sql.Composable, params: Any) -> list[M]:
        return [model.model_validate(row) for row in await self.store.fetchall(query, params)]

    @staticmethod
    async def _fetch(
        conn: AsyncConnection[DictRow], model: type[M], query: str, params: Any
    ) -> M | None:
        row = await (await conn.execute(query, params)).fetchone()
        return model.model_validate(row) if row is not None else None

    async def _by_id(
        self,
        conn: AsyncConnection[DictRow],
        model: type[M],
        columns: str,
        table: str,
        env: Env,
        ident: str,
        *,
        id_column: str = "id",
        lock: bool = False,
    ) -> M | None:
        """One row of the environment's ``table`` (a constant) by id; None when absent,
        or when ``ident`` is no valid id (and so cannot exist)."""
        if not _valid_id(ident):
            return None
        query = f"SELECT {columns} FROM {table} WHERE environment_id = %s AND {id_column} = %s"
        return await self._fetch(
            conn, model, query + (" FOR UPDATE" if lock else ""), (env.id, ident)
        )

    # -- environments ----------------------------------------------------------------------

    async def create_environment(self, who: Principal, body: EnvironmentCreate) -> FlagEnvironment:
        require_unbound(who, await self.access.binding(who))
        require_write(who)
        env_type: str | None = body.environment_type
        if env_type is None:
            name = body.name.lower()
            env_type = name if name in ("development", "staging", "production") else "development"
        async with self.store.transaction() as conn:
            created = await self._fetch(
                conn,
                FlagEnvironment,
                f"INSERT INTO flag_environments (id, owner_id, name, environment_type, version)"
                f" VALUES (%s, %s, %s, %s, 1) ON CONFLICT DO NOTHING RETURNING {_ENV_COLUMNS}",
                (new_id("env"), who.user_id, body.name, env_type),
            )
            if created is None:
                raise conflict(
                    "environment_exists", f"you already have an environment {body.name!r}"
                )
            env = Env(created.id, who.user_id, created.name)
            await Change(conn, env, 1, who).audit("environment", env.id, "create", None, created)
        return created

    async def create_default_environments(self, who: Principal) -> list[FlagEnvironment]:
        """Create ``development`` and ``production`` unless the account has them; return
        the account's environments."""
        require_unbound(who, await self.access.binding(who))
        require_write(who)
        for name in _DEFAULT_ENVIRONMENTS:
            try:
                await self.create_environment(who, EnvironmentCreate(name=name))
            except ServiceError as exc:
                if exc.code != "environment_exists":
                    raise
        return await self.list_environments(who)

    async def list_environments(self, who: Principal) -> list[FlagEnvironment]:
        bound = await self.access.binding(who)
        if bound is not None:
            return await self._all(
                FlagEnvironment,
                f"SELECT {_ENV_COLUMNS} FROM flag_environments WHERE id = %s",
                (bound,),
            )
        return await self._all(
            FlagEnvironment,
            f"SELECT {_ENV_COLUMNS} FROM flag_environments WHERE owner_id = %s"
            " ORDER BY created_at, id",
            (who.user_id,),
        )

    async def get_environment(self, who: Principal, ref: str) -> FlagEnvironment:
        env = await self._read(who, ref)
        return await self._one(
            FlagEnvironment,
            f"SELECT {_ENV_COLUMNS} FROM flag_environments WHERE id = %s",
            (env.id,),
            environment_not_found(ref),
        )

    async def update_environment(
        self, who: Principal, ref: str, body: EnvironmentUpdate
    ) -> FlagEnvironment:
        env = await self._write(who, ref)
        require_unbound(who, await self.access.binding(who))
        before = await self.get_environment(who, ref)
        async with self._change(env, who) as ch:
            try:
                after = await self._fetch(
                    ch.conn,
                    FlagEnvironment,
                    f"UPDATE flag_environments SET name = coalesce(%s, name),"
                    f" environment_type = coalesce(%s, environment_type), updated_at = now()"
                    f" WHERE id = %s RETURNING {_ENV_COLUMNS}",
                    (body.name, body.environment_type, env.id),
                )
            except errors.UniqueViolation:
                raise conflict(
                    "environment_exists", f"you already have an environment {body.name!r}"
                ) from None
            assert after is not None
            await ch.audit("environment", env.id, "update", before, after)
        return after

    async def delete_environment(self, who: Principal, ref: str) -> None:
        """Delete an environment with everything in it (and the keys bound to it)."""
        env = await self._write(who, ref)
        require_unbound(who, await self.access.binding(who))
        await self.store.execute("DELETE FROM flag_environments WHERE id = %s", (env.id,))
        self.invalidation.bump()

    async def create_key(self, who: Principal, ref: str, body: ApiKeyCreate) -> ApiKeyCreated:
        """A key bound to the environment, belonging to its owner — to the caller's service
        account when a service account of the owner asks (a key never has more rights than
        the one that made it, a server admin's aside)."""
        env = await self._write(who, ref)
        require_unbound(who, await self.access.binding(who))
        account = who.service_account_id if who.user_id == env.owner_id else None
        async with self._change(env, who) as ch:
            limit = key_limit(self.settings, who)
            created = await insert_key(ch.conn, env.owner_id, body, account, env.id, limit)
            await ch.audit("key", created.id, "create", None, ApiKey(**created.model_dump()))
        return created

    async def list_keys(self, who: Principal, ref: str) -> list[ApiKey]:
        env = await self._read(who, ref)
        require_unbound(who, await self.access.binding(who))
        return await self._all(
            ApiKey,
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE environment_id = %s"
            " AND revoked_at IS NULL ORDER BY created_at, id",
            (env.id,),
        )

    async def revoke_key(self, who: Principal, ref: str, key_id: str) -> None:
        env = await self._write(who, ref)
        require_unbound(who, await self.access.binding(who))
        missing = not_found("key_not_found", f"no active key {key_id!r} bound to {ref!r}")
        if not _valid_id(key_id):
            raise missing
        async with self._change(env, who) as ch:
            before = await self._fetch(
                ch.conn,
                ApiKey,
                f"UPDATE api_keys SET revoked_at = now() WHERE environment_id = %s AND id = %s"
                f" AND revoked_at IS NULL RETURNING {_KEY_COLUMNS}",
                (env.id, key_id),
            )
            if before is None:
                raise missing
            await ch.audit("key", key_id, "delete", before, None)
        self.store.changed()

    # -- features --------------------------------------------------------------------------

    async def create_feature(self, who: Principal, ref: str, body: FeatureCreate) -> Feature:
        env = await self._write(who, ref)
        feature_id = body.id or new_id("feat")
        async with self._change(env, who) as ch:
            created = await self._fetch(
                ch.conn,
                Feature,
                f"INSERT INTO flag_features (environment_id, id, name, description, feature_type,"
                f" event_name, metric_aggregation, trait_key, version)"
                f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
                f" RETURNING {FEATURE_COLUMNS}",
                (
                    env.id,
                    feature_id,
                    body.name,
                    body.description,
                    body.feature_type,
                    body.event_name,
                    body.metric_aggregation,
                    body.trait_key,
                    ch.version,
                ),
            )
            if created is None:
                raise conflict("feature_exists", f"feature {feature_id!r} already exists")
            await ch.audit("feature", feature_id, "create", None, created)
        return created

    async def list_features(self, who: Principal, ref: str, page: Page) -> list[Feature]:
        env = await self._read(who, ref)
        return await self._all(
            Feature,
            f"SELECT {FEATURE_COLUMNS} FROM flag_features WHERE environment_id = %s"
            " AND (%s::text IS NULL OR id > %s) ORDER BY id LIMIT %s",
            (env.id, page.after, page.after, page.limit),
        )

    async def _feature(
        self, conn: AsyncConnection[DictRow], env: Env, feature_id: str, lock: bool = False
    ) -> Feature:
        found = await self._by_id(
            conn, Feature, FEATURE_COLUMNS, "flag_features", env, feature_id, lock=lock
        )
        if found is None:
            raise _feature_not_found(feature_id)
        return found

    async def get_feature(self, who: Principal, ref: str, feature_id: str) -> Feature:
        env = await self._read(who, ref)
        async with self.store.pool.connection() as conn:
            return await self._feature(conn, env, feature_id)

    async def update_feature(
        self, who: Principal, ref: str, feature_id: str, body: FeatureUpdate
    ) -> Feature:
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            before = await self._feature(ch.conn, env, feature_id, lock=True)
            merged = _merge(FeatureCreate, before, body)
            after = await self._fetch(
                ch.conn,
                Feature,
                f"UPDATE flag_features SET name = %s, description = %s, feature_type = %s,"
                f" event_name = %s, metric_aggregation = %s, trait_key = %s, version = %s,"
                f" updated_at = now() WHERE environment_id = %s AND id = %s"
                f" RETURNING {FEATURE_COLUMNS}",
                (
                    merged.name,
                    merged.description,
                    merged.feature_type,
                    merged.event_name,
                    merged.metric_aggregation,
                    merged.trait_key,
                    ch.version,
                    env.id,
                    before.id,
                ),
            )
            assert after is not None
            await ch.audit("feature", before.id, "update", before, after)
            await ch.rebuild(feature_ids=[before.id])
        return after

    async def delete_feature(self, who: Principal, ref: str, feature_id: str) -> None:
        """Delete a feature with its entitlements and overrides; flags gating it then gate
        nothing."""
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            before = await self._feature(ch.conn, env, feature_id, lock=True)
            cur = await ch.conn.execute(
                "UPDATE flags SET feature_id = NULL, updated_at = now()"
                " WHERE environment_id = %s AND feature_id = %s RETURNING id",
                (env.id, before.id),
            )
            gating = [row["id"] for row in await cur.fetchall()]
            await ch.conn.execute(
                "DELETE FROM flag_features WHERE environment_id = %s AND id = %s",
                (env.id, before.id),
            )
            await ch.audit("feature", before.id, "delete", before, None)
            await ch.rebuild(flag_ids=gating)

    # -- flags -----------------------------------------------------------------------------

    async def _check_feature(self, ch: Change, feature_id: str | None) -> None:
        if feature_id is not None:
            await self._feature(ch.conn, ch.env, feature_id)

    async def _flag(
        self,
        conn: AsyncConnection[DictRow],
        env: Env,
        key: str,
        *,
        deleted: bool | None = False,
        lock: bool = False,
    ) -> Flag:
        """The flag ``key``: live ones only (``deleted=False``), deleted ones only (True),
        or either (None)."""
        found = await self._by_id(
            conn, Flag, FLAG_COLUMNS, "flags", env, key, id_column="key", lock=lock
        )
        if found is None or (deleted is not None and (found.deleted_at is not None) != deleted):
            if found is not None and deleted:
                raise conflict("flag_not_deleted", f"flag {key!r} is not deleted")
            raise _flag_not_found(key)
        return found

    async def create_flag(self, who: Principal, ref: str, body: FlagCreate) -> Flag:
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            await self._check_feature(ch, body.feature_id)
            flag_id = new_id("flag")
            cur = await ch.conn.execute(
                "INSERT INTO flags (id, environment_id, key, name, description, flag_type,"
                " default_value, feature_id, version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING RETURNING id",
                (
                    flag_id,
                    env.id,
                    body.key,
                    body.name,
                    body.description,
                    body.flag_type,
                    body.default_value,
                    body.feature_id,
                    ch.version,
                ),
            )
            if await cur.fetchone() is None:
                existing = await self._flag(ch.conn, env, body.key, deleted=None)
                deleted = existing.deleted_at is not None
                raise ServiceError(
                    409,
                    "flag_exists",
                    f"flag {body.key!r} already exists"
                    + (" (deleted: restore it with POST …/restore)" if deleted else ""),
                    {"deleted": deleted},
                )
            rules = await self._store_rules(ch, flag_id, body.key, body.rules)
            flag = (await ch.rebuild(flag_ids=[flag_id]))[flag_id]
            await ch.audit(
                "flag", flag_id, "create", None, {**as_dict(flag), "rules": as_list(rules)}
            )
        return flag

    async def list_flags(
        self,
        who: Principal,
        ref: str,
        page: Page,
        since_version: int | None = None,
        include_deleted: bool = False,
    ) -> list[Flag]:
        """Live flags by key; with ``since_version``, every flag changed after that version
        (deleted ones included), by version then key."""
        env = await self._read(who, ref)
        if since_version is not None:
            return await self._all(
                Flag,
                f"SELECT {FLAG_COLUMNS} FROM flags WHERE environment_id = %s AND version > %s"
                " ORDER BY version, key",
                (env.id, since_version),
            )
        return await self._all(
            Flag,
            f"SELECT {FLAG_COLUMNS} FROM flags WHERE environment_id = %s"
            " AND (%s OR deleted_at IS NULL) AND (%s::text IS NULL OR key > %s)"
            " ORDER BY key LIMIT %s",
            (env.id, include_deleted, page.after, page.after, page.limit),
        )

    async def get_flag(
        self, who: Principal, ref: str, key: str, include_deleted: bool = False
    ) -> Flag:
        env = await self._read(who, ref)
        async with self.store.pool.connection() as conn:
            return await self._flag(conn, env, key, deleted=None if include_deleted else False)

    async def update_flag(self, who: Principal, ref: str, key: str, body: FlagUpdate) -> Flag:
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            before = await self._flag(ch.conn, env, key, lock=True)
            fields = body.model_dump(exclude_unset=True)
            for name in ("name", "description", "default_value"):
                if name in fields and fields[name] is None:
                    raise invalid("validation_error", f"{name}: must not be null")
            if "feature_id" in fields:
                await self._check_feature(ch, fields["feature_id"])
            if fields:
                await ch.conn.execute(
                    sql.SQL("UPDATE flags SET {}, updated_at = now() WHERE id = %s").format(
                        sql.SQL(", ").join(
                            sql.SQL("{} = %s").format(sql.Identifier(name)) for name in fields
                        )
                    ),
                    (*fields.values(), _fid(before)),
                )
            after = (await ch.rebuild(flag_ids=[_fid(before)]))[_fid(before)]
            await ch.audit("flag", _fid(before), "update", before, after)
        return after

    async def delete_flag(self, who: Principal, ref: str, key: str) -> None:
        """Soft delete: checks answer FLAG_NOT_FOUND; restore brings it back with its rules."""
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            before = await self._flag(ch.conn, env, key, lock=True)
            await ch.conn.execute(
                "UPDATE flags SET deleted_at = now(), updated_at = now() WHERE id = %s",
                (_fid(before),),
            )
            after = (await ch.rebuild(flag_ids=[_fid(before)]))[_fid(before)]
            await ch.audit("flag", _fid(before), "delete", before, after)

    async def restore_flag(self, who: Principal, ref: str, key: str) -> Flag:
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            before = await self._flag(ch.conn, env, key, deleted=True, lock=True)
            await ch.conn.execute(
                "UPDATE flags SET deleted_at = NULL, updated_at = now() WHERE id = %s",
                (_fid(before),),
            )
            after = (await ch.rebuild(flag_ids=[_fid(before)]))[_fid(before)]
            await ch.audit("flag", _fid(before), "restore", before, after)
        return after

    async def purge_flag(self, who: Principal, ref: str, key: str) -> None:
        """Hard delete a flag already soft-deleted: it, its rules and its ruleset go for
        good (the audit log keeps the record)."""
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            before = await self._flag(ch.conn, env, key, deleted=True, lock=True)
            await ch.conn.execute("DELETE FROM flags WHERE id = %s", (_fid(before),))
            await ch.audit("flag", _fid(before), "purge", before, None)

    async def get_ruleset(self, who: Principal, ref: str, key: str) -> FlagRuleset:
        env = await self._read(who, ref)
        if not _valid_id(key):
            raise _flag_not_found(key)
        row = await self.store.fetchone(
            "SELECT ruleset FROM flag_rulesets WHERE environment_id = %s AND flag_key = %s"
            " AND deleted_at IS NULL",
            (env.id, key),
        )
        if row is None:
            raise _flag_not_found(key)
        return FlagRuleset.model_validate(row["ruleset"])

    async def list_rulesets(
        self, who: Principal, ref: str, since_version: int | None = None
    ) -> list[FlagRuleset]:
        """Every live flag's ruleset (what an SDK evaluates locally); with
        ``since_version``, those changed after it, deleted ones included (their flag has
        ``deleted_at``), by version."""
        env = await self._read(who, ref)
        rows = await self.store.fetchall(
            "SELECT ruleset FROM flag_rulesets WHERE environment_id = %s"
            " AND (CASE WHEN %s::bigint IS NULL THEN deleted_at IS NULL ELSE version > %s END)"
            " ORDER BY version, flag_key",
            (env.id, since_version, since_version),
        )
        return [FlagRuleset.model_validate(row["ruleset"]) for row in rows]

    # -- rules -----------------------------------------------------------------------------

    async def _store_rules(
        self, ch: Change, flag_id: str, key: str, rules: list[RuleInput], start: int = 0
    ) -> list[Rule]:
        taken: set[str] = set()
        if start:
            cur = await ch.conn.execute("SELECT id FROM flag_rules WHERE flag_id = %s", (flag_id,))
            taken = {row["id"] for row in await cur.fetchall()}
        stored = [_with_ids(rule, key, taken) for rule in rules]
        if stored:
            await ch.conn.execute(
                "INSERT INTO flag_rules (flag_id, id, environment_id, position, rule, version)"
                " SELECT %s, i, %s, p, r, %s"
                " FROM unnest(%s::text[], %s::int[], %s::jsonb[]) AS t(i, p, r)",
                (
                    flag_id,
                    ch.env.id,
                    ch.version,
                    [r.id for r in stored],
                    list(range(start, start + len(stored))),
                    [Jsonb(r.model_dump(mode="json")) for r in stored],
                ),
            )
        return stored

    async def _rules(self, conn: AsyncConnection[DictRow], flag_id: str) -> list[Rule]:
        cur = await conn.execute(
            "SELECT rule FROM flag_rules WHERE flag_id = %s ORDER BY position", (flag_id,)
        )
        return [Rule.model_validate(row["rule"]) for row in await cur.fetchall()]

    async def list_rules(self, who: Principal, ref: str, key: str) -> list[Rule]:
        env = await self._read(who, ref)
        async with self.store.pool.connection() as conn:
            flag = await self._flag(conn, env, key)
            return await self._rules(conn, _fid(flag))

    async def replace_rules(
        self, who: Principal, ref: str, key: str, rules: list[RuleInput]
    ) -> list[Rule]:
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            flag = await self._flag(ch.conn, env, key, lock=True)
            before = await self._rules(ch.conn, _fid(flag))
            await ch.conn.execute("DELETE FROM flag_rules WHERE flag_id = %s", (_fid(flag),))
            after = await self._store_rules(ch, _fid(flag), flag.key, rules)
            await ch.rebuild(flag_ids=[_fid(flag)])
            await ch.audit(
                "flag", _fid(flag), "replace", {"rules": as_list(before)}, {"rules": as_list(after)}
            )
        return after

    async def add_rule(self, who: Principal, ref: str, key: str, rule: RuleInput) -> Rule:
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            flag = await self._flag(ch.conn, env, key, lock=True)
            cur = await ch.conn.execute(
                "SELECT coalesce(max(position) + 1, 0) AS next, count(*) AS n"
                " FROM flag_rules WHERE flag_id = %s",
                (_fid(flag),),
            )
            row = await cur.fetchone()
            assert row is not None
            if row["n"] >= 200:
                raise invalid("too_many_rules", "a flag has at most 200 rules")
            (stored,) = await self._store_rules(ch, _fid(flag), flag.key, [rule], start=row["next"])
            await ch.rebuild(flag_ids=[_fid(flag)])
            await ch.audit("rule", stored.id or "", "create", None, stored)
        return stored

    async def _rule(
        self, conn: AsyncConnection[DictRow], flag: Flag, rule_id: str
    ) -> tuple[Rule, int]:
        row = None
        if _valid_id(rule_id):
            cur = await conn.execute(
                "SELECT rule, position FROM flag_rules WHERE flag_id = %s AND id = %s",
                (_fid(flag), rule_id),
            )
            row = await cur.fetchone()
        if row is None:
            raise not_found("rule_not_found", f"flag {flag.key!r} has no rule {rule_id!r}")
        return Rule.model_validate(row["rule"]), int(row["position"])

    async def get_rule(self, who: Principal, ref: str, key: str, rule_id: str) -> Rule:
        env = await self._read(who, ref)
        async with self.store.pool.connection() as conn:
            flag = await self._flag(conn, env, key)
            rule, _ = await self._rule(conn, flag, rule_id)
            return rule

    async def replace_rule(
        self, who: Principal, ref: str, key: str, rule_id: str, body: RuleInput
    ) -> Rule:
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            flag = await self._flag(ch.conn, env, key, lock=True)
            before, _ = await self._rule(ch.conn, flag, rule_id)
            if body.id is not None and body.id != rule_id:
                raise invalid("validation_error", "id: must be the rule's id (or left out)")
            after = _with_ids(body.model_copy(update={"id": rule_id}), flag.key, set())
            await ch.conn.execute(
                "UPDATE flag_rules SET rule = %s, version = %s, updated_at = now()"
                " WHERE flag_id = %s AND id = %s",
                (Jsonb(after.model_dump(mode="json")), ch.version, _fid(flag), rule_id),
            )
            await ch.rebuild(flag_ids=[_fid(flag)])
            await ch.audit("rule", rule_id, "update", before, after)
        return after

    async def delete_rule(self, who: Principal, ref: str, key: str, rule_id: str) -> None:
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            flag = await self._flag(ch.conn, env, key, lock=True)
            before, _ = await self._rule(ch.conn, flag, rule_id)
            await ch.conn.execute(
                "DELETE FROM flag_rules WHERE flag_id = %s AND id = %s", (_fid(flag), rule_id)
            )
            await ch.rebuild(flag_ids=[_fid(flag)])
            await ch.audit("rule", rule_id, "delete", before, None)

    # -- plans -----------------------------------------------------------------------------

    async def _plan(
        self, conn: AsyncConnection[DictRow], env: Env, plan_id: str, lock: bool = False
    ) -> Plan:
        found = await self._by_id(conn, Plan, _PLAN_COLUMNS, "flag_plans", env, plan_id, lock=lock)
        if found is None:
            raise _plan_not_found(plan_id)
        return found

    async def create_plan(self, who: Principal, ref: str, body: PlanCreate) -> Plan:
        env = await self._write(who, ref)
        plan_id = body.id or new_id("plan")
        async with self._change(env, who) as ch:
            created = await self._fetch(
                ch.conn,
                Plan,
                f"INSERT INTO flag_plans (environment_id, id, name, description, version)"
                f" VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING {_PLAN_COLUMNS}",
                (env.id, plan_id, body.name, body.description, ch.version),
            )
            if created is None:
                raise conflict("plan_exists", f"plan {plan_id!r} already exists")
            await ch.audit("plan", plan_id, "create", None, created)
        return created

    async def list_plans(self, who: Principal, ref: str, page: Page) -> list[Plan]:
        env = await self._read(who, ref)
        return await self._all(
            Plan,
            f"SELECT {_PLAN_COLUMNS} FROM flag_plans WHERE environment_id = %s"
            " AND (%s::text IS NULL OR id > %s) ORDER BY id LIMIT %s",
            (env.id, page.after, page.after, page.limit),
        )

    async def get_plan(self, who: Principal, ref: str, plan_id: str) -> Plan:
        env = await self._read(who, ref)
        async with self.store.pool.connection() as conn:
            return await self._plan(conn, env, plan_id)

    async def update_plan(self, who: Principal, ref: str, plan_id: str, body: PlanUpdate) -> Plan:
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            before = await self._plan(ch.conn, env, plan_id, lock=True)
            merged = _merge(PlanCreate, before, body)
            after = await self._fetch(
                ch.conn,
                Plan,
                f"UPDATE flag_plans SET name = %s, description = %s, version = %s,"
                f" updated_at = now() WHERE environment_id = %s AND id = %s"
                f" RETURNING {_PLAN_COLUMNS}",
                (merged.name, merged.description, ch.version, env.id, before.id),
            )
            assert after is not None
            await ch.audit("plan", before.id, "update", before, after)
        return after

    async def delete_plan(self, who: Principal, ref: str, plan_id: str) -> None:
        """Delete a plan with its entitlements; its companies then have no plan."""
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            before = await self._plan(ch.conn, env, plan_id, lock=True)
            await ch.conn.execute(
                "UPDATE flag_companies SET plan_id = NULL, version = %s, updated_at = now()"
                " WHERE environment_id = %s AND plan_id = %s",
                (ch.version, env.id, before.id),
            )
            cur = await ch.conn.execute(
                "DELETE FROM flag_entitlements WHERE environment_id = %s AND plan_id = %s"
                " RETURNING feature_id",
                (env.id, before.id),
            )
            features = [row["feature_id"] for row in await cur.fetchall()]
            await ch.conn.execute(
                "DELETE FROM flag_plans WHERE environment_id = %s AND id = %s", (env.id, before.id)
            )
            await ch.audit("plan", before.id, "delete", before, None)
            await ch.rebuild(feature_ids=features)

    # -- entitlements ----------------------------------------------------------------------

    async def _entitlement(
        self, conn: AsyncConnection[DictRow], env: Env, entitlement_id: str
    ) -> Entitlement:
        found = await self._by_id(
            conn,
            Entitlement,
            ENTITLEMENT_COLUMNS,
            "flag_entitlements",
            env,
            entitlement_id,
            lock=True,
        )
        if found is None:
            raise not_found("entitlement_not_found", f"no entitlement {entitlement_id!r}")
        return found

    async def create_entitlement(
        self, who: Principal, ref: str, body: EntitlementCreate
    ) -> Entitlement:
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            await self._plan(ch.conn, env, body.plan_id)
            await self._feature(ch.conn, env, body.feature_id)
            entitlement_id = new_id("ent")
            created = await self._fetch(
                ch.conn,
                Entitlement,
                f"INSERT INTO flag_entitlements (id, environment_id, plan_id, feature_id,"
                f" value_type, value_bool, value_numeric, value_trait_key, metric_period,"
                f" version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                f" ON CONFLICT DO NOTHING RETURNING {ENTITLEMENT_COLUMNS}",
                (
                    entitlement_id,
                    env.id,
                    body.plan_id,
                    body.feature_id,
                    body.value_type,
                    body.value_bool,
                    body.value_numeric,
                    body.value_trait_key,
                    body.metric_period,
                    ch.version,
                ),
            )
            if created is None:
                raise conflict(
                    "entitlement_exists",
                    f"plan {body.plan_id!r} already has an entitlement to {body.feature_id!r}",
                )
            await ch.audit("entitlement", entitlement_id, "create", None, created)
            await ch.rebuild(feature_ids=[body.feature_id])
        return created

    async def list_entitlements(
        self,
        who: Principal,
        ref: str,
        page: Page,
        plan_id: str | None = None,
        feature_id: str | None = None,
    ) -> list[Entitlement]:
        env = await self._read(who, ref)
        return await self._all(
            Entitlement,
            f"SELECT {ENTITLEMENT_COLUMNS} FROM flag_entitlements WHERE environment_id = %s"
            " AND (%s::text IS NULL OR plan_id = %s) AND (%s::text IS NULL OR feature_id = %s)"
            " AND (%s::text IS NULL OR id > %s) ORDER BY id LIMIT %s",
            (
                env.id,
                _text(plan_id, "plan_id"),
                plan_id,
                _text(feature_id, "feature_id"),
                feature_id,
                page.after,
                page.after,
                page.limit,
            ),
        )

    async def get_entitlement(self, who: Principal, ref: str, entitlement_id: str) -> Entitlement:
        env = await self._read(who, ref)
        async with self.store.transaction() as conn:
            return await self._entitlement(conn, env, entitlement_id)

    async def update_entitlement(
        self, who: Principal, ref: str, entitlement_id: str, body: GrantUpdate
    ) -> Entitlement:
        env = await self._write(who, ref)
        if "expires_at" in body.model_fields_set:
            raise invalid("validation_error", "expires_at: entitlements do not expire")
        async with self._change(env, who) as ch:
            before = await self._entitlement(ch.conn, env, entitlement_id)
            merged = _merge(EntitlementCreate, before, body)
            after = await self._fetch(
                ch.conn,
                Entitlement,
                f"UPDATE flag_entitlements SET value_type = %s, value_bool = %s,"
                f" value_numeric = %s, value_trait_key = %s, metric_period = %s, version = %s,"
                f" updated_at = now() WHERE id = %s RETURNING {ENTITLEMENT_COLUMNS}",
                (
                    merged.value_type,
                    merged.value_bool,
                    merged.value_numeric,
                    merged.value_trait_key,
                    merged.metric_period,
                    ch.version,
                    before.id,
                ),
            )
            assert after is not None
            await ch.audit("entitlement", before.id, "update", before, after)
            await ch.rebuild(feature_ids=[before.feature_id])
        return after

    async def delete_entitlement(self, who: Principal, ref: str, entitlement_id: str) -> None:
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            before = await self._entitlement(ch.conn, env, entitlement_id)
            await ch.conn.execute("DELETE FROM flag_entitlements WHERE id = %s", (before.id,))
            await ch.audit("entitlement", before.id, "delete", before, None)
            await ch.rebuild(feature_ids=[before.feature_id])

    # -- company overrides -----------------------------------------------------------------

    async def _override(
        self, conn: AsyncConnection[DictRow], env: Env, override_id: str
    ) -> CompanyOverride:
        found = await self._by_id(
            conn,
            CompanyOverride,
            _OVERRIDE_COLUMNS,
            "flag_company_overrides",
            env,
            override_id,
            lock=True,
        )
        if found is None:
            raise not_found("override_not_found", f"no company override {override_id!r}")
        return found

    async def _company_id(
        self,
        conn: AsyncConnection[DictRow],
        env: Env,
        company_id: str | None,
        keys: dict[str, str] | None,
    ) -> str:
        if keys:
            found = await entities.find(conn, entities.COMPANY, env.id, keys)
            if len(found) > 1:
                raise conflict("key_conflict", "these keys belong to different companies")
            if not found:
                raise entities.not_found(entities.COMPANY, f"with keys {keys!r}")
            return found[0].id
        assert company_id is not None
        if not _valid_id(company_id) or (
            await entities.get(conn, entities.COMPANY, env.id, company_id) is None
        ):
            raise entities.not_found(entities.COMPANY, repr(company_id))
        return company_id

    async def create_override(
        self, who: Principal, ref: str, body: OverrideCreate
    ) -> CompanyOverride:
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            company_id = await self._company_id(ch.conn, env, body.company_id, body.company)
            await self._feature(ch.conn, env, body.feature_id)
            override_id = new_id("ovr")
            created = await self._fetch(
                ch.conn,
                CompanyOverride,
                f"INSERT INTO flag_company_overrides (id, environment_id, company_id, feature_id,"
                f" value_type, value_bool, value_numeric, value_trait_key, metric_period,"
                f" expires_at, version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                f" ON CONFLICT DO NOTHING RETURNING {_OVERRIDE_COLUMNS}",
                (
                    override_id,
                    env.id,
                    company_id,
                    body.feature_id,
                    body.value_type,
                    body.value_bool,
                    body.value_numeric,
                    body.value_trait_key,
                    body.metric_period,
                    body.expires_at,
                    ch.version,
                ),
            )
            if created is None:
                raise conflict(
                    "override_exists",
                    f"company {company_id!r} already has an override of {body.feature_id!r}",
                )
            await ch.audit("override", override_id, "create", None, created)
        return created

    async def list_overrides(
        self,
        who: Principal,
        ref: str,
        page: Page,
        company_id: str | None = None,
        feature_id: str | None = None,
    ) -> list[CompanyOverride]:
        env = await self._read(who, ref)
        return await self._all(
            CompanyOverride,
            f"SELECT {_OVERRIDE_COLUMNS} FROM flag_company_overrides WHERE environment_id = %s"
            " AND (%s::text IS NULL OR company_id = %s) AND (%s::text IS NULL OR feature_id = %s)"
            " AND (%s::text IS NULL OR id > %s) ORDER BY id LIMIT %s",
            (
                env.id,
                _text(company_id, "company_id"),
                company_id,
                _text(feature_id, "feature_id"),
                feature_id,
                page.after,
                page.after,
                page.limit,
            ),
        )

    async def get_override(self, who: Principal, ref: str, override_id: str) -> CompanyOverride:
        env = await self._read(who, ref)
        async with self.store.transaction() as conn:
            return await self._override(conn, env, override_id)

    async def update_override(
        self, who: Principal, ref: str, override_id: str, body: GrantUpdate
    ) -> CompanyOverride:
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            before = await self._override(ch.conn, env, override_id)
            merged = _merge(OverrideCreate, before, body)
            after = await self._fetch(
                ch.conn,
                CompanyOverride,
                f"UPDATE flag_company_overrides SET value_type = %s, value_bool = %s,"
                f" value_numeric = %s, value_trait_key = %s, metric_period = %s,"
                f" expires_at = %s, version = %s, updated_at = now() WHERE id = %s"
                f" RETURNING {_OVERRIDE_COLUMNS}",
                (
                    merged.value_type,
                    merged.value_bool,
                    merged.value_numeric,
                    merged.value_trait_key,
                    merged.metric_period,
                    merged.expires_at,
                    ch.version,
                    before.id,
                ),
            )
            assert after is not None
            await ch.audit("override", before.id, "update", before, after)
        return after

    async def delete_override(self, who: Principal, ref: str, override_id: str) -> None:
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            before = await self._override(ch.conn, env, override_id)
            await ch.conn.execute("DELETE FROM flag_company_overrides WHERE id = %s", (before.id,))
            await ch.audit("override", before.id, "delete", before, None)

    # -- companies and users ---------------------------------------------------------------

    async def upsert_company(
        self, who: Principal, ref: str, body: CompanyUpsert
    ) -> tuple[Company, bool]:
        """(the company, whether it was created)."""
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            extra: dict[str, Any] = {}
            if "plan_id" in body.model_fields_set:
                if body.plan_id is not None:
                    await self._plan(ch.conn, env, body.plan_id)
                extra["plan_id"] = body.plan_id
            before, after = await _claiming(
                entities.upsert(
                    ch.conn,
                    entities.COMPANY,
                    env.id,
                    body.keys,
                    name=body.name,
                    traits=body.traits,
                    version=ch.version,
                    **extra,
                )
            )
            await ch.audit("company", after.id, "update" if before else "create", before, after)
        assert isinstance(after, Company)
        return after, before is None

    async def upsert_user(self, who: Principal, ref: str, body: UserUpsert) -> tuple[User, bool]:
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            company_id = None
            if body.company:
                company_before, company = await _claiming(
                    entities.upsert(
                        ch.conn, entities.COMPANY, env.id, body.company, version=ch.version
                    )
                )
                if company_before is None:
                    await ch.audit("company", company.id, "create", None, company)
                company_id = company.id
            before, after = await _claiming(
                entities.upsert(
                    ch.conn,
                    entities.USER,
                    env.id,
                    body.keys,
                    name=body.name,
                    traits=body.traits,
                    version=ch.version,
                )
            )
            if company_id is not None:
                await entities.add_membership(ch.conn, env.id, after.id, company_id)
                refreshed = await entities.get(ch.conn, entities.USER, env.id, after.id)
                assert refreshed is not None
                after = refreshed
            await ch.audit("user", after.id, "update" if before else "create", before, after)
        assert isinstance(after, User)
        return after, before is None

    async def list_entities(
        self,
        kind: entities.Kind,
        who: Principal,
        ref: str,
        page: Page,
        q: str | None = None,
        plan_id: str | None = None,
        company_id: str | None = None,
    ) -> list[Any]:
        env = await self._read(who, ref)
        where = [sql.SQL("e.environment_id = %s")]
        params: list[Any] = [env.id]
        if q:
            where.append(sql.SQL("e.name ILIKE %s"))
            params.append("%" + _like(_text(q, "q") or "") + "%")
        if plan_id is not None and kind is entities.COMPANY:
            where.append(sql.SQL("e.plan_id = %s"))
            params.append(_text(plan_id, "plan_id"))
        if company_id is not None and kind is entities.USER:
            where.append(
                sql.SQL(
                    "e.id IN (SELECT m.user_id FROM flag_memberships m WHERE m.company_id = %s)"
                )
            )
            params.append(_text(company_id, "company_id"))
        if page.after is not None:
            where.append(sql.SQL("e.id > %s"))
            params.append(page.after)
        query = sql.SQL("{} ORDER BY e.id LIMIT %s").format(
            entities.select(kind, sql.SQL(" AND ").join(where))
        )
        rows = await self.store.fetchall(query, (*params, page.limit))
        return [entities.to_model(kind, row) for row in rows]

    async def _entity(
        self, conn: AsyncConnection[DictRow], kind: entities.Kind, env: Env, entity_id: str
    ) -> Company | User:
        found = None
        if _valid_id(entity_id):
            found = await entities.get(conn, kind, env.id, entity_id)
        if found is None:
            raise entities.not_found(kind, repr(entity_id))
        return found

    async def get_entity(
        self, kind: entities.Kind, who: Principal, ref: str, entity_id: str
    ) -> Any:
        env = await self._read(who, ref)
        async with self.store.pool.connection() as conn:
            return await self._entity(conn, kind, env, entity_id)

    async def lookup_entity(
        self, kind: entities.Kind, who: Principal, ref: str, body: EntityLookup
    ) -> Any:
        env = await self._read(who, ref)
        async with self.store.pool.connection() as conn:
            found = await entities.find(conn, kind, env.id, body.keys)
        if len(found) > 1:
            raise conflict("key_conflict", f"these keys belong to different {kind.name} records")
        if not found:
            raise entities.not_found(kind, f"with keys {body.keys!r}")
        return found[0]

    async def delete_entity(
        self, kind: entities.Kind, who: Principal, ref: str, entity_id: str
    ) -> None:
        """Delete a company or user with its keys, memberships, overrides and metrics (its
        events stay in the event log)."""
        env = await self._write(who, ref)
        async with self._change(env, who) as ch:
            before = await self._entity(ch.conn, kind, env, entity_id)
            await ch.conn.execute(
                sql.SQL("DELETE FROM {} WHERE id = %s").format(kind.table), (before.id,)
            )
            await ch.conn.execute(
                "DELETE FROM flag_metrics WHERE environment_id = %s AND entity_id = %s",
                (env.id, before.id),
            )
            await ch.audit(kind.name, before.id, "delete", before, None)

    async def entity_metrics(
        self, kind: entities.Kind, who: Principal, ref: str, entity_id: str
    ) -> list[MetricValue]:
        """The entity's usage now: every event's count and sum in each current period."""
        env = await self._read(who, ref)
        now = datetime.now(UTC)
        async with self.store.pool.connection() as conn:
            entity = await self._entity(conn, kind, env, entity_id)
            cur = await conn.execute(
                "SELECT event, period, count, quantity FROM flag_metrics"
                " WHERE environment_id = %s AND entity_id = %s"
                " AND (period, bucket_start) IN (('all_time', %s::timestamptz),"
                " ('current_day', %s::timestamptz), ('current_week', %s::timestamptz),"
                " ('current_month', %s::timestamptz))",
                (env.id, entity.id, *(bucket_start(p, now) for p in PERIODS)),
            )
            rows = await cur.fetchall()
        order = {p: n for n, p in enumerate(PERIODS)}
        values = []
        for row in sorted(rows, key=lambda r: (r["event"], order[r["period"]])):
            quantity = row["quantity"]
            total = int(quantity) if quantity == int(quantity) else float(quantity)
            values.append(MetricValue(event=row["event"], period=row["period"], value=row["count"]))
            values.append(
                MetricValue(
                    event=row["event"], period=row["period"], aggregation="sum", value=total
                )
            )
        return values

    # -- checks ----------------------------------------------------------------------------

    async def check(
        self, who: Principal, ref: str, key: str, body: CheckFlagRequest, record: bool = False
    ) -> FlagCheck:
        env = await self._read(who, ref)
        _text(key, "key")
        (result,) = await self.checker.check(env.id, [key], body.company, body.user)
        if record or self.settings.flags_record_checks:
            await self.checker.record(env.id, who.key_id, [result], body.company, body.user)
        return result

    async def check_all(
        self, who: Principal, ref: str, body: CheckFlagRequest, record: bool = False
    ) -> FlagChecks:
        env = await self._read(who, ref)
        results = await self.checker.check(env.id, None, body.company, body.user)
        if record or self.settings.flags_record_checks:
            await self.checker.record(env.id, who.key_id, results, body.company, body.user)
        return FlagChecks(flags=results)

    async def list_checks(
        self,
        who: Principal,
        ref: str,
        limit: int,
        before: int | None = None,
        flag: str | None = None,
    ) -> list[CheckRecord]:
        env = await self._read(who, ref)
        return await self._all(
            CheckRecord,
            "SELECT id, flag_key AS flag, flag_id, value, reason, rule_id, rule_type,"
            ' company_id, user_id, company_keys AS company, user_keys AS "user", key_id,'
            " checked_at FROM flag_checks WHERE environment_id = %s"
            " AND (%s::text IS NULL OR flag_key = %s) AND (%s::bigint IS NULL OR id < %s)"
            " ORDER BY id DESC LIMIT %s",
            (env.id, _text(flag, "flag"), flag, before, before, limit),
        )

    # -- events ----------------------------------------------------------------------------

    async def ingest(self, who: Principal, ref: str, batch: EventBatch) -> EventsAccepted:
        env = await self._write(who, ref)
        return await events.ingest(self.store, env.id, batch.events)

    async def list_events(
        self,
        who: Principal,
        ref: str,
        limit: int,
        before: int | None = None,
        event_type: Literal["identify", "track"] | None = None,
        event: str | None = None,
        company_id: str | None = None,
        user_id: str | None = None,
    ) -> list[EventRecord]:
        env = await self._read(who, ref)
        return await self._all(
            EventRecord,
            "SELECT id, seq, event_type, event, quantity, company_id, user_id, idempotency_key,"
            " body, sent_at, received_at FROM flag_events WHERE environment_id = %s"
            " AND (%s::text IS NULL OR event_type = %s) AND (%s::text IS NULL OR event = %s)"
            " AND (%s::text IS NULL OR company_id = %s) AND (%s::text IS NULL OR user_id = %s)"
            " AND (%s::bigint IS NULL OR seq < %s) ORDER BY seq DESC LIMIT %s",
            (
                env.id,
                event_type,
                event_type,
                _text(event, "event"),
                event,
                _text(company_id, "company_id"),
                company_id,
                _text(user_id, "user_id"),
                user_id,
                before,
                before,
                limit,
            ),
        )

    # -- audit -----------------------------------------------------------------------------

    async def list_audit(
        self,
        who: Principal,
        ref: str,
        limit: int,
        before: int | None = None,
        entity: str | None = None,
        entity_id: str | None = None,
    ) -> list[AuditEntry]:
        """Newest first."""
        env = await self._read(who, ref)
        return await self._all(
            AuditEntry,
            "SELECT id, environment_id, version, at, key_id, user_id, username, entity,"
            " entity_id, action, before, after FROM flag_audit WHERE environment_id = %s"
            " AND (%s::text IS NULL OR entity = %s) AND (%s::text IS NULL OR entity_id = %s)"
            " AND (%s::bigint IS NULL OR id < %s) ORDER BY id DESC LIMIT %s",
            (
                env.id,
                _text(entity, "entity"),
                entity,
                _text(entity_id, "entity_id"),
                entity_id,
                before,
                before,
                limit,
            ),
        )


def as_dict(model: BaseModel) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json")
    return data


def as_list(models: list[Rule]) -> list[dict[str, Any]]:
    return [as_dict(m) for m in models]


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


T = TypeVar("T")


async def _claiming(work: Awaitable[T]) -> T:
    """Run an upsert; a key claimed meanwhile by a concurrent upsert is 409 key_conflict."""
    try:
        return await work
    except errors.UniqueViolation:
        raise conflict(
            "key_conflict", "a key was claimed by another record at the same time; retry"
        ) from None


__all__ = ["CHANNEL", "FlagService", "Page"]


def _fid(flag: Flag) -> str:
    """A stored flag's id (always set)."""
    assert flag.id is not None
    return flag.id
