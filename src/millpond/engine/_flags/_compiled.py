"""A flag compiled once with its rules, feature and plan entitlements, evaluated many times."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from millpond.models.flags import (
    CheckReason,
    CompanyOverride,
    Entitlement,
    EntitlementUsage,
    Feature,
    Flag,
    FlagCheck,
    FlagRuleset,
    MetricPeriod,
    Rule,
    RuleType,
)

from ._conditions import Predicate, compile_rule
from ._context import CompanyContext, EvalContext
from ._time import period_reset_at, utc
from ._values import Number, as_number

RULE_TYPE_ORDER: tuple[RuleType, ...] = (
    "global_override",
    "company_override",
    "plan_entitlement",
    "company_override_usage_exceeded",
    "plan_entitlement_usage_exceeded",
    "standard",
    "default",
)
"""Rule types in evaluation order."""

_REASONS: dict[str, CheckReason] = {
    "global_override": "GLOBAL_OVERRIDE",
    "company_override": "COMPANY_OVERRIDE",
    "plan_entitlement": "PLAN_ENTITLEMENT",
    "company_override_usage_exceeded": "USAGE_EXCEEDED",
    "plan_entitlement_usage_exceeded": "USAGE_EXCEEDED",
    "standard": "RULE_MATCH",
    "default": "DEFAULT",
}


class Usage(NamedTuple):
    """Allocation and usage of the entitlement (or override) that decided a check."""

    allocation: Number | None
    """The limit; None: unlimited."""
    usage: Number | None
    """Usage in the current period; None: not measured."""
    metric_period: MetricPeriod | None
    """The period usage is measured over; None: not metered by an event."""
    reset_at: datetime | None
    """When usage resets; None: never (all_time, or metered by a trait)."""
    event_name: str | None = None
    """The event metering usage."""

    def to_model(self) -> EntitlementUsage:
        return EntitlementUsage(
            allocation=self.allocation,
            usage=self.usage,
            metric_period=self.metric_period,
            reset_at=self.reset_at,
            event_name=self.event_name,
        )


class Evaluation(NamedTuple):
    """The outcome of evaluating a flag. Results that do not depend on usage are built once
    at compile time and shared: treat them as immutable (they are tuples)."""

    flag: str
    """The flag key."""
    value: bool
    reason: CheckReason
    rule_id: str | None = None
    """The deciding rule, entitlement or override; None for the flag's default value."""
    rule_type: RuleType | None = None
    entitlement: Usage | None = None
    """Allocation and usage, when a metered entitlement or override decided."""
    error: str | None = None
    """With reason ERROR: what went wrong."""

    def to_check(
        self,
        *,
        flag_id: str | None = None,
        company_id: str | None = None,
        user_id: str | None = None,
    ) -> FlagCheck:
        """As the wire model."""
        return FlagCheck(
            flag=self.flag,
            flag_id=flag_id,
            value=self.value,
            reason=self.reason,
            rule_id=self.rule_id,
            rule_type=self.rule_type,
            entitlement=self.entitlement.to_model() if self.entitlement is not None else None,
            company_id=company_id,
            user_id=user_id,
            error=self.error,
        )


def not_found(flag_key: str) -> Evaluation:
    """The result of checking a flag that does not exist (or is deleted): false."""
    return Evaluation(flag_key, False, "FLAG_NOT_FOUND")


# An explicit rule of an entitlement type: its predicate, its result, and the rule itself when
# the result's usage must be derived from its metric/trait condition at match time.
_EntitlementRule = tuple[Predicate, Evaluation, Rule | None]


def _rule_usage(rule: Rule, ctx: EvalContext) -> Usage | None:
    """Usage for an explicit entitlement-type rule, from its first metric or trait condition
    (usage = the metric or trait; allocation = what it is compared with)."""
    for condition in rule.conditions:
        entity = ctx.company if condition.trait_entity == "company" else ctx.user
        if entity is None:
            continue
        other = condition.comparison_trait_key
        if condition.condition_type == "metric" and condition.event_name:
            metric = (condition.event_name, condition.metric_period, condition.metric_aggregation)
            allocation = (
                as_number(entity.traits.get(other)) if other else as_number(condition.metric_value)
            )
            return Usage(
                allocation,
                as_number(entity.metrics.get(metric, 0)),
                condition.metric_period,
                period_reset_at(condition.metric_period, ctx.current_time()),
                condition.event_name,
            )
        if condition.condition_type == "trait" and condition.trait_key:
            allocation = (
                as_number(entity.traits.get(other)) if other else as_number(condition.trait_value)
            )
            return Usage(allocation, as_number(entity.traits.get(condition.trait_key)), None, None)
    return None


def _active(overrides: tuple[CompanyOverride, ...], ctx: EvalContext) -> CompanyOverride | None:
    """The first override that has not expired (an expiry without a zone is UTC)."""
    for override in overrides:
        expires_at = override.expires_at
        if expires_at is None or ctx.current_time() < utc(expires_at):
            return override
    return None


class CompiledFlag:
    """A flag prepared for evaluation: :meth:`evaluate` runs its rules in order (see
    :mod:`millpond.engine.flags`) against an :class:`EvalContext`. Immutable and thread-safe;
    build it with :func:`compile_flag`."""

    __slots__ = (
        "_company_override_rules",
        "_constant",
        "_default",
        "_default_value",
        "_feature",
        "_override_exceeded_rules",
        "_plan_entitlement_rules",
        "_plan_entitlements",
        "_plan_exceeded_rules",
        "_staged",
        "_standard",
        "feature_id",
        "flag_id",
        "key",
        "version",
    )

    def __init__(
        self,
        flag: Flag,
        rules: Sequence[Rule],
        feature: Feature | None,
        entitlements: Sequence[Entitlement],
    ) -> None:
        key = flag.key
        self.key = key
        self.flag_id = flag.id
        self.version = flag.version
        self.feature_id = flag.feature_id
        self._default_value = flag.default_value
        self._feature = feature if feature is not None and feature.id == flag.feature_id else None

        by_type: dict[str, list[Rule]] = {}
        ordered = sorted(
            (r for r in rules if r.flag_key is None or r.flag_key == key),
            key=lambda r: r.priority,
        )
        for rule in ordered:
            by_type.setdefault(rule.rule_type, []).append(rule)

        def result(rule: Rule) -> Evaluation:
            return Evaluation(key, rule.value, _REASONS[rule.rule_type], rule.id, rule.rule_type)

        self._constant: Evaluation | None = None
        if flag.deleted_at is not None:
            self._constant = not_found(key)
        elif by_type.get("global_override"):
            self._constant = result(by_type["global_override"][0])

        defaults = by_type.get("default")
        self._default = (
            result(defaults[0]) if defaults else Evaluation(key, flag.default_value, "DEFAULT")
        )
        self._standard: tuple[tuple[Predicate, Evaluation], ...] = tuple(
            (compile_rule(rule, key), result(rule)) for rule in by_type.get("standard", ())
        )

        def entitlement_rules(rule_type: str) -> tuple[_EntitlementRule, ...]:
            compiled: list[_EntitlementRule] = []
            for rule in by_type.get(rule_type, ()):
                metered = any(c.condition_type in ("metric", "trait") for c in rule.conditions)
                compiled.append((compile_rule(rule, key), result(rule), rule if metered else None))
            return tuple(compiled)

        self._company_override_rules = entitlement_rules("company_override")
        self._plan_entitlement_rules = entitlement_rules("plan_entitlement")
        self._override_exceeded_rules = entitlement_rules("company_override_usage_exceeded")
        self._plan_exceeded_rules = entitlement_rules("plan_entitlement_usage_exceeded")
        self._plan_entitlements: dict[str | None, Entitlement] = {}
        if flag.feature_id is not None:
            for entitlement in entitlements:
                if entitlement.feature_id == flag.feature_id:
                    self._plan_entitlements.setdefault(entitlement.plan_id, entitlement)
        self._staged = flag.feature_id is not None or any(
            (
                self._company_override_rules,
                self._plan_entitlement_rules,
                self._override_exceeded_rules,
                self._plan_exceeded_rules,
            )
        )

    # -- evaluation ------------------------------------------------------------------------

    def evaluate(self, ctx: EvalContext) -> Evaluation:
        """The flag's value for the context, with the reason and the deciding rule. Never
        raises: an unexpected failure gives the flag's default value with reason ERROR."""
        constant = self._constant
        if constant is not None:
            return constant
        try:
            if self._staged:
                decided = self._entitlements(ctx)
                if decided is not None:
                    return decided
            for match, outcome in self._standard:
                if match(ctx):
                    return outcome
            return self._default
        except Exception as exc:  # a bug or a hostile value: answer, and say why
            return Evaluation(
                self.key, self._default_value, "ERROR", error=f"{type(exc).__name__}: {exc}"
            )

    def check(self, ctx: EvalContext) -> FlagCheck:
        """:meth:`evaluate` as the wire model, with the flag, company and user ids."""
        company, user = ctx.company, ctx.user
        return self.evaluate(ctx).to_check(
            flag_id=self.flag_id,
            company_id=company.id if company is not None else None,
            user_id=user.id if user is not None else None,
        )

    def _entitlements(self, ctx: EvalContext) -> Evaluation | None:
        company = ctx.company
        feature_id = self.feature_id
        pending_override: Evaluation | None = None
        pending_plan: Evaluation | None = None
        overridden = False
        if company is not None and feature_id is not None and company.overrides:
            candidates = company.overrides.get(feature_id)
            override = _active(candidates, ctx) if candidates else None
            if override is not None:
                granted = self._grant(override, company, ctx, "company_override")
                if granted is not None:
                    overridden = True
                    if granted.rule_type == "company_override":
                        return granted
                    pending_override = granted
        decided = _first(self._company_override_rules, ctx)
        if decided is not None:
            return decided
        if company is not None and not overridden and self._plan_entitlements:
            entitlement = self._plan_entitlements.get(company.plan_id)
            if entitlement is not None:
                granted = self._grant(entitlement, company, ctx, "plan_entitlement")
                if granted is not None:
                    if granted.rule_type == "plan_entitlement":
                        return granted
                    pending_plan = granted
        decided = _first(self._plan_entitlement_rules, ctx)
        if decided is not None:
            return decided
        if pending_override is not None:
            return pending_override
        decided = _first(self._override_exceeded_rules, ctx)
        if decided is not None:
            return decided
        if pending_plan is not None:
            return pending_plan
        return _first(self._plan_exceeded_rules, ctx)

    def _grant(
        self,
        grant: Entitlement | CompanyOverride,
        company: CompanyContext,
        ctx: EvalContext,
        rule_type: RuleType,
    ) -> Evaluation | None:
        """What an entitlement or override gives: granted (rule_type, value), or usage
        exceeded (rule_type + ``_usage_exceeded``, false); None for an unknown value type."""
        value_type = grant.value_type
        reason = _REASONS[rule_type]
        if value_type == "boolean":
            return Evaluation(self.key, grant.value_bool is not False, reason, grant.id, rule_type)
        usage, period, reset_at, event = self._usage(grant.metric_period, company, ctx)
        if value_type == "unlimited":
            entitlement = Usage(None, usage, period, reset_at, event)
            return Evaluation(self.key, True, reason, grant.id, rule_type, entitlement)
        allocation: Number
        if value_type == "numeric":
            allocation = grant.value_numeric if grant.value_numeric is not None else 0
        elif value_type == "trait":
            trait = grant.value_trait_key
            held = as_number(company.traits.get(trait)) if trait else None
            allocation = held if held is not None else 0
        else:
            return None
        entitlement = Usage(allocation, usage, period, reset_at, event)
        if (usage if usage is not None else 0) < allocation:
            return Evaluation(self.key, True, reason, grant.id, rule_type, entitlement)
        exceeded: RuleType = (
            "company_override_usage_exceeded"
            if rule_type == "company_override"
            else "plan_entitlement_usage_exceeded"
        )
        return Evaluation(self.key, False, "USAGE_EXCEEDED", grant.id, exceeded, entitlement)

    def _usage(
        self, period: MetricPeriod, company: CompanyContext, ctx: EvalContext
    ) -> tuple[Number | None, MetricPeriod | None, datetime | None, str | None]:
        """(usage, metric period, reset_at, event) of the flag's feature for the company."""
        feature = self._feature
        if feature is None:
            return None, None, None, None
        if feature.feature_type == "event" and feature.event_name:
            value = company.metrics.get((feature.event_name, period, feature.metric_aggregation))
            usage = as_number(value) if value is not None else 0
            reset_at = period_reset_at(period, ctx.current_time())
            return (usage if usage is not None else 0), period, reset_at, feature.event_name
        if feature.feature_type == "trait" and feature.trait_key:
            usage = as_number(company.traits.get(feature.trait_key))
            return (usage if usage is not None else 0), None, None, None
        return None, None, None, None

    def __repr__(self) -> str:
        return f"CompiledFlag(key={self.key!r}, version={self.version!r})"


def _first(rules: tuple[_EntitlementRule, ...], ctx: EvalContext) -> Evaluation | None:
    for match, outcome, metered in rules:
        if match(ctx):
            if metered is None:
                return outcome
            return outcome._replace(entitlement=_rule_usage(metered, ctx))
    return None


def _model(model: type[Any], value: Any) -> Any:
    return value if isinstance(value, model) else model.model_validate(value)


def compile_flag(
    flag: Flag | Mapping[str, Any],
    rules: Iterable[Rule | Mapping[str, Any]] = (),
    *,
    feature: Feature | Mapping[str, Any] | None = None,
    entitlements: Iterable[Entitlement | Mapping[str, Any]] = (),
) -> CompiledFlag:
    """Prepare a flag for evaluation, once per change of its rule set.

    ``rules`` of other flags (``flag_key`` set to another key) are ignored, as are a
    ``feature`` other than the flag's and ``entitlements`` to other features. Models or their
    JSON form; invalid input raises pydantic's ``ValidationError`` here, never later."""
    return CompiledFlag(
        _model(Flag, flag),
        [_model(Rule, rule) for rule in rules],
        _model(Feature, feature) if feature is not None else None,
        [_model(Entitlement, entitlement) for entitlement in entitlements],
    )


def compile_ruleset(ruleset: FlagRuleset | Mapping[str, Any]) -> CompiledFlag:
    """:func:`compile_flag` on a :class:`FlagRuleset` (the form the server streams)."""
    model: FlagRuleset = _model(FlagRuleset, ruleset)
    return CompiledFlag(model.flag, model.rules, model.feature, model.entitlements)
