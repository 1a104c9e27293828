"""Hypothesis strategies: random rules (every type, every condition type and operator) over
small pools of ids, keys, traits and metrics, and random companies/users drawn from the same
pools so that conditions match often enough to matter."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from millpond.engine.flags import CompanyContext, EvalContext, UserContext
from millpond.models.flags import Condition, ConditionGroup, Rule

from .reference import Entity

IDS = ["c1", "c2", "u1", "u2", "x"]
PLANS = ["free", "pro", "enterprise"]
KEY_NAMES = ["id", "email"]
KEY_VALUES = ["1", "2", "a@x.com", "b@x.com"]
TRAIT_NAMES = ["tier", "seats", "score", "flag"]
TRAIT_VALUES: list[Any] = [
    None,
    "",
    "10",
    "9",
    "9a",
    "abc",
    "b",
    10,
    9,
    9.5,
    "9.5",
    "1e1",
    "-3",
    "007",
    True,
    False,
    "true",
    0,
    "0",
]
EVENTS = ["api-call", "export"]
PERIODS = ["all_time", "current_day", "current_week", "current_month"]
AGGREGATIONS = ["count", "sum"]
OPERATORS = ["eq", "ne", "gt", "gte", "lt", "lte", "is_empty", "not_empty"]
RULE_TYPES = [
    "global_override",
    "company_override",
    "plan_entitlement",
    "company_override_usage_exceeded",
    "plan_entitlement_usage_exceeded",
    "standard",
    "default",
]
CONDITIONAL_TYPES = [t for t in RULE_TYPES if t not in ("global_override", "default")]

entity_types = st.sampled_from(["company", "user"])
operators = st.sampled_from(OPERATORS)
key_dicts = st.dictionaries(st.sampled_from(KEY_NAMES), st.sampled_from(KEY_VALUES), max_size=2)


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    kind = draw(
        st.sampled_from(
            [
                "company",
                "user",
                "plan",
                "trait",
                "metric",
                "actor_list",
                "rollout",
                "flypper_rollout",
            ]
        )
    )
    fields: dict[str, Any] = {"condition_type": kind, "operator": draw(operators)}
    if kind in ("company", "user"):
        fields["resource_ids"] = draw(st.lists(st.sampled_from(IDS), max_size=3))
    elif kind == "plan":
        fields["resource_ids"] = draw(st.lists(st.sampled_from(PLANS), max_size=2))
    elif kind == "trait":
        fields["trait_entity"] = draw(entity_types)
        fields["trait_key"] = draw(st.sampled_from([*TRAIT_NAMES, None]))
        if draw(st.booleans()):
            fields["comparison_trait_key"] = draw(st.sampled_from(TRAIT_NAMES))
        else:
            fields["trait_value"] = draw(st.sampled_from(TRAIT_VALUES))
    elif kind == "metric":
        fields["trait_entity"] = draw(entity_types)
        fields["event_name"] = draw(st.sampled_from([*EVENTS, None]))
        fields["metric_period"] = draw(st.sampled_from(PERIODS))
        fields["metric_aggregation"] = draw(st.sampled_from(AGGREGATIONS))
        if draw(st.booleans()):
            fields["comparison_trait_key"] = draw(st.sampled_from(TRAIT_NAMES))
        else:
            fields["metric_value"] = draw(st.one_of(st.none(), st.integers(0, 12)))
    elif kind == "actor_list":
        fields["actor_entity"] = draw(entity_types)
        fields["actors"] = draw(st.lists(key_dicts, max_size=3))
    elif kind == "flypper_rollout":
        names = [*KEY_NAMES, *(f"{e}_{k}" for e in ("user", "company") for k in KEY_NAMES)]
        fields["actor_key"] = draw(st.sampled_from([*names, "user_", None]))
        fields["percentage"] = draw(
            st.one_of(st.sampled_from([0.0, 100.0, 50.0, 12.34]), st.floats(0, 100))
        )
    else:
        fields["actor_entity"] = draw(entity_types)
        fields["actor_key"] = draw(st.sampled_from([*KEY_NAMES, None]))
        fields["percentage"] = draw(
            st.one_of(st.sampled_from([0.0, 100.0, 50.0]), st.floats(0, 100))
        )
    return Condition(**fields)


@st.composite
def rules(draw: st.DrawFn, rule_types: list[str] = RULE_TYPES) -> Rule:
    """A rule: half of them standard (when allowed), with few conditions so that rules match
    often; a group is rarely empty (an empty group never holds)."""
    types = st.sampled_from(rule_types)
    if "standard" in rule_types:
        types = st.one_of(st.just("standard"), types)
    group = st.lists(conditions(), min_size=1, max_size=3) | st.just([])
    groups = draw(
        st.lists(group.map(lambda cs: ConditionGroup(conditions=cs)), max_size=2)
        if draw(st.integers(0, 3)) == 0
        else st.just([])
    )
    return Rule(
        id=f"r{draw(st.integers(0, 10**6))}",
        rule_type=draw(types),
        priority=draw(st.integers(-2, 3)),
        value=draw(st.booleans()),
        conditions=draw(st.lists(conditions(), max_size=2)),
        condition_groups=groups,
    )


@st.composite
def entities(draw: st.DrawFn, company: bool) -> Entity | None:
    if draw(st.integers(0, 5)) == 0:
        return None
    metrics = draw(
        st.dictionaries(
            st.tuples(
                st.sampled_from(EVENTS), st.sampled_from(PERIODS), st.sampled_from(AGGREGATIONS)
            ),
            st.integers(0, 12),
            max_size=4,
        )
    )
    return Entity(
        id=draw(st.sampled_from([*IDS, None])),
        keys=draw(key_dicts),
        traits=draw(st.dictionaries(st.sampled_from(TRAIT_NAMES), st.sampled_from(TRAIT_VALUES))),
        plan_id=draw(st.sampled_from([*PLANS, None])) if company else None,
        metrics=metrics,
    )


def context(company: Entity | None, user: Entity | None) -> EvalContext:
    """The engine's context for the reference model's entities."""
    return EvalContext(
        CompanyContext(
            company.id,
            keys=company.keys,
            traits=company.traits,
            plan_id=company.plan_id,
            metrics=company.metrics,  # type: ignore[arg-type]
        )
        if company is not None
        else None,
        UserContext(user.id, keys=user.keys, traits=user.traits, metrics=user.metrics)  # type: ignore[arg-type]
        if user is not None
        else None,
    )
