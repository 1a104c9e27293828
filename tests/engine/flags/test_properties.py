"""Property tests: the engine agrees with the naive reference reading of the documented
semantics on random rule sets and contexts; first match wins (a rule that does not match
can be inserted anywhere without changing the result); a global override always wins."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from millpond.engine.flags import Evaluation, compile_flag
from millpond.models.flags import Condition, Flag, Rule

from .reference import Entity, reference
from .strategies import CONDITIONAL_TYPES, RULE_TYPES, conditions, context, entities, rules

NO_GLOBAL = [t for t in RULE_TYPES if t != "global_override"]
PROPERTY = settings(max_examples=100, deadline=None, database=None)


def outcome(evaluation: Evaluation) -> tuple[bool, str, str | None, str | None]:
    return evaluation.value, evaluation.reason, evaluation.rule_id, evaluation.rule_type


@settings(PROPERTY, max_examples=250)
@given(
    st.lists(rules(NO_GLOBAL) | rules(), max_size=6),
    entities(company=True),
    entities(company=False),
    st.booleans(),
    st.sampled_from(["f", "new-checkout", "ünï"]),
)
def test_engine_agrees_with_reference(
    ruleset: list[Rule],
    company: Entity | None,
    user: Entity | None,
    default_value: bool,
    key: str,
) -> None:
    flag = Flag(key=key, default_value=default_value)
    got = compile_flag(flag, ruleset).evaluate(context(company, user))
    assert got.error is None
    assert outcome(got) == reference(flag, ruleset, company, user)


def _not_matching(user: Entity | None) -> Condition:
    """A condition the context cannot satisfy."""
    if user is not None:
        return Condition(condition_type="user", resource_ids=[f"not-{user.id}"])
    return Condition(condition_type="user", operator="ne", resource_ids=[])


@PROPERTY
@given(
    st.lists(rules(), max_size=6),
    entities(company=True),
    entities(company=False),
    st.data(),
)
def test_inserting_a_rule_that_does_not_match_changes_nothing(
    ruleset: list[Rule], company: Entity | None, user: Entity | None, data: st.DataObject
) -> None:
    flag = Flag(key="f")
    ctx = context(company, user)
    before = compile_flag(flag, ruleset).evaluate(ctx)
    extra = Rule(
        id="inserted",
        rule_type=data.draw(st.sampled_from(CONDITIONAL_TYPES)),
        priority=data.draw(st.integers(-5, 5)),
        value=data.draw(st.booleans()),
        conditions=[*data.draw(st.lists(conditions(), max_size=2)), _not_matching(user)],
    )
    position = data.draw(st.integers(0, len(ruleset)))
    after = compile_flag(flag, [*ruleset[:position], extra, *ruleset[position:]]).evaluate(ctx)
    assert outcome(after) == outcome(before)


@PROPERTY
@given(
    st.lists(rules(NO_GLOBAL), max_size=6),
    entities(company=True),
    entities(company=False),
    st.booleans(),
    st.data(),
)
def test_a_global_override_always_wins(
    ruleset: list[Rule],
    company: Entity | None,
    user: Entity | None,
    value: bool,
    data: st.DataObject,
) -> None:
    priority = data.draw(st.integers(-5, 5))
    override = Rule(id="global", rule_type="global_override", value=value, priority=priority)
    position = data.draw(st.integers(0, len(ruleset)))
    ordered = [*ruleset[:position], override, *ruleset[position:]]
    got = compile_flag(Flag(key="f"), ordered).evaluate(context(company, user))
    assert outcome(got) == (value, "GLOBAL_OVERRIDE", "global", "global_override")


@PROPERTY
@given(st.lists(rules(), max_size=6), entities(company=True), entities(company=False))
def test_the_result_is_one_of_the_rules_or_the_default(
    ruleset: list[Rule], company: Entity | None, user: Entity | None
) -> None:
    ruleset = [rule.model_copy(update={"id": f"rule-{n}"}) for n, rule in enumerate(ruleset)]
    got = compile_flag(Flag(key="f", default_value=True), ruleset).evaluate(context(company, user))
    if got.rule_id is None:
        assert (got.value, got.reason) == (True, "DEFAULT")
    else:
        (rule,) = [r for r in ruleset if r.id == got.rule_id]
        assert (got.value, got.rule_type) == (rule.value, rule.rule_type)
