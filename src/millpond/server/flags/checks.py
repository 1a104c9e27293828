"""Flag checks: compiled rulesets cached per environment, the company and user (with their
traits, plan, overrides and the usage metrics the flags need) read in one query, evaluated
by :mod:`millpond.engine.flags`.

The compiled rulesets of an environment are read from ``flag_rulesets`` once and kept
until the next ``millpond_flags`` notification (any replica's change of any ruleset or
environment) or the cache's TTL; this replica's own changes drop them right after their
commit. A check is then one round trip to the control database (none without company or
user keys): the metrics read are the current UTC day/week/month buckets and the all-time
counter of the events the checked flags are metered by.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from millpond.engine.flags import (
    PERIODS,
    CompanyContext,
    CompiledFlag,
    EvalContext,
    MetricKey,
    UserContext,
    bucket_start,
    compile_ruleset,
    not_found,
)
from millpond.models.flags import CompanyOverride, FlagCheck, FlagRuleset

from ..store import Store
from ..store.cache import GenerationCache

_log = logging.getLogger("millpond.flags")


@dataclass(frozen=True)
class Compiled:
    """An environment's live flags, compiled, and the events each is metered by."""

    flags: Mapping[str, CompiledFlag]
    events: Mapping[str, tuple[str, ...]]
    all_events: tuple[str, ...]


def metered_events(ruleset: FlagRuleset) -> set[str]:
    """The track events whose metrics can decide the flag."""
    events: set[str] = set()
    feature = ruleset.feature
    if feature is not None and feature.feature_type == "event" and feature.event_name:
        events.add(feature.event_name)
    for rule in ruleset.rules:
        conditions = [*rule.conditions, *(c for g in rule.condition_groups for c in g.conditions)]
        for condition in conditions:
            if condition.condition_type == "metric" and condition.event_name:
                events.add(condition.event_name)
    return events


_CONTEXT_SQL = """
WITH ck AS (
    SELECT k.company_id AS id
    FROM unnest(%(cn)s::text[], %(cv)s::text[]) WITH ORDINALITY AS q(name, value, i)
    JOIN flag_company_keys k
      ON k.environment_id = %(env)s AND k.name = q.name AND k.value = q.value
    ORDER BY q.i LIMIT 1
), uk AS (
    SELECT k.user_id AS id
    FROM unnest(%(un)s::text[], %(uv)s::text[]) WITH ORDINALITY AS q(name, value, i)
    JOIN flag_user_keys k
      ON k.environment_id = %(env)s AND k.name = q.name AND k.value = q.value
    ORDER BY q.i LIMIT 1
)
SELECT
    (SELECT jsonb_build_object('id', c.id, 'keys', c.keys, 'traits', c.traits,
                               'plan_id', c.plan_id)
       FROM flag_companies c WHERE c.id = (SELECT id FROM ck)) AS company,
    (SELECT jsonb_build_object('id', u.id, 'keys', u.keys, 'traits', u.traits)
       FROM flag_users u WHERE u.id = (SELECT id FROM uk)) AS "user",
    (SELECT jsonb_agg(jsonb_build_object(
                'id', o.id, 'company_id', o.company_id, 'feature_id', o.feature_id,
                'value_type', o.value_type, 'value_bool', o.value_bool,
                'value_numeric', o.value_numeric, 'value_trait_key', o.value_trait_key,
                'metric_period', o.metric_period, 'expires_at', o.expires_at)
            ORDER BY o.created_at, o.id)
       FROM flag_company_overrides o WHERE o.company_id = (SELECT id FROM ck)) AS overrides,
    (SELECT jsonb_agg(jsonb_build_array(m.entity_id, m.event, m.period, m.count, m.quantity))
       FROM flag_metrics m
      WHERE cardinality(%(events)s::text[]) > 0
        AND m.environment_id = %(env)s
        AND m.entity_id IN ((SELECT id FROM ck), (SELECT id FROM uk))
        AND m.event = ANY(%(events)s::text[])
        AND (m.period, m.bucket_start) IN (('all_time', %(all_time)s::timestamptz),
                                           ('current_day', %(current_day)s::timestamptz),
                                           ('current_week', %(current_week)s::timestamptz),
                                           ('current_month', %(current_month)s::timestamptz))
    ) AS metrics
"""


class Checker:
    def __init__(self, store: Store, cache: GenerationCache) -> None:
        self.store = store
        self.cache = cache
        self.counts: Counter[tuple[str, bool]] = Counter()
        """Flags checked on this replica, by (reason, value): ``/metrics`` reads them."""

    async def compiled(self, env_id: str) -> Compiled:
        found: Compiled = await self.cache.get_or_load(
            ("rulesets", env_id), lambda: self._load(env_id)
        )
        return found

    async def _load(self, env_id: str) -> Compiled:
        rows = await self.store.fetchall(
            "SELECT flag_key, ruleset FROM flag_rulesets"
            " WHERE environment_id = %s AND deleted_at IS NULL ORDER BY flag_key",
            (env_id,),
        )
        flags: dict[str, CompiledFlag] = {}
        events: dict[str, tuple[str, ...]] = {}
        for row in rows:
            try:
                ruleset = FlagRuleset.model_validate(row["ruleset"])
                flags[row["flag_key"]] = compile_ruleset(ruleset)
                events[row["flag_key"]] = tuple(sorted(metered_events(ruleset)))
            except Exception as exc:  # never written invalid; a bug must not stop checks
                _log.error("cannot compile flag %r: %s", row["flag_key"], exc)
        every = tuple(sorted({e for names in events.values() for e in names}))
        return Compiled(flags, events, every)

    async def context(
        self,
        env_id: str,
        company: Mapping[str, str] | None,
        user: Mapping[str, str] | None,
        events: Sequence[str],
        now: datetime,
    ) -> EvalContext:
        """The company and user given by keys (None when not given or unknown), with the
        current metrics of ``events``, the company's plan and overrides."""
        if not company and not user:
            return EvalContext(None, None, now)
        params: dict[str, Any] = {
            "env": env_id,
            "cn": list(company or ()),
            "cv": list((company or {}).values()),
            "un": list(user or ()),
            "uv": list((user or {}).values()),
            "events": list(events),
        }
        for period in PERIODS:
            params[period] = bucket_start(period, now)
        row = await self.store.fetchone(_CONTEXT_SQL, params)
        assert row is not None
        metrics: dict[str, dict[MetricKey, float]] = {}
        for entity_id, event, period, count, quantity in row["metrics"] or ():
            figures = metrics.setdefault(entity_id, {})
            figures[(event, period, "count")] = count
            figures[(event, period, "sum")] = quantity
        company_ctx = user_ctx = None
        if row["company"] is not None:
            c = row["company"]
            company_ctx = CompanyContext(
                c["id"],
                keys=c["keys"],
                traits=c["traits"],
                plan_id=c["plan_id"],
                metrics=metrics.get(c["id"]),
                overrides=[CompanyOverride.model_validate(o) for o in row["overrides"] or ()],
            )
        if row["user"] is not None:
            u = row["user"]
            user_ctx = UserContext(
                u["id"], keys=u["keys"], traits=u["traits"], metrics=metrics.get(u["id"])
            )
        return EvalContext(company_ctx, user_ctx, now)

    async def check(
        self,
        env_id: str,
        flag_keys: Iterable[str] | None,
        company: Mapping[str, str] | None,
        user: Mapping[str, str] | None,
    ) -> list[FlagCheck]:
        """Check the flags ``flag_keys`` (every live flag when None), in that order."""
        compiled = await self.compiled(env_id)
        keys = list(compiled.flags) if flag_keys is None else list(flag_keys)
        if flag_keys is None:
            events: Sequence[str] = compiled.all_events
        else:
            events = sorted({e for key in keys for e in compiled.events.get(key, ())})
        ctx = await self.context(env_id, company, user, events, datetime.now(UTC))
        results = []
        for key in keys:
            flag = compiled.flags.get(key)
            if flag is not None:
                results.append(flag.check(ctx))
            else:
                results.append(
                    not_found(key).to_check(
                        company_id=ctx.company.id if ctx.company is not None else None,
                        user_id=ctx.user.id if ctx.user is not None else None,
                    )
                )
        for result in results:
            self.counts[(result.reason, result.value)] += 1
        return results

    async def record(
        self,
        env_id: str,
        key_id: str,
        results: Sequence[FlagCheck],
        company: Mapping[str, str] | None,
        user: Mapping[str, str] | None,
    ) -> None:
        """Write checks to the check log."""
        if not results:
            return
        await self.store.execute(
            "INSERT INTO flag_checks (environment_id, flag_key, flag_id, value, reason, rule_id,"
            " rule_type, company_id, user_id, company_keys, user_keys, key_id)"
            " SELECT %s, k, f, v, r, ri, rt, c, u, %s, %s, %s"
            " FROM unnest(%s::text[], %s::text[], %s::boolean[], %s::text[], %s::text[],"
            " %s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS t(k, f, v, r, ri, rt, c, u, i)"
            " ORDER BY i",
            (
                env_id,
                Jsonb(dict(company)) if company else None,
                Jsonb(dict(user)) if user else None,
                key_id,
                [r.flag for r in results],
                [r.flag_id for r in results],
                [r.value for r in results],
                [r.reason for r in results],
                [r.rule_id for r in results],
                [r.rule_type for r in results],
                [r.company_id for r in results],
                [r.user_id for r in results],
            ),
        )
