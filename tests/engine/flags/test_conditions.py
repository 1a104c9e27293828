"""Every condition type and operator, and rule matching (AND of conditions, AND of OR-groups)."""

from __future__ import annotations

from typing import Any

import pytest

from millpond.engine.flags import (
    CompanyContext,
    EvalContext,
    UserContext,
    compile_flag,
    in_rollout,
)
from millpond.models.flags import Condition, ConditionGroup, Flag, MetricValue, Rule

ACME = CompanyContext(
    "c-acme",
    keys={"id": "acme", "domain": "acme.net"},
    traits={"tier": "enterprise", "seats": "25", "employees": 120, "beta": True, "note": ""},
    plan_id="pro",
    metrics={
        ("api-call", "current_month", "count"): 40,
        ("api-call", "current_month", "sum"): 400,
        ("api-call", "all_time", "count"): 900,
    },
)
WILE = UserContext(
    "u-wile",
    keys={"email": "wile@acme.net", "user_id": "7"},
    traits={"login_count": "24", "role": "admin"},
    metrics=[MetricValue(event="export", period="current_day", value=3)],
)
BOTH = EvalContext(ACME, WILE)
NOBODY = EvalContext()


def holds(ctx: EvalContext, *conditions: Condition, groups: Any = ()) -> bool:
    rule = Rule(
        id="r",
        value=True,
        conditions=list(conditions),
        condition_groups=[ConditionGroup(conditions=list(g)) for g in groups],
    )
    result = compile_flag(Flag(key="f"), [rule]).evaluate(ctx)
    assert result.error is None
    return result.value


def cond(condition_type: str, **fields: Any) -> Condition:
    return Condition(condition_type=condition_type, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (cond("company", resource_ids=["c-acme", "c-other"]), True),
        (cond("company", resource_ids=["c-other"]), False),
        (cond("company", operator="ne", resource_ids=["c-other"]), True),
        (cond("company", operator="ne", resource_ids=["c-acme"]), False),
        (cond("company", operator="gt", resource_ids=["c-acme"]), False),
        (cond("user", resource_ids=["u-wile"]), True),
        (cond("user", operator="ne", resource_ids=["u-wile"]), False),
        (cond("plan", resource_ids=["pro", "enterprise"]), True),
        (cond("plan", resource_ids=["free"]), False),
        (cond("plan", operator="ne", resource_ids=["free"]), True),
        (cond("plan", operator="is_empty"), False),
        (cond("plan", operator="not_empty"), True),
        (cond("plan", operator="lt", resource_ids=["pro"]), False),
    ],
)
def test_company_user_plan(condition: Condition, expected: bool) -> None:
    assert holds(BOTH, condition) is expected


@pytest.mark.parametrize(
    "condition",
    [
        cond("company", resource_ids=["c-acme"]),
        cond("company", operator="ne", resource_ids=["c-acme"]),
        cond("user", operator="ne", resource_ids=[]),
        cond("plan", operator="ne", resource_ids=["pro"]),
        cond("plan", operator="is_empty"),
        cond("trait", trait_key="tier", operator="is_empty"),
        cond("trait", trait_key="tier", operator="ne", trait_value="x"),
        cond("trait", trait_entity="user", trait_key="role", operator="is_empty"),
        cond("metric", event_name="api-call", operator="lt", metric_value=10),
        cond("metric", event_name="api-call", operator="is_empty"),
        cond("actor_list", actors=[{"email": "x"}], operator="ne"),
        cond("actor_list", actor_entity="company", actors=[], operator="ne"),
        cond("rollout", percentage=100),
    ],
)
def test_conditions_on_an_absent_company_or_user_are_false(condition: Condition) -> None:
    assert not holds(NOBODY, condition)
    assert not holds(EvalContext(None, None), condition)


def test_plan_conditions_for_a_company_without_a_plan() -> None:
    ctx = EvalContext(CompanyContext("c"))
    assert holds(ctx, cond("plan", operator="is_empty"))
    assert holds(ctx, cond("plan", operator="ne", resource_ids=["pro"]))
    assert not holds(ctx, cond("plan", resource_ids=["pro"]))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"trait_key": "tier", "trait_value": "enterprise"}, True),
        ({"trait_key": "tier", "operator": "ne", "trait_value": "enterprise"}, False),
        ({"trait_key": "seats", "operator": "gt", "trait_value": "9"}, True),  # 25 > 9
        ({"trait_key": "seats", "operator": "gt", "trait_value": 9}, True),
        ({"trait_key": "seats", "operator": "lte", "trait_value": "25.0"}, True),
        ({"trait_key": "employees", "operator": "gte", "trait_value": "100"}, True),
        ({"trait_key": "employees", "operator": "lt", "trait_value": 100}, False),
        ({"trait_key": "beta", "trait_value": True}, True),
        ({"trait_key": "beta", "trait_value": "true"}, True),
        ({"trait_key": "beta", "trait_value": "false"}, False),
        ({"trait_key": "note", "operator": "is_empty"}, True),
        ({"trait_key": "missing", "operator": "is_empty"}, True),
        ({"trait_key": "tier", "operator": "not_empty"}, True),
        ({"trait_key": "missing", "operator": "not_empty"}, False),
        ({"trait_key": "missing", "trait_value": "x"}, False),
        ({"trait_key": "missing", "operator": "ne", "trait_value": "x"}, True),
        ({"trait_key": "missing", "operator": "gt", "trait_value": 0}, False),
        ({"trait_key": "employees", "operator": "gt", "comparison_trait_key": "seats"}, True),
        ({"trait_key": "seats", "operator": "gt", "comparison_trait_key": "employees"}, False),
        ({"trait_key": "seats", "operator": "eq", "comparison_trait_key": "missing"}, False),
        ({"trait_key": "note", "operator": "eq", "comparison_trait_key": "missing"}, True),
        ({"trait_key": None, "operator": "is_empty"}, False),  # incomplete: never
        (
            {
                "trait_entity": "user",
                "trait_key": "login_count",
                "operator": "gt",
                "trait_value": "3",
            },
            True,
        ),
        ({"trait_entity": "user", "trait_key": "tier", "operator": "is_empty"}, True),
    ],
)
def test_trait(fields: dict[str, Any], expected: bool) -> None:
    assert holds(BOTH, cond("trait", **fields)) is expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"metric_period": "current_month", "operator": "lt", "metric_value": 50}, True),
        ({"metric_period": "current_month", "operator": "gte", "metric_value": 40}, True),
        ({"metric_period": "current_month", "operator": "gt", "metric_value": 40}, False),
        (
            {
                "metric_period": "current_month",
                "metric_aggregation": "sum",
                "operator": "gt",
                "metric_value": 399,
            },
            True,
        ),
        ({"operator": "eq", "metric_value": 900}, True),  # all_time count by default
        ({"metric_period": "current_day", "operator": "eq", "metric_value": 0}, True),  # absent
        ({"metric_period": "current_day", "operator": "is_empty"}, True),
        ({"metric_period": "current_month", "operator": "not_empty"}, True),
        (
            {"metric_period": "current_month", "operator": "lt", "comparison_trait_key": "seats"},
            False,
        ),
        (
            {"metric_period": "current_month", "operator": "gt", "comparison_trait_key": "seats"},
            True,
        ),
        ({"operator": "lt", "comparison_trait_key": "tier"}, False),  # not a number
        ({"operator": "lt", "comparison_trait_key": "missing"}, False),
        ({"operator": "lt"}, False),  # no value to compare with
        ({"event_name": None, "operator": "is_empty"}, False),  # incomplete
    ],
)
def test_metric(fields: dict[str, Any], expected: bool) -> None:
    fields = {"event_name": "api-call", **fields}
    assert holds(BOTH, cond("metric", **fields)) is expected


def test_metric_of_the_user() -> None:
    base = {"trait_entity": "user", "event_name": "export", "metric_period": "current_day"}
    assert holds(BOTH, cond("metric", operator="eq", metric_value=3, **base))
    assert not holds(EvalContext(ACME), cond("metric", operator="is_empty", **base))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"actors": [{"email": "wile@acme.net"}]}, True),
        ({"actors": [{"email": "road@acme.net"}, {"user_id": "7"}]}, True),  # any of its keys
        ({"actors": [{"email": "road@acme.net"}]}, False),
        ({"actors": [{"user_id": "wile@acme.net"}]}, False),  # key names matter
        ({"actors": [{"email": "road@acme.net", "user_id": "7"}]}, True),
        ({"actors": []}, False),
        ({"actors": [{"email": "road@acme.net"}], "operator": "ne"}, True),
        ({"actors": [{"email": "wile@acme.net"}], "operator": "ne"}, False),
        ({"actors": [{"email": "wile@acme.net"}], "operator": "gt"}, False),
        ({"actor_entity": "company", "actors": [{"domain": "acme.net"}]}, True),
        ({"actor_entity": "company", "actors": [{"id": "7"}]}, False),
    ],
)
def test_actor_list(fields: dict[str, Any], expected: bool) -> None:
    assert holds(BOTH, cond("actor_list", **fields)) is expected


def test_actor_list_keys_given_as_numbers() -> None:
    condition = Condition.model_validate(
        {"condition_type": "actor_list", "actors": [{"user_id": 7}]}
    )
    assert holds(BOTH, condition)


def test_rollout_follows_the_bucket() -> None:
    for percentage in (10, 50, 90):
        condition = cond("rollout", percentage=percentage, actor_key="email")
        assert holds(BOTH, condition) is in_rollout("f", "wile@acme.net", percentage)


def test_all_conditions_must_hold_and_each_group_needs_one() -> None:
    yes = cond("plan", resource_ids=["pro"])
    no = cond("plan", resource_ids=["free"])
    assert holds(BOTH)  # no conditions: always
    assert holds(BOTH, yes, yes)
    assert not holds(BOTH, yes, no)
    assert holds(BOTH, yes, groups=[[no, yes]])
    assert not holds(BOTH, yes, groups=[[no, no]])
    assert not holds(BOTH, yes, groups=[[yes], [no]])
    assert holds(BOTH, groups=[[yes], [no, yes], [yes, no, no, no]])
    assert not holds(BOTH, groups=[[]])  # an empty group never holds
    four = [
        yes,
        cond("trait", trait_key="tier", trait_value="enterprise"),
        cond("actor_list", actors=[{"user_id": "7"}]),
        cond("company", resource_ids=["c-acme"]),
    ]
    assert holds(BOTH, *four)
    assert not holds(BOTH, *four, no)
    assert not holds(BOTH, no, *four)


def test_a_failing_value_gives_an_error_result_not_an_exception() -> None:
    class Hostile:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("boom")

        def __str__(self) -> str:
            raise RuntimeError("boom")

        __hash__ = object.__hash__

    ctx = EvalContext(CompanyContext("c", traits={"tier": Hostile()}))
    rule = Rule(id="r", value=True, conditions=[cond("trait", trait_key="tier", trait_value="x")])
    result = compile_flag(Flag(key="f", default_value=True), [rule]).evaluate(ctx)
    assert (result.value, result.reason, result.rule_id) == (True, "ERROR", None)
    assert result.error is not None and "boom" in result.error
