"""The flags pages' plain words: a flag's state in an environment, its rules and
conditions as sentences, grants, check reasons, and audit entries as before/after diffs.
Pure functions of the service's models (no I/O); the templates escape what they return."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from millpond.engine.flags import RULE_TYPE_ORDER
from millpond.models.flags import (
    AuditEntry,
    CompanyOverride,
    Condition,
    Entitlement,
    Flag,
    Rule,
)

# -- vocabularies ------------------------------------------------------------------------------

RULE_TYPES = {
    "global_override": "For everyone (decides before every other rule)",
    "company_override": "Company override",
    "plan_entitlement": "Plan entitlement",
    "company_override_usage_exceeded": "Company override used up",
    "plan_entitlement_usage_exceeded": "Plan entitlement used up",
    "standard": "Rule",
    "default": "Default (when nothing else matched)",
}
"""Rule types in evaluation order, in plain words."""

KINDS = {
    "actor_list": "Listed users or companies",
    "rollout": "Percentage rollout",
    "trait": "Trait",
    "plan": "Plan",
    "company": "Company ids",
    "user": "User ids",
    "metric": "Usage (track events)",
    "flypper_rollout": "flypper percentage rollout",
}
"""Condition types, in plain words."""

COMPARE = {
    "eq": "is",
    "ne": "is not",
    "gt": "is more than",
    "gte": "is at least",
    "lt": "is less than",
    "lte": "is at most",
    "is_empty": "is empty",
    "not_empty": "is set",
}
PERIODS = {
    "all_time": "in total",
    "current_day": "today",
    "current_week": "this week",
    "current_month": "this month",
}
PER_PERIOD = {
    "all_time": "in total",
    "current_day": "per day",
    "current_week": "per week",
    "current_month": "per month",
}
REASONS = {
    "GLOBAL_OVERRIDE": "the for-everyone switch (a global override rule) decided",
    "COMPANY_OVERRIDE": "the company's own override of the flag's feature decided",
    "PLAN_ENTITLEMENT": "the company's plan grants the flag's feature",
    "USAGE_EXCEEDED": "usage reached its allocation",
    "RULE_MATCH": "a rule matched",
    "DEFAULT": "no rule matched: the default value",
    "FLAG_NOT_FOUND": "the flag is deleted or does not exist",
    "ERROR": "the evaluation failed: the default value",
}
_WHO = {"company": "the company", "user": "the user"}
_LISTED_MAX = 20


def on_off(value: bool | None) -> str:
    return "on" if value else "off"


# -- a flag's state ----------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """What a flag answers in its environment: ``kind`` is on, off, rules or deleted."""

    kind: str
    text: str
    note: str
    switched: bool = False
    """A global override rule (the for-everyone switch) decides."""


def ordered(rules: Sequence[Rule]) -> list[Rule]:
    """Rules in evaluation order: by rule type, then priority, then as listed."""
    rank = {t: n for n, t in enumerate(RULE_TYPE_ORDER)}
    return sorted(rules, key=lambda r: (rank[r.rule_type], r.priority))


def default_value(flag: Flag, rules: Sequence[Rule]) -> bool:
    """The answer when no rule matches: the first default rule's, else the flag's."""
    defaults = [r for r in ordered(rules) if r.rule_type == "default"]
    return defaults[0].value if defaults else flag.default_value


def flag_state(flag: Flag, rules: Sequence[Rule]) -> State:
    if flag.deleted_at is not None:
        return State("deleted", "deleted", "every check answers off until it is restored")
    switches = [r for r in ordered(rules) if r.rule_type == "global_override"]
    if switches:
        value = on_off(switches[0].value)
        note = "switched for everyone: the other rules wait until the switch is removed"
        return State(value, f"{value} for everyone", note, switched=True)
    default = default_value(flag, rules)
    changing = [
        r for r in rules if r.rule_type not in ("global_override", "default") and r.value != default
    ]
    causes = [f"rules ({len(changing)})"] if changing else []
    if flag.feature_id is not None:
        causes.append("plans")
    if not causes:
        return State(on_off(default), f"{on_off(default)} for everyone", "no rule changes it")
    text = " and ".join(causes)
    if default:
        return State("rules", f"on, off by {text}", "on for everyone else")
    return State("rules", f"on by {text}", "off for everyone else")


# -- rules and conditions ----------------------------------------------------------------------


def _listed(items: Sequence[str], sep: str = ", ") -> str:
    shown = sep.join(items[:_LISTED_MAX])
    more = len(items) - _LISTED_MAX
    return shown + (f" and {more} more" if more > 0 else "") if items else "(nobody)"


def value_text(value: Any) -> str:
    """A trait or key value as a person reads it."""
    if value is None:
        return "(empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return f"“{value}”"
    return str(value)


def actors_text(actors: Sequence[dict[str, str]]) -> list[str]:
    """Each actor entry as ``key=value, key=value``."""
    return [", ".join(f"{k}={v}" for k, v in entry.items()) for entry in actors]


def _ids(c: Condition) -> str:
    verb = "is one of" if c.operator == "eq" else "is not one of"
    return f"{_WHO[c.condition_type]}'s id {verb}: {_listed(c.resource_ids)}"


def _plan(c: Condition) -> str:
    if c.operator == "is_empty":
        return "the company has no plan"
    if c.operator == "not_empty":
        return "the company has a plan"
    verb = "is one of" if c.operator == "eq" else "is not one of"
    return f"the company's plan {verb}: {_listed(c.resource_ids)}"


def _compared(c: Condition, value: Any) -> str:
    if c.operator in ("is_empty", "not_empty"):
        return COMPARE[c.operator]
    if c.comparison_trait_key:
        return f"{COMPARE[c.operator]} its trait {c.comparison_trait_key}"
    return f"{COMPARE[c.operator]} {value_text(value)}"


def _trait(c: Condition) -> str:
    return f"{_WHO[c.trait_entity]}'s trait {c.trait_key or '(none)'} {_compared(c, c.trait_value)}"


def _metric(c: Condition) -> str:
    what = "number of" if c.metric_aggregation == "count" else "total quantity of"
    event = c.event_name or "(no event)"
    return (
        f"{_WHO[c.trait_entity]}'s {what} “{event}” events {PERIODS[c.metric_period]} "
        + _compared(c, c.metric_value)
    )


def _actors(c: Condition) -> str:
    verb = "is listed" if c.operator == "eq" else "is not listed"
    return f"{_WHO[c.actor_entity]} {verb}: {_listed(actors_text(c.actors), '; ')}"


def _rollout(c: Condition) -> str:
    who = "users" if c.actor_entity == "user" else "companies"
    return f"{c.percentage:g}% of {who}, picked by their {c.actor_key or 'id'}"


def _flypper(c: Condition) -> str:
    if c.percentage >= 100:
        return "everyone (flypper rollout at 100%)"
    return f"{c.percentage:g}% of actors, picked as flypper does, by {c.actor_key or '(no key)'}"


_DESCRIBE = {
    "company": _ids,
    "user": _ids,
    "plan": _plan,
    "trait": _trait,
    "metric": _metric,
    "actor_list": _actors,
    "rollout": _rollout,
    "flypper_rollout": _flypper,
}


def describe(c: Condition) -> str:
    """One condition as a sentence, e.g. "the company's trait tier is “gold”"."""
    return _DESCRIBE[c.condition_type](c)


def ignores_conditions(rule: Rule) -> bool:
    """global_override and default rules always match (their conditions are ignored)."""
    return rule.rule_type in ("global_override", "default")


# -- grants, usage -----------------------------------------------------------------------------


def grant_text(grant: Entitlement | CompanyOverride) -> str:
    period = "" if grant.metric_period == "all_time" else f" {PER_PERIOD[grant.metric_period]}"
    if grant.value_type == "boolean":
        return "on" if grant.value_bool is not False else "off"
    if grant.value_type == "unlimited":
        return "on, unlimited"
    if grant.value_type == "numeric":
        return f"on, up to {grant.value_numeric}{period}"
    return f"on, up to the company's trait {grant.value_trait_key}{period}"


# -- audit entries -----------------------------------------------------------------------------

ACTIONS = {
    "create": "Created",
    "update": "Changed",
    "delete": "Deleted",
    "restore": "Restored",
    "purge": "Deleted for good",
    "replace": "Replaced the rules of",
}
_BOOKKEEPING = {"id", "updated_at", "version", "created_at", "flag_key", "last_seen_at"}
_TEXT_MAX = 160
_EMPTY = ("“”", "(none)", "—")


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: str
    after: str


def _clip(text: str) -> str:
    return text if len(text) <= _TEXT_MAX else text[: _TEXT_MAX - 1] + "…"


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return _clip(value or "“”")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return _clip(", ".join(str(v) for v in value) or "(none)")
    return _clip(json.dumps(value, ensure_ascii=False, separators=(", ", ": ")))


def _sentence(condition: Any) -> str:
    try:
        return describe(Condition.model_validate(condition))
    except ValueError:
        return _text(condition)


def _group(group: Any) -> str:
    items = group.get("conditions", []) if isinstance(group, dict) else []
    return "one of: " + "; ".join(_sentence(c) for c in items) if items else "(an empty group)"


def rule_summary(rule: Any) -> str:
    """A rule in one line: "Rule: on when 25% of users, picked by their id"."""
    if not isinstance(rule, dict):
        return "—" if rule is None else _text(rule)
    kind = RULE_TYPES.get(str(rule.get("rule_type")), "Rule").split(" (")[0]
    parts = [_sentence(c) for c in rule.get("conditions", [])]
    parts += [_group(g) for g in rule.get("condition_groups", [])]
    when = (
        " and ".join(parts)
        if parts and rule.get("rule_type") not in ("global_override", "default")
        else "always"
    )
    return _clip(f"{kind}: {on_off(bool(rule.get('value')))} when {when}")


def _flatten(value: Any, path: tuple[str, ...], out: dict[tuple[str, ...], str]) -> None:
    """Leaf texts by path; conditions and groups as sentences, rules by id."""
    if isinstance(value, dict) and value:
        for name, item in value.items():
            if name not in _BOOKKEEPING:
                _flatten(item, (*path, str(name)), out)
        return
    parent = path[-1] if path else ""
    if isinstance(value, list) and value and parent in ("conditions", "condition_groups"):
        word, say = ("condition", _sentence) if parent == "conditions" else ("group", _group)
        for n, item in enumerate(value):
            out[(*path[:-1], f"{word} {n + 1}")] = say(item)
        return
    if isinstance(value, list) and value and parent == "rules":
        for n, item in enumerate(value):
            rule_id = item.get("id", n + 1) if isinstance(item, dict) else n + 1
            out[(*path[:-1], f"rule {rule_id}")] = rule_summary(item)
        return
    out[path] = _text(value)


def _is_rule(value: Any) -> bool:
    return isinstance(value, dict) and "value" in value and "conditions" in value


def _rules_by_id(value: Any) -> dict[str, Any]:
    rules = value.get("rules") if isinstance(value, dict) else None
    if not isinstance(rules, list):
        return {}
    return {f"rule {r.get('id')}": r for r in rules if isinstance(r, dict)}


def _pairs(before: Any, after: Any) -> list[tuple[str, str, str]]:
    old: dict[tuple[str, ...], str] = {}
    new: dict[tuple[str, ...], str] = {}
    _flatten(before, (), old)
    _flatten(after, (), new)
    paths = list(old) + [p for p in new if p not in old]
    return [(" / ".join(p) or "value", old.get(p, "—"), new.get(p, "—")) for p in paths]


def changes(before: Any, after: Any) -> list[FieldChange]:
    """The fields that differ between two JSON values, bookkeeping fields left out. Rules
    added or removed are one line each; a changed rule shows its changed fields."""
    if _is_rule(before) != _is_rule(after):  # a rule added or removed: one line
        return [FieldChange("rule", rule_summary(before), rule_summary(after))]
    old_rules, new_rules = _rules_by_id(before), _rules_by_id(after)
    pairs = _pairs(before, after)
    if old_rules or new_rules:
        pairs = [p for p in pairs if not p[0].startswith("rule ") and p[0] != "rules"]
        for name in list(old_rules) + [n for n in new_rules if n not in old_rules]:
            if name in old_rules and name in new_rules:
                inner = _pairs(old_rules[name], new_rules[name])
                pairs += [(f"{name} / {f}", a, b) for f, a, b in inner]
            else:
                pairs.append(
                    (
                        name,
                        rule_summary(old_rules.get(name)) if name in old_rules else "—",
                        rule_summary(new_rules.get(name)) if name in new_rules else "—",
                    )
                )
    found = []
    for path, a, b in pairs:
        if a != b and not (before is None and b in _EMPTY) and not (after is None and a in _EMPTY):
            found.append(FieldChange(path, a, b))
    return found


def _flag_key(body: dict[str, Any]) -> str | None:
    rules = body.get("rules")
    first = rules[0] if isinstance(rules, list) and rules else {}
    found = body.get("key") or (first.get("flag_key") if isinstance(first, dict) else None)
    return str(found) if found else None


def audit_subject(entry: AuditEntry) -> str:
    """What the entry is about, e.g. "flag new-checkout" or "rule r1 of flag new-checkout"."""
    bodies = [b for b in (entry.after, entry.before) if isinstance(b, dict)]
    if entry.entity == "rule":
        flag = next((b["flag_key"] for b in bodies if b.get("flag_key")), None)
        return f"rule {entry.entity_id}" + (f" of flag {flag}" if flag else "")
    if entry.entity == "flag":
        name = next((k for k in map(_flag_key, bodies) if k), None)
    else:
        name = next((str(b["name"]) for b in bodies if b.get("name")), None)
    return f"{entry.entity} {name or entry.entity_id}"
