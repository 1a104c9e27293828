"""A deliberately naive reading of the documented flag semantics, written independently of
the engine (no compilation, no shared helpers), for the property tests to compare against.
Covers explicit rules of every type and every condition type; not entitlements/overrides."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from millpond.models.flags import Condition, Flag, Rule

ORDER = [
    "global_override",
    "company_override",
    "plan_entitlement",
    "company_override_usage_exceeded",
    "plan_entitlement_usage_exceeded",
    "standard",
    "default",
]
REASON = {
    "global_override": "GLOBAL_OVERRIDE",
    "company_override": "COMPANY_OVERRIDE",
    "plan_entitlement": "PLAN_ENTITLEMENT",
    "company_override_usage_exceeded": "USAGE_EXCEEDED",
    "plan_entitlement_usage_exceeded": "USAGE_EXCEEDED",
    "standard": "RULE_MATCH",
    "default": "DEFAULT",
}


@dataclass
class Entity:
    id: str | None
    keys: dict[str, str] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)
    plan_id: str | None = None
    metrics: dict[tuple[str, str, str], Any] = field(default_factory=dict)


def number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if not isinstance(value, str) or not value:
        return None
    text = value
    if text[0] in "+-":
        text = text[1:]
    mantissa, _, exponent = text.replace("E", "e").partition("e")
    whole, dot, fraction = mantissa.partition(".")
    digits = set("0123456789")
    if not (whole or fraction) or not set(whole + fraction) <= digits:
        return None
    if "e" in text.replace("E", "e"):
        exp = exponent[1:] if exponent[:1] in ("+", "-") else exponent
        if not exp or not set(exp) <= digits:
            return None
    if dot or "e" in text.replace("E", "e"):
        result = float(value)
        return result if math.isfinite(result) else None
    return int(value)


def text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def empty(value: Any) -> bool:
    return value is None or (value == "" and isinstance(value, str))


def compare(op: str, left: Any, right: Any) -> bool:
    if op == "is_empty":
        return empty(left)
    if op == "not_empty":
        return not empty(left)
    if empty(left) or empty(right):
        return {"eq": empty(left) and empty(right), "ne": empty(left) != empty(right)}.get(
            op, False
        )
    a, b = number(left), number(right)
    if a is None or b is None:
        a, b = text(left), text(right)
    return {
        "eq": a == b,
        "ne": a != b,
        "gt": a > b,  # type: ignore[operator]
        "gte": a >= b,  # type: ignore[operator]
        "lt": a < b,  # type: ignore[operator]
        "lte": a <= b,  # type: ignore[operator]
    }[op]


def bucket(flag_key: str, actor: str) -> int:
    digest = hashlib.sha256((flag_key + ":" + actor).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


def holds(c: Condition, flag_key: str, company: Entity | None, user: Entity | None) -> bool:
    kind = c.condition_type
    if kind in ("company", "user"):
        entity = company if kind == "company" else user
        if entity is None:
            return False
        if c.operator == "eq":
            return entity.id in c.resource_ids
        if c.operator == "ne":
            return entity.id not in c.resource_ids
        return False
    if kind == "plan":
        if company is None:
            return False
        return {
            "eq": company.plan_id in c.resource_ids,
            "ne": company.plan_id not in c.resource_ids,
            "is_empty": company.plan_id is None,
            "not_empty": company.plan_id is not None,
        }.get(c.operator, False)
    if kind == "trait":
        entity = company if c.trait_entity == "company" else user
        if entity is None or not c.trait_key:
            return False
        right = (
            entity.traits.get(c.comparison_trait_key) if c.comparison_trait_key else c.trait_value
        )
        return compare(c.operator, entity.traits.get(c.trait_key), right)
    if kind == "metric":
        entity = company if c.trait_entity == "company" else user
        if entity is None or not c.event_name:
            return False
        usage = number(entity.metrics.get((c.event_name, c.metric_period, c.metric_aggregation), 0))
        if usage is None:
            return False
        if c.operator == "is_empty":
            return usage == 0
        if c.operator == "not_empty":
            return usage != 0
        limit = number(
            entity.traits.get(c.comparison_trait_key) if c.comparison_trait_key else c.metric_value
        )
        if limit is None:
            return False
        return compare(c.operator, usage, limit)
    if kind == "actor_list":
        entity = company if c.actor_entity == "company" else user
        if entity is None or c.operator not in ("eq", "ne"):
            return False
        listed = any(
            entity.keys.get(name) == value for entry in c.actors for name, value in entry.items()
        )
        return listed if c.operator == "eq" else not listed
    if kind == "rollout":
        entity = company if c.actor_entity == "company" else user
        if entity is None:
            return False
        actor = entity.keys.get(c.actor_key) if c.actor_key is not None else entity.id
        if not actor:
            return False
        return bucket(flag_key, actor) < round(c.percentage * 100)
    if kind == "flypper_rollout":
        # flypper 0.1.7's Flag._is_enabled_for_percentage_of_actors, restated
        if c.percentage == 100.0:
            return True
        name = c.actor_key or ""
        prefix, _, rest = name.partition("_")
        if prefix in ("user", "company") and rest:
            entity, name = (company if prefix == "company" else user), rest
        else:
            entity = user
        if not c.actor_key or entity is None or name not in entity.keys:
            return False
        digest = hashlib.md5(entity.keys[name].encode()).digest()
        return (int.from_bytes(digest, "big") % 100_00) / 100.00 <= c.percentage
    return False


def matches(rule: Rule, flag_key: str, company: Entity | None, user: Entity | None) -> bool:
    if rule.rule_type in ("global_override", "default"):
        return True
    return all(holds(c, flag_key, company, user) for c in rule.conditions) and all(
        any(holds(c, flag_key, company, user) for c in group.conditions)
        for group in rule.condition_groups
    )


def reference(
    flag: Flag, rules: list[Rule], company: Entity | None, user: Entity | None
) -> tuple[bool, str, str | None, str | None]:
    """(value, reason, rule_id, rule_type) as documented."""
    if flag.deleted_at is not None:
        return False, "FLAG_NOT_FOUND", None, None
    ranked = sorted(
        enumerate(rules),
        key=lambda item: (ORDER.index(item[1].rule_type), item[1].priority, item[0]),
    )
    for _, rule in ranked:
        if matches(rule, flag.key, company, user):
            return rule.value, REASON[rule.rule_type], rule.id, rule.rule_type
    return flag.default_value, "DEFAULT", None, None
