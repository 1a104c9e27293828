"""Rule order: global override, company override, plan entitlement, their usage-exceeded
variants, standard rules by priority, default; reasons; deleted flags; the convenience
``evaluate``; ids in the wire result."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from millpond.engine.flags import (
    RULE_TYPE_ORDER,
    CompanyContext,
    EvalContext,
    UserContext,
    compile_flag,
    compile_ruleset,
    evaluate,
    not_found,
)
from millpond.models.flags import Condition, Flag, FlagCheck, FlagRuleset, Rule

CTX = EvalContext(CompanyContext("c1", plan_id="pro"), UserContext("u1"))
ALWAYS = Condition(condition_type="company", resource_ids=["c1"])
NEVER = Condition(condition_type="company", resource_ids=["other"])


def rule(rule_id: str, rule_type: str = "standard", value: bool = True, **fields: Any) -> Rule:
    return Rule(id=rule_id, rule_type=rule_type, value=value, **fields)  # type: ignore[arg-type]


def decided(*rules: Rule, default_value: bool = False) -> tuple[Any, ...]:
    result = compile_flag(Flag(key="f", default_value=default_value), rules).evaluate(CTX)
    return result.rule_id, result.reason, result.value


REASONS = {
    "global_override": "GLOBAL_OVERRIDE",
    "company_override": "COMPANY_OVERRIDE",
    "plan_entitlement": "PLAN_ENTITLEMENT",
    "company_override_usage_exceeded": "USAGE_EXCEEDED",
    "plan_entitlement_usage_exceeded": "USAGE_EXCEEDED",
    "standard": "RULE_MATCH",
    "default": "DEFAULT",
}


def test_the_order_is_documented() -> None:
    assert list(RULE_TYPE_ORDER) == list(REASONS)


@pytest.mark.parametrize("position", range(len(RULE_TYPE_ORDER)))
def test_each_type_beats_every_later_type(position: int) -> None:
    winner = RULE_TYPE_ORDER[position]
    later = [
        rule(f"{t}", t, value=False, priority=-10, conditions=[ALWAYS])
        for t in RULE_TYPE_ORDER[position + 1 :]
    ]
    mine = rule("mine", winner, value=True, priority=10, conditions=[ALWAYS])
    for rules in ([mine, *later], [*reversed(later), mine]):
        assert decided(*rules) == ("mine", REASONS[winner], True)


def test_a_type_that_does_not_match_falls_through_to_the_next() -> None:
    rules = [rule(t, t, conditions=[NEVER]) for t in RULE_TYPE_ORDER[1:6]]
    assert decided(*rules, rule("d", "default", value=False)) == ("d", "DEFAULT", False)
    assert decided(*rules, default_value=True) == (None, "DEFAULT", True)
    rules[3] = rule("pe-x", "plan_entitlement_usage_exceeded", value=False, conditions=[ALWAYS])
    assert decided(*rules) == ("pe-x", "USAGE_EXCEEDED", False)


def test_standard_rules_by_priority_then_list_order() -> None:
    a = rule("a", priority=2)
    b = rule("b", priority=1, value=False)
    c = rule("c", priority=1)
    assert decided(a, b, c) == ("b", "RULE_MATCH", False)
    assert decided(a, c, b) == ("c", "RULE_MATCH", True)
    assert decided(a, rule("n", priority=-1, conditions=[NEVER])) == ("a", "RULE_MATCH", True)


def test_global_override_and_default_ignore_conditions() -> None:
    assert decided(rule("g", "global_override", value=False, conditions=[NEVER])) == (
        "g",
        "GLOBAL_OVERRIDE",
        False,
    )
    assert decided(rule("d", "default", conditions=[NEVER])) == ("d", "DEFAULT", True)
    assert decided(rule("d2", "default", priority=1), rule("d1", "default", value=False)) == (
        "d1",
        "DEFAULT",
        False,
    )
    assert decided(rule("g2", "global_override", priority=1), rule("g1", "global_override")) == (
        "g1",
        "GLOBAL_OVERRIDE",
        True,
    )


def test_no_rules_gives_the_flag_default() -> None:
    assert decided() == (None, "DEFAULT", False)
    assert decided(default_value=True) == (None, "DEFAULT", True)


def test_rules_of_other_flags_are_ignored() -> None:
    other = Rule(id="o", flag_key="other", value=True)
    mine = Rule(id="m", flag_key="f", value=False, priority=5)
    assert decided(other, mine) == ("m", "RULE_MATCH", False)


def test_deleted_and_missing_flags() -> None:
    deleted = Flag(key="f", default_value=True, deleted_at=datetime(2024, 1, 1, tzinfo=UTC))
    result = compile_flag(deleted, [rule("g", "global_override")]).evaluate(CTX)
    assert (result.value, result.reason) == (False, "FLAG_NOT_FOUND")
    assert not_found("x") == evaluate(None)._replace(flag="x")
    assert evaluate(None).reason == "FLAG_NOT_FOUND"


def test_plain_data_in_and_out() -> None:
    ruleset = {
        "flag": {"id": "flag-1", "key": "beta", "default_value": False},
        "rules": [
            {
                "id": "r1",
                "value": True,
                "conditions": [
                    {"condition_type": "trait", "trait_key": "tier", "trait_value": "gold"}
                ],
            }
        ],
    }
    compiled = compile_ruleset(ruleset)
    assert compile_ruleset(FlagRuleset.model_validate(ruleset)).key == "beta"
    ctx = EvalContext(CompanyContext("c9", traits={"tier": "gold"}), UserContext("u9"))
    check = compiled.check(ctx)
    assert check == FlagCheck(
        flag="beta",
        flag_id="flag-1",
        value=True,
        reason="RULE_MATCH",
        rule_id="r1",
        rule_type="standard",
        company_id="c9",
        user_id="u9",
    )
    assert FlagCheck.model_validate_json(check.model_dump_json()) == check
    via_dicts = evaluate(
        ruleset["flag"],
        ruleset["rules"],  # type: ignore[arg-type]
        company={"id": "c9", "keys": {"id": "9"}, "traits": {"tier": "gold"}},
    )
    assert (via_dicts.value, via_dicts.rule_id) == (True, "r1")
    assert evaluate(ruleset["flag"], ruleset["rules"], company=None).reason == "DEFAULT"  # type: ignore[arg-type]


def test_prebuilt_results_are_shared_and_immutable() -> None:
    compiled = compile_flag(Flag(key="f"), [rule("a")])
    first, second = compiled.evaluate(CTX), compiled.evaluate(CTX)
    assert first is second
    with pytest.raises(AttributeError):
        first.value = False  # type: ignore[misc]
