"""Plan entitlements and company overrides: value types, usage and allocation, reset times,
override expiry and precedence, usage-exceeded results, explicit entitlement-type rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from millpond.engine.flags import (
    CompanyContext,
    EvalContext,
    Evaluation,
    Usage,
    UserContext,
    compile_flag,
    period_reset_at,
    period_start,
)
from millpond.models.flags import (
    CompanyOverride,
    Condition,
    Entitlement,
    EntitlementUsage,
    Feature,
    Flag,
    Rule,
)

NOW = datetime(2024, 5, 15, 13, 30, tzinfo=UTC)  # a Wednesday
API = Feature(id="feat-api", feature_type="event", event_name="api-call")
EXPORT_SUM = Feature(
    id="feat-export", feature_type="event", event_name="export", metric_aggregation="sum"
)
SEATS = Feature(id="feat-seats", feature_type="trait", trait_key="seats_used")
SSO = Feature(id="feat-sso")


def entitlement(feature: Feature, plan: str = "pro", **fields: Any) -> Entitlement:
    return Entitlement(id=f"ent-{plan}", plan_id=plan, feature_id=feature.id, **fields)


def override(feature: Feature, **fields: Any) -> CompanyOverride:
    return CompanyOverride(id="ovr", company_id="c1", feature_id=feature.id, **fields)


def check(
    feature: Feature,
    entitlements: list[Entitlement],
    *,
    rules: tuple[Rule, ...] = (),
    plan: str | None = "pro",
    traits: dict[str, Any] | None = None,
    metrics: dict[Any, Any] | None = None,
    overrides: list[CompanyOverride] | None = None,
    now: datetime | None = NOW,
) -> Evaluation:
    compiled = compile_flag(
        Flag(key="f", feature_id=feature.id), rules, feature=feature, entitlements=entitlements
    )
    company = CompanyContext(
        "c1", plan_id=plan, traits=traits, metrics=metrics, overrides=overrides
    )
    return compiled.evaluate(EvalContext(company, UserContext("u1"), now))


def summary(result: Evaluation) -> tuple[Any, ...]:
    return result.value, result.reason, result.rule_id, result.rule_type


def test_boolean_entitlement() -> None:
    assert summary(check(SSO, [entitlement(SSO, value_type="boolean")])) == (
        True,
        "PLAN_ENTITLEMENT",
        "ent-pro",
        "plan_entitlement",
    )
    denied = check(SSO, [entitlement(SSO, value_type="boolean", value_bool=False)])
    assert summary(denied) == (False, "PLAN_ENTITLEMENT", "ent-pro", "plan_entitlement")
    assert denied.entitlement is None
    other_plan = check(SSO, [entitlement(SSO, "enterprise", value_type="boolean")])
    assert summary(other_plan) == (False, "DEFAULT", None, None)
    assert check(SSO, [entitlement(SSO, value_type="boolean")], plan=None).reason == "DEFAULT"


def test_numeric_entitlement_within_and_over_its_allocation() -> None:
    ent = entitlement(API, value_type="numeric", value_numeric=10, metric_period="current_month")
    key = ("api-call", "current_month", "count")
    within = check(API, [ent], metrics={key: 3})
    assert summary(within) == (True, "PLAN_ENTITLEMENT", "ent-pro", "plan_entitlement")
    assert within.entitlement == Usage(
        10, 3, "current_month", datetime(2024, 6, 1, tzinfo=UTC), "api-call"
    )
    at_limit = check(API, [ent], metrics={key: 10})
    assert summary(at_limit) == (
        False,
        "USAGE_EXCEEDED",
        "ent-pro",
        "plan_entitlement_usage_exceeded",
    )
    assert at_limit.entitlement is not None and at_limit.entitlement.usage == 10
    no_events = check(API, [ent])
    assert no_events.value and no_events.entitlement is not None
    assert no_events.entitlement.usage == 0
    zero = entitlement(API, value_type="numeric", value_numeric=0)
    assert check(API, [zero]).reason == "USAGE_EXCEEDED"


def test_sum_aggregation_uses_the_summed_metric() -> None:
    ent = entitlement(EXPORT_SUM, value_type="numeric", value_numeric=100)
    metrics = {("export", "all_time", "count"): 1, ("export", "all_time", "sum"): 150}
    result = check(EXPORT_SUM, [ent], metrics=metrics)
    assert result.reason == "USAGE_EXCEEDED"
    assert result.entitlement == Usage(100, 150, "all_time", None, "export")


def test_unlimited_reports_usage() -> None:
    ent = entitlement(API, value_type="unlimited", metric_period="current_day")
    result = check(API, [ent], metrics={("api-call", "current_day", "count"): 1_000_000})
    assert summary(result) == (True, "PLAN_ENTITLEMENT", "ent-pro", "plan_entitlement")
    assert result.entitlement == Usage(
        None, 1_000_000, "current_day", datetime(2024, 5, 16, tzinfo=UTC), "api-call"
    )


def test_trait_feature_and_trait_allocation() -> None:
    numeric = entitlement(SEATS, value_type="numeric", value_numeric=5)
    assert check(SEATS, [numeric], traits={"seats_used": "4"}).value
    over = check(SEATS, [numeric], traits={"seats_used": 5})
    assert over.reason == "USAGE_EXCEEDED"
    assert over.entitlement == Usage(5, 5, None, None, None)
    by_trait = entitlement(SEATS, value_type="trait", value_trait_key="seat_limit")
    traits = {"seats_used": 9, "seat_limit": "10"}
    assert check(SEATS, [by_trait], traits=traits).entitlement == Usage(10, 9, None, None)
    assert check(SEATS, [by_trait], traits={"seats_used": 0}).reason == "USAGE_EXCEEDED"
    assert check(SEATS, [by_trait], traits={"seat_limit": "lots"}).reason == "USAGE_EXCEEDED"


def test_entitlements_of_other_features_or_without_a_feature_do_not_apply() -> None:
    ent = entitlement(SSO, value_type="boolean")
    compiled = compile_flag(Flag(key="f", feature_id=API.id), (), feature=API, entitlements=[ent])
    ctx = EvalContext(CompanyContext("c1", plan_id="pro"))
    assert compiled.evaluate(ctx).reason == "DEFAULT"
    unlinked = compile_flag(Flag(key="f"), (), feature=SSO, entitlements=[ent])
    assert unlinked.evaluate(ctx).reason == "DEFAULT"


def test_a_boolean_feature_with_a_numeric_entitlement_is_not_metered() -> None:
    assert check(SSO, [entitlement(SSO, value_type="numeric", value_numeric=1)]).value
    # the flag's feature may be unknown to the engine: entitlements still apply, unmetered
    compiled = compile_flag(
        Flag(key="f", feature_id="feat-x"),
        entitlements=[
            Entitlement(
                id="e", plan_id="pro", feature_id="feat-x", value_type="numeric", value_numeric=3
            )
        ],
    )
    result = compiled.evaluate(EvalContext(CompanyContext("c", plan_id="pro")))
    assert result.reason == "PLAN_ENTITLEMENT"
    assert result.entitlement == Usage(3, None, None, None)


def test_company_override_beats_the_plan_and_replaces_it() -> None:
    plan = entitlement(API, value_type="numeric", value_numeric=100)
    metrics = {("api-call", "all_time", "count"): 20}
    more = override(API, value_type="numeric", value_numeric=1000)
    result = check(API, [plan], metrics=metrics, overrides=[more])
    assert summary(result) == (True, "COMPANY_OVERRIDE", "ovr", "company_override")
    assert result.entitlement == Usage(1000, 20, "all_time", None, "api-call")
    # a smaller override is used up: the plan's larger allocation does not come back
    less = override(API, value_type="numeric", value_numeric=10)
    result = check(API, [plan], metrics=metrics, overrides=[less])
    assert summary(result) == (
        False,
        "USAGE_EXCEEDED",
        "ovr",
        "company_override_usage_exceeded",
    )
    off = override(API, value_type="boolean", value_bool=False)
    assert summary(check(API, [plan], overrides=[off])) == (
        False,
        "COMPANY_OVERRIDE",
        "ovr",
        "company_override",
    )
    # works without a plan entitlement, and without a plan
    assert check(API, [], plan=None, overrides=[more]).reason == "COMPANY_OVERRIDE"
    # overrides of other features are irrelevant
    other = override(SSO, value_type="boolean", value_bool=False)
    assert check(API, [plan], overrides=[other]).reason == "PLAN_ENTITLEMENT"


def test_override_expiry() -> None:
    plan = entitlement(API, value_type="boolean", value_bool=False)
    expiring = override(API, value_type="boolean", expires_at=NOW + timedelta(seconds=1))
    assert check(API, [plan], overrides=[expiring]).reason == "COMPANY_OVERRIDE"
    assert check(API, [plan], overrides=[expiring], now=NOW + timedelta(seconds=1)).reason == (
        "PLAN_ENTITLEMENT"
    )
    naive = override(API, value_type="boolean", expires_at=datetime(2024, 5, 15, 13, 31))
    assert check(API, [plan], overrides=[naive]).reason == "COMPANY_OVERRIDE"  # naive is UTC
    paris = timezone(timedelta(hours=2))
    local = override(
        API, value_type="boolean", expires_at=datetime(2024, 5, 15, 15, 29, tzinfo=paris)
    )
    assert check(API, [plan], overrides=[local]).reason == "PLAN_ENTITLEMENT"  # 13:29 UTC
    # the first active override of several applies; without a clock the present is used
    expired = override(
        API, value_type="boolean", value_bool=False, expires_at=datetime(2000, 1, 1, tzinfo=UTC)
    )
    current = override(API, value_type="boolean")
    assert check(API, [plan], overrides=[expired, current], now=None).value


def test_usage_exceeded_beats_standard_rules_but_not_overrides_or_globals() -> None:
    plan = entitlement(API, value_type="numeric", value_numeric=1)
    metrics = {("api-call", "all_time", "count"): 1}
    standard = Rule(id="std", value=True)
    assert check(API, [plan], metrics=metrics, rules=(standard,)).reason == "USAGE_EXCEEDED"
    glob = Rule(id="g", rule_type="global_override", value=True)
    assert check(API, [plan], metrics=metrics, rules=(glob,)).reason == "GLOBAL_OVERRIDE"
    # a company without the entitlement falls through to standard rules
    assert check(API, [plan], plan="free", rules=(standard,)).reason == "RULE_MATCH"


def test_explicit_entitlement_rules_report_usage_from_their_metric_condition() -> None:
    metric = Condition(
        condition_type="metric",
        event_name="api-call",
        metric_period="current_week",
        operator="lt",
        comparison_trait_key="quota",
    )
    granted = Rule(
        id="pe",
        rule_type="plan_entitlement",
        value=True,
        conditions=[Condition(condition_type="plan", resource_ids=["pro"]), metric],
    )
    exceeded = Rule(
        id="pex",
        rule_type="plan_entitlement_usage_exceeded",
        value=False,
        conditions=[Condition(condition_type="plan", resource_ids=["pro"])],
    )
    flag = compile_flag(Flag(key="f"), [exceeded, granted])
    usage = {("api-call", "current_week", "count"): 7}

    def run(quota: Any) -> Evaluation:
        company = CompanyContext("c", plan_id="pro", traits={"quota": quota}, metrics=usage)
        return flag.evaluate(EvalContext(company, now=NOW))

    result = run(8)
    assert summary(result) == (True, "PLAN_ENTITLEMENT", "pe", "plan_entitlement")
    assert result.entitlement == Usage(
        8, 7, "current_week", datetime(2024, 5, 20, tzinfo=UTC), "api-call"
    )
    assert summary(run(7)) == (False, "USAGE_EXCEEDED", "pex", "plan_entitlement_usage_exceeded")
    assert run(7).entitlement is None
    trait_rule = Rule(
        id="co",
        rule_type="company_override",
        value=True,
        conditions=[
            Condition(condition_type="trait", trait_key="used", operator="lt", trait_value="5")
        ],
    )
    compiled = compile_flag(Flag(key="f"), [trait_rule])
    result = compiled.evaluate(EvalContext(CompanyContext("c", traits={"used": 2})))
    assert result.entitlement == Usage(5, 2, None, None)


def test_usage_as_the_wire_model() -> None:
    ent = entitlement(API, value_type="numeric", value_numeric=10, metric_period="current_day")
    result = check(API, [ent], metrics={("api-call", "current_day", "count"): 4})
    wire = result.to_check(flag_id="flag-1", company_id="c1").entitlement
    assert wire == EntitlementUsage(
        allocation=10,
        usage=4,
        metric_period="current_day",
        reset_at=datetime(2024, 5, 16, tzinfo=UTC),
        event_name="api-call",
    )


@pytest.mark.parametrize(
    ("period", "now", "start", "reset"),
    [
        ("current_day", "2024-05-15T13:30:00", "2024-05-15", "2024-05-16"),
        ("current_day", "2024-05-15T00:00:00", "2024-05-15", "2024-05-16"),
        ("current_day", "2024-12-31T23:59:59", "2024-12-31", "2025-01-01"),
        ("current_week", "2024-05-15T13:30:00", "2024-05-13", "2024-05-20"),  # Wednesday
        ("current_week", "2024-05-13T00:00:00", "2024-05-13", "2024-05-20"),  # Monday 00:00
        ("current_week", "2024-05-19T23:59:59", "2024-05-13", "2024-05-20"),  # Sunday night
        ("current_week", "2024-12-31T10:00:00", "2024-12-30", "2025-01-06"),
        ("current_month", "2024-05-15T13:30:00", "2024-05-01", "2024-06-01"),
        ("current_month", "2024-12-31T23:59:59", "2024-12-01", "2025-01-01"),
        ("current_month", "2024-02-29T12:00:00", "2024-02-01", "2024-03-01"),
    ],
)
def test_periods_in_utc(period: str, now: str, start: str, reset: str) -> None:
    moment = datetime.fromisoformat(now).replace(tzinfo=UTC)
    assert period_start(period, moment) == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert period_reset_at(period, moment) == datetime.fromisoformat(reset).replace(tzinfo=UTC)


def test_periods_convert_to_utc_first() -> None:
    tokyo = timezone(timedelta(hours=9))
    moment = datetime(2024, 6, 1, 8, 0, tzinfo=tokyo)  # still May 31 in UTC
    assert period_reset_at("current_month", moment) == datetime(2024, 6, 1, tzinfo=UTC)
    assert period_start("current_day", datetime(2024, 6, 1, 8)) == datetime(2024, 6, 1, tzinfo=UTC)


def test_all_time_and_edges() -> None:
    assert period_start("all_time", NOW) is None and period_reset_at("all_time", NOW) is None
    assert period_reset_at("current_day", datetime(9999, 12, 31, 12, tzinfo=UTC)) is None
    assert period_reset_at("bogus", NOW) is None


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.one_of(st.none(), st.integers(0, 20)),
    st.one_of(st.none(), st.tuples(st.integers(0, 20), st.booleans())),
    st.integers(0, 25),
    st.booleans(),
    st.booleans(),
)
def test_entitlement_precedence_property(
    plan_limit: int | None,
    company_override: tuple[int, bool] | None,
    usage: int,
    on_plan: bool,
    with_standard_rule: bool,
) -> None:
    entitlements = (
        [entitlement(API, value_type="numeric", value_numeric=plan_limit)]
        if plan_limit is not None
        else []
    )
    overrides = []
    if company_override is not None:
        limit, expired = company_override
        expires_at = NOW - timedelta(days=1) if expired else NOW + timedelta(days=1)
        overrides.append(
            override(API, value_type="numeric", value_numeric=limit, expires_at=expires_at)
        )
    rules = (Rule(id="std", value=True),) if with_standard_rule else ()
    result = check(
        API,
        entitlements,
        rules=rules,
        plan="pro" if on_plan else "free",
        metrics={("api-call", "all_time", "count"): usage},
        overrides=overrides,
    )
    if company_override is not None and not company_override[1]:
        limit = company_override[0]
        expected = (
            (True, "COMPANY_OVERRIDE", "ovr", "company_override")
            if usage < limit
            else (False, "USAGE_EXCEEDED", "ovr", "company_override_usage_exceeded")
        )
    elif on_plan and plan_limit is not None:
        expected = (
            (True, "PLAN_ENTITLEMENT", "ent-pro", "plan_entitlement")
            if usage < plan_limit
            else (False, "USAGE_EXCEEDED", "ent-pro", "plan_entitlement_usage_exceeded")
        )
    elif with_standard_rule:
        expected = (True, "RULE_MATCH", "std", "standard")
    else:
        expected = (False, "DEFAULT", None, None)
    assert summary(result) == expected
    if result.entitlement is not None:
        assert result.entitlement.usage == usage
