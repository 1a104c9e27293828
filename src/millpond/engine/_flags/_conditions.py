"""Conditions and rules compiled into predicates: closures over the evaluation context with
everything that does not depend on the check (sets, parsed values, hash salts) prepared once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from hashlib import sha256

from millpond.models.flags import Condition, Rule

from ._context import EvalContext, MetricKey
from ._rollout import BUCKETS, in_flypper_rollout, rollout_threshold
from ._values import ORDERED, as_number, comparator, compare

Predicate = Callable[[EvalContext], bool]


def always(ctx: EvalContext) -> bool:
    return True


def never(ctx: EvalContext) -> bool:
    return False


# Relative cost of each condition type: a rule's conditions are tested cheapest first (they
# are pure and AND'ed, so the order cannot change the outcome, only the time it takes).
_COST = {
    "company": 1,
    "user": 1,
    "plan": 1,
    "actor_list": 2,
    "trait": 3,
    "metric": 4,
    "rollout": 8,
    "flypper_rollout": 9,
}
_GROUP_COST = 5


def _resource(condition: Condition, of_company: bool) -> Predicate:
    ids = frozenset(condition.resource_ids)
    if condition.operator not in ("eq", "ne"):
        return never
    wanted = condition.operator == "eq"

    def test(ctx: EvalContext) -> bool:
        entity = ctx.company if of_company else ctx.user
        return entity is not None and (entity.id in ids) == wanted

    return test


def _plan(condition: Condition) -> Predicate:
    ids = frozenset(condition.resource_ids)
    op = condition.operator
    if op == "eq":
        return lambda ctx: ctx.company is not None and ctx.company.plan_id in ids
    if op == "ne":
        return lambda ctx: ctx.company is not None and ctx.company.plan_id not in ids
    if op == "is_empty":
        return lambda ctx: ctx.company is not None and ctx.company.plan_id is None
    if op == "not_empty":
        return lambda ctx: ctx.company is not None and ctx.company.plan_id is not None
    return never


def _trait(condition: Condition) -> Predicate:
    key = condition.trait_key
    if not key:
        return never
    of_company = condition.trait_entity == "company"
    other = condition.comparison_trait_key
    if other:
        op = condition.operator

        def against_trait(ctx: EvalContext) -> bool:
            entity = ctx.company if of_company else ctx.user
            if entity is None:
                return False
            traits = entity.traits
            return compare(op, traits.get(key), traits.get(other))

        return against_trait

    test_value = comparator(condition.operator, condition.trait_value)

    def against_value(ctx: EvalContext) -> bool:
        entity = ctx.company if of_company else ctx.user
        return entity is not None and test_value(entity.traits.get(key))

    return against_value


def _metric(condition: Condition) -> Predicate:
    event = condition.event_name
    if not event:
        return never
    of_company = condition.trait_entity == "company"
    metric: MetricKey = (event, condition.metric_period, condition.metric_aggregation)
    op = condition.operator
    if op in ("is_empty", "not_empty"):
        used = op == "not_empty"

        def any_usage(ctx: EvalContext) -> bool:
            entity = ctx.company if of_company else ctx.user
            if entity is None:
                return False
            value = as_number(entity.metrics.get(metric, 0))
            return value is not None and (value != 0) == used

        return any_usage
    fn = ORDERED.get(op)
    if fn is None:
        return never
    other = condition.comparison_trait_key
    if other:

        def against_trait(ctx: EvalContext) -> bool:
            entity = ctx.company if of_company else ctx.user
            if entity is None:
                return False
            usage = as_number(entity.metrics.get(metric, 0))
            limit = as_number(entity.traits.get(other))
            return usage is not None and limit is not None and fn(usage, limit)

        return against_trait

    limit = as_number(condition.metric_value)
    if limit is None:
        return never

    def against_value(ctx: EvalContext) -> bool:
        entity = ctx.company if of_company else ctx.user
        if entity is None:
            return False
        usage = entity.metrics.get(metric, 0)
        if type(usage) is not int:
            number = as_number(usage)
            return number is not None and fn(number, limit)
        return fn(usage, limit)

    return against_value


def _actor_list(condition: Condition) -> Predicate:
    if condition.operator not in ("eq", "ne"):
        return never
    wanted = condition.operator == "eq"
    of_company = condition.actor_entity == "company"
    by_key: dict[str, set[str]] = {}
    for entry in condition.actors:
        for name, value in entry.items():
            by_key.setdefault(name, set()).add(value)
    lists = tuple((name, frozenset(values)) for name, values in by_key.items())
    if len(lists) == 1:
        ((name, values),) = lists

        def one_key(ctx: EvalContext) -> bool:
            entity = ctx.company if of_company else ctx.user
            return entity is not None and (entity.keys.get(name) in values) == wanted

        return one_key

    def any_key(ctx: EvalContext) -> bool:
        entity = ctx.company if of_company else ctx.user
        if entity is None:
            return False
        keys = entity.keys
        for name, values in lists:
            if keys.get(name) in values:
                return wanted
        return not wanted

    return any_key


def _rollout(condition: Condition, flag_key: str) -> Predicate:
    threshold = rollout_threshold(condition.percentage)
    if threshold <= 0:
        return never
    of_company = condition.actor_entity == "company"
    key = condition.actor_key
    if threshold >= BUCKETS:

        def everyone(ctx: EvalContext) -> bool:
            entity = ctx.company if of_company else ctx.user
            if entity is None:
                return False
            return bool(entity.keys.get(key) if key is not None else entity.id)

        return everyone

    salt = f"{flag_key}:".encode("utf-8", "surrogatepass")
    from_bytes = int.from_bytes

    def share(ctx: EvalContext) -> bool:
        entity = ctx.company if of_company else ctx.user
        if entity is None:
            return False
        actor = entity.keys.get(key) if key is not None else entity.id
        if not actor:
            return False
        digest = sha256(salt + actor.encode("utf-8", "surrogatepass")).digest()
        return from_bytes(digest[:8], "big") % BUCKETS < threshold

    return share


def flypper_actor(actor_key: str) -> tuple[bool, str]:
    """A flypper entry name as (of_company, key): ``company_<key>`` / ``user_<key>`` name
    that entity's key, any other name is a user key (millpond's flypper convention)."""
    entity, sep, key = actor_key.partition("_")
    if sep and key and entity in ("user", "company"):
        return entity == "company", key
    return False, actor_key


def _flypper_rollout(condition: Condition) -> Predicate:
    percentage = condition.percentage
    if percentage == 100.0:
        return always
    if not condition.actor_key:
        return never
    of_company, key = flypper_actor(condition.actor_key)

    def share(ctx: EvalContext) -> bool:
        entity = ctx.company if of_company else ctx.user
        actor = entity.keys.get(key) if entity is not None else None
        return actor is not None and in_flypper_rollout(actor, percentage)

    return share


def compile_condition(condition: Condition, flag_key: str) -> Predicate:
    """The condition as a predicate; unknown or incomplete conditions never hold."""
    kind = condition.condition_type
    if kind == "company":
        return _resource(condition, True)
    if kind == "user":
        return _resource(condition, False)
    if kind == "plan":
        return _plan(condition)
    if kind == "trait":
        return _trait(condition)
    if kind == "metric":
        return _metric(condition)
    if kind == "actor_list":
        return _actor_list(condition)
    if kind == "rollout":
        return _rollout(condition, flag_key)
    if kind == "flypper_rollout":
        return _flypper_rollout(condition)
    return never


def all_of(predicates: Sequence[Predicate]) -> Predicate:
    """AND, short-circuiting in order."""
    if any(p is never for p in predicates):
        return never
    tests = tuple(p for p in predicates if p is not always)
    if not tests:
        return always
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda ctx: first(ctx) and second(ctx)
    if len(tests) == 3:
        first, second, third = tests
        return lambda ctx: first(ctx) and second(ctx) and third(ctx)

    def every(ctx: EvalContext) -> bool:
        for test in tests:  # noqa: SIM110 - a loop costs less than a generator per check
            if not test(ctx):
                return False
        return True

    return every


def any_of(predicates: Sequence[Predicate]) -> Predicate:
    """OR, short-circuiting in order; false when empty."""
    if any(p is always for p in predicates):
        return always
    tests = tuple(p for p in predicates if p is not never)
    if not tests:
        return never
    if len(tests) == 1:
        return tests[0]

    def some(ctx: EvalContext) -> bool:
        for test in tests:  # noqa: SIM110 - a loop costs less than a generator per check
            if test(ctx):
                return True
        return False

    return some


def compile_rule(rule: Rule, flag_key: str) -> Predicate:
    """Whether the rule's conditions hold: every condition, and in every condition group at
    least one condition (tested cheapest first)."""
    parts: list[tuple[int, int, Predicate]] = []
    for index, condition in enumerate(rule.conditions):
        cost = _COST.get(condition.condition_type, 0)
        parts.append((cost, index, compile_condition(condition, flag_key)))
    for index, group in enumerate(rule.condition_groups, start=len(parts)):
        alternatives = sorted(group.conditions, key=lambda c: _COST.get(c.condition_type, 0))
        parts.append(
            (_GROUP_COST, index, any_of([compile_condition(c, flag_key) for c in alternatives]))
        )
    parts.sort(key=lambda part: part[:2])
    return all_of([predicate for _, _, predicate in parts])
