"""Checks: every rule type and condition type evaluated through ``check``, with the right
company, user, plan, overrides and metrics reaching the engine; bulk checks; the check log;
the compiled-ruleset cache dropped on every change (this replica's at once, any replica's
through NOTIFY)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from millpond.engine.flags import (
    CompanyContext,
    EvalContext,
    UserContext,
    compile_ruleset,
    in_rollout,
)
from millpond.models.flags import CompanyOverride, MetricValue

from ._helpers import assert_error
from .conftest import Env, Superuser

ACME = {"id": "acme"}
COYOTE = {"email": "wcoyote@acme.net"}


def _check(env: Env, key: str, company: Any = ACME, user: Any = COYOTE) -> dict[str, Any]:
    body = {k: v for k, v in (("company", company), ("user", user)) if v is not None}
    result: dict[str, Any] = env.ok("POST", f"/flags/{key}/check", json=body)
    return result


def _flag(env: Env, key: str, *rules: dict[str, Any], **fields: Any) -> None:
    env.ok("POST", "/flags", 201, json={"key": key, "rules": list(rules), **fields})


def _rule(value: bool = True, *conditions: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"value": value, "conditions": list(conditions), **fields}


def _track(env: Env, event: str, n: int = 1, quantity: int = 1, **who: Any) -> None:
    events = [
        {"event_type": "track", "event": event, "quantity": quantity, **who} for _ in range(n)
    ]
    env.ok("POST", "/events", json={"events": events})


@pytest.fixture
def acme(env: Env) -> Env:
    """``env`` with plan ``pro``, company acme (on pro, traits) and its user coyote."""
    env.ok("POST", "/plans", 201, json={"id": "pro"})
    env.ok(
        "POST",
        "/companies",
        201,
        json={"keys": ACME, "traits": {"tier": "gold", "seats": 10, "used": 4}, "plan_id": "pro"},
    )
    env.ok(
        "POST",
        "/users",
        201,
        json={"keys": {**COYOTE, "id": "u1"}, "traits": {"staff": True}, "company": ACME},
    )
    return env


def test_resolution_by_any_key(acme: Env) -> None:
    _flag(acme, "f")
    company = acme.ok("POST", "/companies/lookup", json={"keys": ACME})
    user = acme.ok("POST", "/users/lookup", json={"keys": COYOTE})
    for c, u in [(ACME, COYOTE), ({"id": "acme", "x": "y"}, {"id": "u1"})]:
        result = _check(acme, "f", c, u)
        assert (result["company_id"], result["user_id"]) == (company["id"], user["id"])
        assert result["flag_id"].startswith("flag_")
    nobody = _check(acme, "f", {"id": "nope"}, {"email": "nope"})
    assert (nobody["company_id"], nobody["user_id"]) == (None, None)
    alone = _check(acme, "f", None, None)
    assert (alone["value"], alone["reason"], alone["rule_id"]) == (False, "DEFAULT", None)
    assert _check(acme, "missing")["reason"] == "FLAG_NOT_FOUND"


def test_rule_types_in_order(acme: Env) -> None:
    acme.ok("POST", "/features", 201, json={"id": "export"})
    acme.ok(
        "POST",
        "/entitlements",
        201,
        json={"plan_id": "pro", "feature_id": "export", "value_type": "boolean"},
    )
    standard = _rule(False, {"condition_type": "trait", "trait_key": "tier", "trait_value": "gold"})
    _flag(acme, "export", {**standard, "id": "std"}, feature_id="export", default_value=False)
    # the plan's entitlement decides before standard rules
    result = _check(acme, "export")
    assert (result["value"], result["reason"], result["rule_type"]) == (
        True,
        "PLAN_ENTITLEMENT",
        "plan_entitlement",
    )
    # a company override replaces it
    company = acme.ok("POST", "/companies/lookup", json={"keys": ACME})
    override = acme.ok(
        "POST",
        "/overrides",
        201,
        json={
            "company_id": company["id"],
            "feature_id": "export",
            "value_type": "boolean",
            "value_bool": False,
        },
    )
    result = _check(acme, "export")
    assert (result["value"], result["reason"], result["rule_id"]) == (
        False,
        "COMPANY_OVERRIDE",
        override["id"],
    )
    # an expired override no longer applies
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    acme.ok("PATCH", f"/overrides/{override['id']}", json={"expires_at": past})
    assert _check(acme, "export")["reason"] == "PLAN_ENTITLEMENT"
    # a global override beats everything
    acme.ok(
        "POST", "/flags/export/rules", 201, json={"rule_type": "global_override", "value": False}
    )
    assert _check(acme, "export")["reason"] == "GLOBAL_OVERRIDE"
    # explicit entitlement-type rules
    acme.ok(
        "PUT",
        "/flags/export/rules",
        json={
            "rules": [
                _rule(True, {"condition_type": "plan", "operator": "eq", "resource_ids": ["x"]}),
                _rule(
                    False,
                    {"condition_type": "trait", "trait_key": "tier", "trait_value": "gold"},
                    rule_type="company_override",
                    id="co",
                ),
                {"rule_type": "default", "value": True, "id": "dflt"},
            ]
        },
    )
    result = _check(acme, "export")
    assert (result["rule_id"], result["reason"]) == ("co", "COMPANY_OVERRIDE")
    # without company and user: company/plan rules cannot match: the default rule
    result = _check(acme, "export", None, None)
    assert (result["value"], result["rule_id"], result["reason"]) == (True, "dflt", "DEFAULT")


def test_usage_limits_from_metrics(acme: Env) -> None:
    acme.ok(
        "POST",
        "/features",
        201,
        json={"id": "calls", "feature_type": "event", "event_name": "api-call"},
    )
    acme.ok(
        "POST",
        "/entitlements",
        201,
        json={
            "plan_id": "pro",
            "feature_id": "calls",
            "value_type": "numeric",
            "value_numeric": 3,
            "metric_period": "current_month",
        },
    )
    _flag(acme, "calls", feature_id="calls")
    result = _check(acme, "calls")
    assert (result["value"], result["reason"]) == (True, "PLAN_ENTITLEMENT")
    usage = result["entitlement"]
    assert (usage["allocation"], usage["usage"], usage["metric_period"]) == (3, 0, "current_month")
    assert usage["event_name"] == "api-call" and usage["reset_at"] is not None
    _track(acme, "api-call", 2, company=ACME)
    assert _check(acme, "calls")["entitlement"]["usage"] == 2
    _track(acme, "api-call", 1, company=ACME)
    result = _check(acme, "calls")
    assert (result["value"], result["reason"], result["rule_type"]) == (
        False,
        "USAGE_EXCEEDED",
        "plan_entitlement_usage_exceeded",
    )
    # an unlimited override of the company replaces the plan's limit, usage still reported
    company = acme.ok("POST", "/companies/lookup", json={"keys": ACME})
    acme.ok(
        "POST",
        "/overrides",
        201,
        json={
            "company_id": company["id"],
            "feature_id": "calls",
            "value_type": "trait",
            "value_trait_key": "seats",
            "metric_period": "all_time",
        },
    )
    result = _check(acme, "calls")
    assert (result["value"], result["reason"]) == (True, "COMPANY_OVERRIDE")
    assert (result["entitlement"]["allocation"], result["entitlement"]["usage"]) == (10, 3)
    assert result["entitlement"]["reset_at"] is None
    acme.ok("POST", "/companies", json={"keys": ACME, "traits": {"seats": 3}})
    result = _check(acme, "calls")
    assert (result["value"], result["rule_type"]) == (False, "company_override_usage_exceeded")


def test_trait_features(acme: Env) -> None:
    acme.ok(
        "POST",
        "/features",
        201,
        json={"id": "seats", "feature_type": "trait", "trait_key": "used"},
    )
    acme.ok(
        "POST",
        "/entitlements",
        201,
        json={
            "plan_id": "pro",
            "feature_id": "seats",
            "value_type": "trait",
            "value_trait_key": "seats",
        },
    )
    _flag(acme, "add-seat", feature_id="seats")
    result = _check(acme, "add-seat")
    assert result["value"] is True and result["entitlement"]["usage"] == 4
    acme.ok("POST", "/companies", json={"keys": ACME, "traits": {"used": 10}})
    assert _check(acme, "add-seat")["reason"] == "USAGE_EXCEEDED"


CONDITIONS: list[tuple[dict[str, Any], bool]] = [
    ({"condition_type": "plan", "operator": "eq", "resource_ids": ["pro"]}, True),
    ({"condition_type": "plan", "operator": "ne", "resource_ids": ["pro"]}, False),
    ({"condition_type": "plan", "operator": "not_empty"}, True),
    ({"condition_type": "plan", "operator": "is_empty"}, False),
    ({"condition_type": "trait", "trait_key": "tier", "trait_value": "gold"}, True),
    ({"condition_type": "trait", "trait_key": "seats", "operator": "gt", "trait_value": 9}, True),
    (
        {"condition_type": "trait", "trait_key": "seats", "operator": "lt", "trait_value": "9"},
        False,
    ),
    (
        {
            "condition_type": "trait",
            "trait_key": "used",
            "operator": "lt",
            "comparison_trait_key": "seats",
        },
        True,
    ),
    (
        {
            "condition_type": "trait",
            "trait_entity": "user",
            "trait_key": "staff",
            "trait_value": True,
        },
        True,
    ),
    ({"condition_type": "trait", "trait_key": "missing", "operator": "is_empty"}, True),
    ({"condition_type": "actor_list", "actors": [{"email": "wcoyote@acme.net"}]}, True),
    ({"condition_type": "actor_list", "operator": "ne", "actors": [{"id": "u1"}]}, False),
    ({"condition_type": "actor_list", "actor_entity": "company", "actors": [{"id": "acme"}]}, True),
    ({"condition_type": "rollout", "percentage": 100}, True),
    ({"condition_type": "rollout", "percentage": 0}, False),
    (
        {"condition_type": "metric", "event_name": "seen", "operator": "gte", "metric_value": 2},
        True,
    ),
    (
        {"condition_type": "metric", "event_name": "seen", "operator": "gte", "metric_value": 3},
        False,
    ),
    (
        {
            "condition_type": "metric",
            "event_name": "seen",
            "metric_aggregation": "sum",
            "operator": "eq",
            "metric_value": 7,
        },
        True,
    ),
    (
        {
            "condition_type": "metric",
            "event_name": "seen",
            "metric_period": "current_day",
            "operator": "lt",
            "comparison_trait_key": "seats",
        },
        True,
    ),
    (
        {
            "condition_type": "metric",
            "trait_entity": "user",
            "event_name": "seen",
            "operator": "eq",
            "metric_value": 1,
        },
        True,
    ),
    ({"condition_type": "metric", "event_name": "never", "operator": "is_empty"}, True),
]


def test_every_condition_type(acme: Env) -> None:
    company = acme.ok("POST", "/companies/lookup", json={"keys": ACME})
    user = acme.ok("POST", "/users/lookup", json={"keys": COYOTE})
    conditions = [
        *CONDITIONS,
        ({"condition_type": "company", "resource_ids": [company["id"]]}, True),
        ({"condition_type": "company", "operator": "ne", "resource_ids": [company["id"]]}, False),
        ({"condition_type": "user", "resource_ids": [user["id"]]}, True),
        ({"condition_type": "user", "resource_ids": ["user_other"]}, False),
    ]
    # "seen": 2 events for the company (quantities 3 and 4), one of them also by the user
    _track(acme, "seen", 1, quantity=3, company=ACME, user=COYOTE)
    _track(acme, "seen", 1, quantity=4, company=ACME)
    for n, (condition, _) in enumerate(conditions):
        _flag(acme, f"c{n}", _rule(True, condition, id="r"))
    results = acme.ok("POST", "/check", json={"company": ACME, "user": COYOTE})["flags"]
    by_key = {r["flag"]: r for r in results}
    for n, (condition, expected) in enumerate(conditions):
        result = by_key[f"c{n}"]
        assert result["value"] is expected, (condition, result)
        assert result["reason"] == ("RULE_MATCH" if expected else "DEFAULT"), result
    # without the company or user, conditions on them never hold
    bare = acme.ok("POST", "/check", json={})["flags"]
    assert all(r["value"] is False for r in bare if r["flag"].startswith("c")), bare


def test_condition_groups_and_rollout(acme: Env) -> None:
    group = {
        "conditions": [
            {"condition_type": "trait", "trait_key": "tier", "trait_value": "silver"},
            {"condition_type": "plan", "resource_ids": ["pro"]},
        ]
    }
    _flag(acme, "g", {"value": True, "condition_groups": [group]})
    assert _check(acme, "g")["reason"] == "RULE_MATCH"
    _flag(acme, "empty-group", {"value": True, "condition_groups": [{"conditions": []}]})
    assert _check(acme, "empty-group")["reason"] == "DEFAULT"
    # a rollout agrees with the engine's bucket for each user
    rollout = {"condition_type": "rollout", "percentage": 40, "actor_key": "email"}
    _flag(acme, "roll", _rule(True, rollout))
    emails = [f"user{i}@example.com" for i in range(40)]
    events = [{"event_type": "identify", "keys": {"email": e}} for e in emails]
    acme.ok("POST", "/events", json={"events": events})
    got = [_check(acme, "roll", None, {"email": e})["value"] for e in emails]
    assert got == [in_rollout("roll", e, 40) for e in emails]
    assert 0 < sum(got) < len(got)


def test_agrees_with_the_engine(acme: Env) -> None:
    """For a mix of flags and actors, the server's answers are the engine's on the same
    ruleset, company, user, overrides and metrics (read back through the API)."""
    acme.ok("POST", "/features", 201, json={"id": "ev", "feature_type": "event", "event_name": "e"})
    acme.ok(
        "POST",
        "/entitlements",
        201,
        json={"plan_id": "pro", "feature_id": "ev", "value_type": "numeric", "value_numeric": 4},
    )
    _flag(acme, "metered", feature_id="ev")
    for n, (condition, _) in enumerate(CONDITIONS):
        _flag(acme, f"c{n}", _rule(True, condition), _rule(False, rule_type="default"))
    acme.ok("POST", "/companies", 201, json={"keys": {"id": "small"}, "traits": {"seats": 1}})
    _track(acme, "e", 3, company=ACME, user=COYOTE)
    _track(acme, "seen", 2, quantity=2, company={"id": "small"})
    rulesets = {r["flag"]["key"]: compile_ruleset(r) for r in acme.ok("GET", "/rulesets")}
    for company_keys, user_keys in [(ACME, COYOTE), ({"id": "small"}, None), (None, COYOTE)]:
        ctx = _context(acme, company_keys, user_keys)
        body = {k: v for k, v in (("company", company_keys), ("user", user_keys)) if v}
        for result in acme.ok("POST", "/check", json=body)["flags"]:
            expected = rulesets[result["flag"]].check(ctx).model_dump(mode="json")
            assert result == expected


def _context(env: Env, company: Any, user: Any) -> EvalContext:
    def metrics(kind: str, entity_id: str) -> list[MetricValue]:
        found = env.ok("GET", f"/{kind}/{entity_id}/metrics")
        return [MetricValue.model_validate(m) for m in found]

    company_ctx = user_ctx = None
    if company:
        c = env.ok("POST", "/companies/lookup", json={"keys": company})
        overrides = env.ok("GET", "/overrides", params={"company_id": c["id"]})
        company_ctx = CompanyContext.from_model(
            c,
            metrics=metrics("companies", c["id"]),
            overrides=[CompanyOverride.model_validate(o) for o in overrides],
        )
    if user:
        u = env.ok("POST", "/users/lookup", json={"keys": user})
        user_ctx = UserContext.from_model(u, metrics=metrics("users", u["id"]))
    return EvalContext(company_ctx, user_ctx)


def test_bulk_check(acme: Env) -> None:
    _flag(
        acme,
        "b",
        _rule(True, {"condition_type": "trait", "trait_key": "tier", "trait_value": "gold"}),
    )
    _flag(acme, "a", default_value=True)
    _flag(acme, "c")
    acme.ok("DELETE", "/flags/c", 204)
    results = acme.ok("POST", "/check", json={"company": ACME})["flags"]
    assert [(r["flag"], r["value"], r["reason"]) for r in results] == [
        ("a", True, "DEFAULT"),
        ("b", True, "RULE_MATCH"),
    ]
    for bad in ({"company": {}, "x": 1}, {"company": {"id": ""}}, {"user": {"id": "a\x00"}}):
        assert_error(acme("POST", "/check", json=bad), 422, "validation_error")
        assert_error(acme("POST", "/flags/a/check", json=bad), 422, "validation_error")


def test_check_log(acme: Env, owner: Any) -> None:
    _flag(acme, "a", default_value=True)
    _flag(acme, "b")
    _check(acme, "a")  # not recorded
    assert acme.ok("GET", "/checks") == []
    acme.ok("POST", "/flags/a/check", params={"record": True}, json={"company": ACME})
    read = acme("POST", "/check", owner.read_key, params={"record": True}, json={"user": COYOTE})
    assert read.status_code == 200
    log = acme.ok("GET", "/checks")
    assert [(c["flag"], c["value"]) for c in log] == [("b", False), ("a", True), ("a", True)]
    assert log[0]["user"] == COYOTE and log[0]["company"] is None
    assert log[2]["company"] == ACME and log[2]["company_id"].startswith("comp_")
    assert log[2]["reason"] == "DEFAULT" and log[2]["key_id"].startswith("key_")
    assert [c["flag"] for c in acme.ok("GET", "/checks", params={"flag": "a"})] == ["a", "a"]
    older = acme.ok("GET", "/checks", params={"before": log[0]["id"], "limit": 1})
    assert [c["id"] for c in older] == [log[1]["id"]]
    r = acme("POST", "/flags/bad%00key/check", json={})
    assert_error(r, 422, "validation_error")


def test_changes_reach_checks_at_once(acme: Env) -> None:
    """The compiled rulesets are cached; every change on this replica is seen by the very
    next check, and so are changes of features and entitlements."""
    _flag(
        acme,
        "live",
        _rule(
            True, {"condition_type": "trait", "trait_key": "tier", "trait_value": "gold"}, id="r"
        ),
    )
    for n in range(5):
        expected = n % 2 == 0
        assert _check(acme, "live")["value"] is expected
        acme.ok(
            "PUT",
            "/flags/live/rules/r",
            json=_rule(
                not expected,
                {"condition_type": "trait", "trait_key": "tier", "trait_value": "gold"},
            ),
        )
    acme.ok("PATCH", "/flags/live", json={"default_value": True})
    acme.ok("DELETE", "/flags/live/rules/r", 204)
    assert _check(acme, "live")["reason"] == "DEFAULT" and _check(acme, "live")["value"] is True
    acme.ok("POST", "/features", 201, json={"id": "f"})
    acme.ok("PATCH", "/flags/live", json={"feature_id": "f", "default_value": False})
    assert _check(acme, "live")["value"] is False
    ent = acme.ok(
        "POST",
        "/entitlements",
        201,
        json={"plan_id": "pro", "feature_id": "f", "value_type": "boolean"},
    )
    assert _check(acme, "live")["reason"] == "PLAN_ENTITLEMENT"
    acme.ok("PATCH", f"/entitlements/{ent['id']}", json={"value_bool": False})
    assert _check(acme, "live")["value"] is False
    acme.ok("DELETE", f"/entitlements/{ent['id']}", 204)
    assert _check(acme, "live")["reason"] == "DEFAULT"
    # a company's plan and traits are read on every check
    acme.ok("POST", "/companies", json={"keys": ACME, "plan_id": None})
    _flag(acme, "no-plan", _rule(True, {"condition_type": "plan", "operator": "is_empty"}))
    assert _check(acme, "no-plan")["value"] is True


def test_a_change_by_another_writer_reaches_checks(acme: Env, control_db: Superuser) -> None:
    """A change committed elsewhere (another replica, here a direct SQL write) drops the
    compiled rulesets through NOTIFY millpond_flags."""
    _flag(acme, "remote", default_value=False)
    assert _check(acme, "remote")["value"] is False  # cached now
    with control_db() as conn:
        conn.execute(
            "UPDATE flag_rulesets SET ruleset = jsonb_set(ruleset, '{flag,default_value}',"
            " 'true') WHERE environment_id = %s AND flag_key = 'remote'",
            (acme.id,),
        )
    deadline = time.monotonic() + 5
    while _check(acme, "remote")["value"] is False:
        assert time.monotonic() < deadline, "the cache was not dropped"
        time.sleep(0.01)
