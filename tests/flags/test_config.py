"""Configuration: features, flags (soft delete, restore), rules, plans, entitlements, company
overrides — CRUD, errors, versions and delta sync (``since_version``), rulesets, audit."""

from __future__ import annotations

from typing import Any

import pytest

from ._helpers import assert_error
from .conftest import Account, Env

# -- features ----------------------------------------------------------------------------


def test_features(env: Env) -> None:
    made = env.ok("POST", "/features", 201, json={"id": "seats", "name": "Seats", **_TRAIT})
    assert made["id"] == "seats" and made["feature_type"] == "trait"
    generated = env.ok("POST", "/features", 201, json={"event_subtype": "call", **_EVENT_TYPE})
    assert generated["id"].startswith("feat_") and generated["event_name"] == "call"
    assert_error(env("POST", "/features", json={"id": "seats"}), 409, "feature_exists")
    assert env.ok("GET", "/features/seats") == made
    ids = sorted([made["id"], generated["id"]])
    assert [f["id"] for f in env.ok("GET", "/features")] == ids
    assert [f["id"] for f in env.ok("GET", "/features", params={"limit": 1})] == ids[:1]
    assert [f["id"] for f in env.ok("GET", "/features", params={"after": ids[0]})] == ids[1:]
    updated = env.ok("PATCH", "/features/seats", json={"description": "in use"})
    assert updated["description"] == "in use" and updated["name"] == "Seats"
    assert_error(
        env("PATCH", "/features/seats", json={"feature_type": "event"}), 422, "validation_error"
    )
    assert_error(env("PATCH", "/features/seats", json={"name": None}), 422, "validation_error")
    assert env.ok("GET", "/features/seats") == updated
    env.ok("DELETE", "/features/seats", 204)
    for method in ("GET", "PATCH", "DELETE"):
        r = env(method, "/features/seats", **({"json": {}} if method == "PATCH" else {}))
        assert_error(r, 404, "feature_not_found")
    assert_error(env("GET", "/features/bad%00id"), 404, "feature_not_found")


_EVENT_TYPE = {"feature_type": "event"}
_TRAIT = {"feature_type": "trait", "trait_key": "seats"}


@pytest.mark.parametrize(
    "body",
    [
        {"feature_type": "event"},
        {"feature_type": "trait"},
        {"feature_type": "other"},
        {"id": "has space"},
        {"id": ""},
        {"name": "x", "unknown": 1},
        {"name": "nul\x00"},
        {"feature_type": "event", "event_name": ""},
        {"metric_aggregation": "avg"},
    ],
)
def test_feature_validation(env: Env, body: dict[str, Any]) -> None:
    before = env.version()
    assert_error(env("POST", "/features", json=body), 422, "validation_error")
    assert env.version() == before and env.ok("GET", "/features") == []


def test_deleting_a_feature_ungates_its_flags(env: Env) -> None:
    env.ok("POST", "/features", 201, json={"id": "f"})
    env.ok("POST", "/plans", 201, json={"id": "p"})
    env.ok("POST", "/entitlements", 201, json=_ent("p", "f"))
    company = env.ok("POST", "/companies", 201, json={"keys": {"id": "c"}, "plan_id": "p"})
    env.ok("POST", "/overrides", 201, json={"company_id": company["id"], **_grant("f")})
    flag = env.ok("POST", "/flags", 201, json={"key": "k", "feature_id": "f"})
    assert env.ok("POST", "/flags/k/check", json={"company": {"id": "c"}})["value"] is True
    env.ok("DELETE", "/features/f", 204)
    after = env.ok("GET", "/flags/k")
    assert after["feature_id"] is None and after["version"] > flag["version"]
    assert env.ok("GET", "/entitlements") == [] and env.ok("GET", "/overrides") == []
    ruleset = env.ok("GET", "/flags/k/ruleset")
    assert ruleset["feature"] is None and ruleset["entitlements"] == []
    check = env.ok("POST", "/flags/k/check", json={"company": {"id": "c"}})
    assert (check["value"], check["reason"]) == (False, "DEFAULT")


# -- flags -------------------------------------------------------------------------------


def test_flag_create_get_list(env: Env) -> None:
    before = env.version()
    rules = [
        {
            "name": "staff",
            "value": True,
            "conditions": [{"condition_type": "trait", "trait_key": "staff", "trait_value": True}],
            "condition_groups": [
                {"conditions": [{"condition_type": "plan", "resource_ids": ["pro"]}]}
            ],
        },
        {"id": "fallback", "rule_type": "default", "value": False},
    ]
    body = {"key": "new-checkout", "name": "New checkout", "default_value": False, "rules": rules}
    flag = env.ok("POST", "/flags", 201, json=body)
    assert flag["id"].startswith("flag_") and flag["key"] == "new-checkout"
    assert flag["version"] == before + 1 == env.version() and flag["deleted_at"] is None
    assert env.ok("GET", "/flags/new-checkout") == flag
    stored = env.ok("GET", "/flags/new-checkout/rules")
    assert [r["id"] for r in stored][1] == "fallback"
    first = stored[0]
    assert first["id"].startswith("rule_") and first["flag_key"] == "new-checkout"
    assert first["conditions"][0]["id"].startswith("cond_")
    assert first["condition_groups"][0]["id"].startswith("grp_")
    assert first["condition_groups"][0]["conditions"][0]["id"].startswith("cond_")
    ruleset = env.ok("GET", "/flags/new-checkout/ruleset")
    assert ruleset["flag"] == flag and ruleset["rules"] == stored
    assert ruleset["feature"] is None and ruleset["entitlements"] == []
    for key in ("a", "b", "c"):
        env.ok("POST", "/flags", 201, json={"key": key})
    keys = [f["key"] for f in env.ok("GET", "/flags")]
    assert keys == ["a", "b", "c", "new-checkout"]
    page = env.ok("GET", "/flags", params={"limit": 2, "after": "a"})
    assert [f["key"] for f in page] == ["b", "c"]
    assert_error(env("GET", "/flags", params={"limit": 0}), 422, "validation_error")
    assert_error(env("GET", "/flags", params={"limit": 1001}), 422, "validation_error")
    assert_error(env("GET", "/flags", params={"after": "a\x00"}), 422, "validation_error")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"key": "dup"}, 409, "flag_exists"),
        ({"key": "x", "feature_id": "nope"}, 404, "feature_not_found"),
        ({"key": "has space"}, 422, "validation_error"),
        ({"key": "x", "flag_type": "string"}, 422, "validation_error"),
        ({"key": "x", "rules": [{"value": True, "bogus": 1}]}, 422, "validation_error"),
        ({"key": "x", "rules": [{"rule_type": "standard"}]}, 422, "validation_error"),
        (
            {"key": "x", "rules": [{"value": True, "conditions": [{"condition_type": "zz"}]}]},
            422,
            "validation_error",
        ),
        (
            {
                "key": "x",
                "rules": [{"value": True, "conditions": [{"condition_type": "user", "x": 1}]}],
            },
            422,
            "validation_error",
        ),
        (
            {
                "key": "x",
                "rules": [
                    {
                        "value": True,
                        "conditions": [
                            {"condition_type": "trait", "trait_key": "a", "trait_value": "b\x00"}
                        ],
                    }
                ],
            },
            422,
            "validation_error",
        ),
        (
            {"key": "x", "rules": [{"id": "same", "value": True}, {"id": "same", "value": False}]},
            409,
            "rule_exists",
        ),
        (
            {
                "key": "x",
                "rules": [
                    {
                        "value": True,
                        "conditions": [{"condition_type": "rollout", "percentage": 101}],
                    }
                ],
            },
            422,
            "validation_error",
        ),
    ],
)
def test_flag_create_errors(env: Env, body: dict[str, Any], status: int, code: str) -> None:
    env.ok("POST", "/flags", 201, json={"key": "dup"})
    before = env.version()
    assert_error(env("POST", "/flags", json=body), status, code)
    assert env.version() == before
    assert [f["key"] for f in env.ok("GET", "/flags", params={"include_deleted": True})] == ["dup"]


def test_non_finite_numbers_are_refused(env: Env) -> None:
    body = (
        b'{"key": "x", "rules": [{"value": true, "conditions": [{"condition_type": "trait",'
        b' "trait_key": "a", "trait_value": NaN}]}]}'
    )
    r = env("POST", "/flags", content=body, headers={"content-type": "application/json"})
    assert_error(r, 422, "validation_error")
    assert env.ok("GET", "/flags") == []


def test_flag_update(env: Env) -> None:
    env.ok("POST", "/features", 201, json={"id": "f"})
    flag = env.ok("POST", "/flags", 201, json={"key": "k", "name": "K"})
    updated = env.ok("PATCH", "/flags/k", json={"default_value": True, "feature_id": "f"})
    assert updated["default_value"] is True and updated["feature_id"] == "f"
    assert updated["name"] == "K" and updated["version"] == flag["version"] + 1
    assert env.ok("GET", "/flags/k/ruleset")["feature"]["id"] == "f"
    cleared = env.ok("PATCH", "/flags/k", json={"feature_id": None})
    assert cleared["feature_id"] is None
    assert_error(env("PATCH", "/flags/k", json={"feature_id": "zz"}), 404, "feature_not_found")
    assert_error(env("PATCH", "/flags/k", json={"name": None}), 422, "validation_error")
    assert_error(env("PATCH", "/flags/k", json={"key": "renamed"}), 422, "validation_error")
    assert_error(env("PATCH", "/flags/nope", json={}), 404, "flag_not_found")
    assert env.ok("GET", "/flags/k") == cleared
    entry = env.ok("GET", "/audit", params={"entity": "flag", "limit": 1})[0]
    assert entry["action"] == "update" and entry["entity_id"] == flag["id"]
    assert entry["before"]["feature_id"] == "f" and entry["after"]["feature_id"] is None
    assert entry["version"] == cleared["version"]


def test_soft_delete_and_restore(env: Env) -> None:
    flag = env.ok("POST", "/flags", 201, json={"key": "k", "rules": [{"value": True}]})
    assert env.ok("POST", "/flags/k/check", json={})["value"] is True
    env.ok("DELETE", "/flags/k", 204)
    assert_error(env("GET", "/flags/k"), 404, "flag_not_found")
    assert_error(env("GET", "/flags/k/rules"), 404, "flag_not_found")
    assert_error(env("GET", "/flags/k/ruleset"), 404, "flag_not_found")
    assert_error(env("PATCH", "/flags/k", json={"name": "x"}), 404, "flag_not_found")
    assert_error(env("DELETE", "/flags/k"), 404, "flag_not_found")
    assert env.ok("GET", "/flags") == []
    deleted = env.ok("GET", "/flags/k", params={"include_deleted": True})
    assert deleted["deleted_at"] is not None and deleted["version"] > flag["version"]
    assert [f["key"] for f in env.ok("GET", "/flags", params={"include_deleted": True})] == ["k"]
    check = env.ok("POST", "/flags/k/check", json={})
    assert (check["value"], check["reason"], check["flag_id"]) == (False, "FLAG_NOT_FOUND", None)
    assert env.ok("POST", "/check", json={})["flags"] == []
    err = assert_error(env("POST", "/flags", json={"key": "k"}), 409, "flag_exists")
    assert err["details"] == {"deleted": True}
    restored = env.ok("POST", "/flags/k/restore")
    assert restored["deleted_at"] is None and restored["version"] > deleted["version"]
    assert env.ok("POST", "/flags/k/check", json={})["value"] is True
    assert len(env.ok("GET", "/flags/k/rules")) == 1
    assert_error(env("POST", "/flags/k/restore"), 409, "flag_not_deleted")
    assert_error(env("POST", "/flags/zz/restore"), 404, "flag_not_found")
    actions = [e["action"] for e in env.ok("GET", "/audit", params={"entity_id": flag["id"]})]
    assert actions == ["restore", "delete", "create"]


def test_purge_hard_deletes_a_deleted_flag(env: Env, owner: Account) -> None:
    flag = env.ok("POST", "/flags", 201, json={"key": "k", "rules": [{"value": True}]})
    assert_error(env("POST", "/flags/k/purge"), 409, "flag_not_deleted")  # live: refused
    assert_error(env("POST", "/flags/nope/purge"), 404, "flag_not_found")
    assert_error(env("POST", "/flags/k/purge", key=owner.read_key), 403, "read_only_key")
    env.ok("DELETE", "/flags/k", 204)
    env.ok("POST", "/flags/k/purge", 204)
    assert_error(env("GET", "/flags/k", params={"include_deleted": True}), 404, "flag_not_found")
    assert_error(env("POST", "/flags/k/restore"), 404, "flag_not_found")
    env.ok("POST", "/flags", 201, json={"key": "k"})  # the key is free again
    entry = env.ok("GET", "/audit", params={"entity_id": flag["id"]})[0]
    assert entry["action"] == "purge" and entry["after"] is None


# -- rules -------------------------------------------------------------------------------


def test_rules_crud(env: Env) -> None:
    env.ok("POST", "/flags", 201, json={"key": "k", "rules": [{"id": "a", "value": True}]})
    added = env.ok("POST", "/flags/k/rules", 201, json={"id": "b", "value": False, "priority": 3})
    assert added["flag_key"] == "k" and added["priority"] == 3
    generated = env.ok("POST", "/flags/k/rules", 201, json={"value": True})
    assert generated["id"].startswith("rule_")
    assert [r["id"] for r in env.ok("GET", "/flags/k/rules")] == ["a", "b", generated["id"]]
    assert_error(env("POST", "/flags/k/rules", json={"id": "a", "value": True}), 409, "rule_exists")
    assert env.ok("GET", "/flags/k/rules/b") == added
    replaced = env.ok("PUT", "/flags/k/rules/b", json={"value": True, "name": "now true"})
    assert replaced["id"] == "b" and replaced["name"] == "now true" and replaced["priority"] == 0
    assert_error(
        env("PUT", "/flags/k/rules/b", json={"id": "c", "value": True}), 422, "validation_error"
    )
    assert_error(env("PUT", "/flags/k/rules/zz", json={"value": True}), 404, "rule_not_found")
    env.ok("DELETE", "/flags/k/rules/a", 204)
    assert_error(env("GET", "/flags/k/rules/a"), 404, "rule_not_found")
    assert_error(env("DELETE", "/flags/k/rules/a"), 404, "rule_not_found")
    assert_error(env("GET", "/flags/zz/rules/b"), 404, "flag_not_found")
    assert [r["id"] for r in env.ok("GET", "/flags/k/rules")] == ["b", generated["id"]]
    whole = env.ok(
        "PUT",
        "/flags/k/rules",
        json={"rules": [{"id": "x", "value": True}, {"rule_type": "default", "value": False}]},
    )
    assert whole[0]["id"] == "x" and whole[1]["id"].startswith("rule_")
    assert env.ok("GET", "/flags/k/rules") == whole
    assert env.ok("GET", "/flags/k/ruleset")["rules"] == whole
    entry = env.ok("GET", "/audit", params={"limit": 1})[0]
    assert entry["action"] == "replace" and entry["entity"] == "flag"
    assert [r["id"] for r in entry["before"]["rules"]] == ["b", generated["id"]]
    assert [r["id"] for r in entry["after"]["rules"]] == [r["id"] for r in whole]
    assert_error(env("PUT", "/flags/k/rules", json=[]), 422, "validation_error")
    assert env.ok("PUT", "/flags/k/rules", json={"rules": []}) == []
    rule_audit = env.ok("GET", "/audit", params={"entity": "rule", "entity_id": "b"})
    assert [e["action"] for e in rule_audit] == ["update", "create"]
    assert rule_audit[0]["before"]["value"] is False and rule_audit[0]["after"]["value"] is True


# -- versions, delta sync, audit pagination ----------------------------------------------


def test_versions_and_since_version(env: Env) -> None:
    start = env.version()
    env.ok("POST", "/features", 201, json={"id": "f"})
    a = env.ok("POST", "/flags", 201, json={"key": "a", "feature_id": "f"})
    b = env.ok("POST", "/flags", 201, json={"key": "b"})
    c = env.ok("POST", "/flags", 201, json={"key": "c", "feature_id": "f"})
    assert [a["version"], b["version"], c["version"]] == [start + 2, start + 3, start + 4]
    mark = env.version()
    assert env.ok("GET", "/flags", params={"since_version": mark}) == []
    assert env.ok("GET", "/rulesets", params={"since_version": mark}) == []
    env.ok("DELETE", "/flags/b", 204)
    # a plan entitlement to f changes the rulesets of a and c (one version for both)
    env.ok("POST", "/plans", 201, json={"id": "p"})
    env.ok("POST", "/entitlements", 201, json=_ent("p", "f"))
    changed = env.ok("GET", "/flags", params={"since_version": mark})
    assert [(f["key"], f["version"]) for f in changed] == [
        ("b", mark + 1),
        ("a", mark + 3),
        ("c", mark + 3),
    ]
    assert changed[0]["deleted_at"] is not None
    rulesets = env.ok("GET", "/rulesets", params={"since_version": mark})
    assert [r["flag"]["key"] for r in rulesets] == ["b", "a", "c"]
    assert rulesets[1]["entitlements"][0]["plan_id"] == "p"
    assert [r["flag"]["key"] for r in env.ok("GET", "/rulesets")] == ["a", "c"]
    # a plan's rename does not touch rulesets; its deletion removes the entitlement
    env.ok("PATCH", "/plans/p", json={"name": "Pro"})
    assert env.ok("GET", "/flags", params={"since_version": mark + 3}) == []
    env.ok("DELETE", "/plans/p", 204)
    assert {f["key"] for f in env.ok("GET", "/flags", params={"since_version": mark + 4})} == {
        "a",
        "c",
    }
    assert env.ok("GET", "/flags/a/ruleset")["entitlements"] == []
    assert_error(env("GET", "/flags", params={"since_version": -1}), 422, "validation_error")


def test_audit_pagination_and_filters(env: Env, owner: Any) -> None:
    for n in range(5):
        env.ok("POST", "/plans", 201, json={"id": f"p{n}"})
    entries = env.ok("GET", "/audit")
    assert [e["entity_id"] for e in entries[:5]] == [f"p{n}" for n in (4, 3, 2, 1, 0)]
    assert entries[-1]["entity"] == "environment"
    versions = [e["version"] for e in entries]
    assert versions == sorted(versions, reverse=True)
    first = env.ok("GET", "/audit", params={"limit": 2})
    rest = env.ok("GET", "/audit", params={"limit": 2, "before": first[-1]["id"]})
    assert [e["id"] for e in first + rest] == [e["id"] for e in entries[:4]]
    plan = entries[0]
    assert plan["username"] == owner.username and plan["key_id"].startswith("key_")
    assert plan["before"] is None and plan["after"]["id"] == "p4"
    assert env.ok("GET", "/audit", params={"entity": "flag"}) == []
    assert_error(env("GET", "/audit", params={"entity": "x\x00"}), 422, "validation_error")
    assert_error(env("GET", "/audit", params={"before": -1}), 422, "validation_error")


# -- plans, entitlements, overrides ------------------------------------------------------


def _ent(plan: str, feature: str, **grant: Any) -> dict[str, Any]:
    return {"plan_id": plan, "feature_id": feature, "value_type": "boolean", **grant}


def _grant(feature: str, **grant: Any) -> dict[str, Any]:
    return {"feature_id": feature, "value_type": "boolean", **grant}


def test_plans(env: Env) -> None:
    plan = env.ok("POST", "/plans", 201, json={"id": "pro", "name": "Pro"})
    assert plan["id"] == "pro"
    assert env.ok("POST", "/plans", 201, json={})["id"].startswith("plan_")
    assert_error(env("POST", "/plans", json={"id": "pro"}), 409, "plan_exists")
    assert_error(env("POST", "/plans", json={"id": "a b"}), 422, "validation_error")
    assert env.ok("GET", "/plans/pro") == plan
    assert len(env.ok("GET", "/plans")) == 2
    assert env.ok("PATCH", "/plans/pro", json={"description": "d"})["name"] == "Pro"
    company = env.ok("POST", "/companies", 201, json={"keys": {"id": "c"}, "plan_id": "pro"})
    env.ok("DELETE", "/plans/pro", 204)
    assert env.ok("GET", f"/companies/{company['id']}")["plan_id"] is None
    for method in ("GET", "PATCH", "DELETE"):
        kwargs: dict[str, Any] = {"json": {}} if method == "PATCH" else {}
        assert_error(env(method, "/plans/pro", **kwargs), 404, "plan_not_found")


def test_entitlements(env: Env) -> None:
    env.ok("POST", "/features", 201, json={"id": "f", "feature_type": "event", "event_name": "e"})
    env.ok("POST", "/features", 201, json={"id": "g"})
    env.ok("POST", "/plans", 201, json={"id": "p"})
    numeric = {"value_type": "numeric", "value_numeric": 10, "metric_period": "current_month"}
    ent = env.ok("POST", "/entitlements", 201, json=_ent("p", "f", **numeric))
    assert ent["id"].startswith("ent_") and ent["value_numeric"] == 10
    other = env.ok("POST", "/entitlements", 201, json=_ent("p", "g"))
    assert_error(env("POST", "/entitlements", json=_ent("p", "f")), 409, "entitlement_exists")
    assert_error(env("POST", "/entitlements", json=_ent("zz", "f")), 404, "plan_not_found")
    assert_error(env("POST", "/entitlements", json=_ent("p", "zz")), 404, "feature_not_found")
    for bad in (
        _ent("p", "g", value_type="numeric"),
        _ent("p", "g", value_type="trait"),
        _ent("p", "g", value_numeric=-1),
        _ent("p", "g", value_type="lots"),
        _ent("p", "g", expires_at="2030-01-01T00:00:00Z"),
    ):
        assert_error(env("POST", "/entitlements", json=bad), 422, "validation_error")
    assert env.ok("GET", f"/entitlements/{ent['id']}") == ent
    assert [e["id"] for e in env.ok("GET", "/entitlements", params={"feature_id": "g"})] == [
        other["id"]
    ]
    assert len(env.ok("GET", "/entitlements", params={"plan_id": "p"})) == 2
    updated = env.ok("PATCH", f"/entitlements/{ent['id']}", json={"value_numeric": 20})
    assert updated["value_numeric"] == 20 and updated["metric_period"] == "current_month"
    assert env.ok("GET", "/flags") == []  # no flag yet: nothing to rebuild
    bad = env("PATCH", f"/entitlements/{ent['id']}", json={"value_type": "trait"})
    assert_error(bad, 422, "validation_error")
    expiring = {"expires_at": "2030-01-01T00:00:00Z"}
    assert_error(env("PATCH", f"/entitlements/{ent['id']}", json=expiring), 422, "validation_error")
    env.ok("DELETE", f"/entitlements/{ent['id']}", 204)
    assert_error(env("GET", f"/entitlements/{ent['id']}"), 404, "entitlement_not_found")
    assert_error(env("DELETE", f"/entitlements/{ent['id']}"), 404, "entitlement_not_found")
    entry = env.ok("GET", "/audit", params={"entity_id": ent["id"]})
    assert [e["action"] for e in entry] == ["delete", "update", "create"]
    assert entry[1]["before"]["value_numeric"] == 10 and entry[1]["after"]["value_numeric"] == 20


def test_company_overrides(env: Env) -> None:
    env.ok("POST", "/features", 201, json={"id": "f"})
    c = env.ok("POST", "/companies", 201, json={"keys": {"id": "acme", "domain": "acme.test"}})
    by_keys = env.ok(
        "POST", "/overrides", 201, json={"company": {"domain": "acme.test"}, **_grant("f")}
    )
    assert by_keys["company_id"] == c["id"] and by_keys["expires_at"] is None
    again = {"company_id": c["id"], **_grant("f")}
    assert_error(env("POST", "/overrides", json=again), 409, "override_exists")
    for body, status, code in [
        ({"company_id": "comp_zz", **_grant("f")}, 404, "company_not_found"),
        ({"company": {"id": "nobody"}, **_grant("f")}, 404, "company_not_found"),
        ({"company_id": c["id"], **_grant("zz")}, 404, "feature_not_found"),
        (_grant("f"), 422, "validation_error"),
        (
            {"company_id": c["id"], "company": {"id": "acme"}, **_grant("f")},
            422,
            "validation_error",
        ),
        ({"company": {}, **_grant("f")}, 422, "validation_error"),
    ]:
        assert_error(env("POST", "/overrides", json=body), status, code)
    later = "2031-02-03T04:05:06Z"
    updated = env.ok("PATCH", f"/overrides/{by_keys['id']}", json={"expires_at": later})
    assert updated["expires_at"] == later and updated["value_type"] == "boolean"
    assert env.ok("GET", f"/overrides/{by_keys['id']}") == updated
    listed = env.ok("GET", "/overrides", params={"company_id": c["id"]})
    assert [o["id"] for o in listed] == [by_keys["id"]]
    assert env.ok("GET", "/overrides", params={"company_id": "other"}) == []
    env.ok("DELETE", f"/overrides/{by_keys['id']}", 204)
    assert_error(env("GET", f"/overrides/{by_keys['id']}"), 404, "override_not_found")
    assert_error(env("PATCH", f"/overrides/{by_keys['id']}", json={}), 404, "override_not_found")
