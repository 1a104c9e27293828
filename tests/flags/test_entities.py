"""Companies and users: upsert by any of their keys (keys added, traits merged), lookup,
get, list with filters and pagination, delete; users belong to companies."""

from __future__ import annotations

from typing import Any

import pytest

from ._helpers import assert_error
from .conftest import Env


def test_company_upsert_by_any_key(env: Env) -> None:
    env.ok("POST", "/plans", 201, json={"id": "pro"})
    body = {"keys": {"id": 42}, "name": "Acme", "traits": {"city": "Atlanta", "seats": 3}}
    created = env.ok("POST", "/companies", 201, json=body)
    assert created["id"].startswith("comp_") and created["keys"] == {"id": "42"}
    assert created["traits"] == {"city": "Atlanta", "seats": 3} and created["plan_id"] is None
    assert created["last_seen_at"] is not None
    # found by its id key: a new key is added, traits merged, plan set
    again = {"keys": {"id": "42", "domain": "acme.test"}, "traits": {"seats": 5}, "plan_id": "pro"}
    updated = env.ok("POST", "/companies", 200, json=again)
    assert updated["id"] == created["id"] and updated["name"] == "Acme"
    assert updated["keys"] == {"id": "42", "domain": "acme.test"}
    assert updated["traits"] == {"city": "Atlanta", "seats": 5} and updated["plan_id"] == "pro"
    # now addressed by the new key alone; a key name takes a new value
    moved = env.ok("POST", "/companies", 200, json={"keys": {"domain": "acme.test", "id": "43"}})
    assert moved["id"] == created["id"] and moved["keys"]["id"] == "43"
    assert moved["plan_id"] == "pro"  # left out: kept
    found = env.ok("POST", "/companies/lookup", json={"keys": {"id": "43"}})
    assert found == env.ok("GET", f"/companies/{created['id']}")
    assert_error(
        env("POST", "/companies/lookup", json={"keys": {"id": "42"}}), 404, "company_not_found"
    )
    cleared = env.ok("POST", "/companies", 200, json={"keys": {"id": "43"}, "plan_id": None})
    assert cleared["plan_id"] is None
    assert_error(
        env("POST", "/companies", json={"keys": {"id": "43"}, "plan_id": "zz"}),
        404,
        "plan_not_found",
    )
    audit = env.ok("GET", "/audit", params={"entity": "company"})
    assert [e["action"] for e in audit] == ["update", "update", "update", "create"]
    assert (
        audit[-2]["before"]["traits"]["seats"] == 3 and audit[-2]["after"]["traits"]["seats"] == 5
    )


def test_key_conflicts(env: Env) -> None:
    a = env.ok("POST", "/companies", 201, json={"keys": {"id": "a"}})
    env.ok("POST", "/companies", 201, json={"keys": {"id": "b"}})
    before = env.version()
    # keys of two different companies
    r = env("POST", "/companies", json={"keys": {"id": "a", "domain": "x"}, "name": "?"})
    assert r.status_code == 200  # only a has id=a
    assert_error(
        env("POST", "/companies", json={"keys": {"id": "b", "domain": "x"}}), 409, "key_conflict"
    )
    assert_error(
        env("POST", "/companies/lookup", json={"keys": {"id": "b", "domain": "x"}}),
        409,
        "key_conflict",
    )
    assert env.version() == before + 1
    assert env.ok("GET", f"/companies/{a['id']}")["keys"] == {"id": "a", "domain": "x"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"keys": {}},
        {"keys": {"": "x"}},
        {"keys": {"id": ""}},
        {"keys": {"id": "x" * 256}},
        {"keys": {"id": "nul\x00"}},
        {"keys": {"id": "a"}, "traits": {"t": "nul\x00"}},
        {"keys": {"id": "a"}, "traits": {"t": [1]}},
        {"keys": {"id": "a"}, "traits": {"": 1}},
        {"keys": {"id": "a"}, "unknown": 1},
        {"keys": {"id": "a"}, "name": "nul\x00"},
        {"keys": {"id": "a"}, "plan_id": "nul\x00"},
        {"keys": ["a"]},
    ],
)
def test_company_validation(env: Env, body: dict[str, Any]) -> None:
    assert_error(env("POST", "/companies", json=body), 422, "validation_error")
    assert env.ok("GET", "/companies") == []


def test_users_and_memberships(env: Env) -> None:
    body = {
        "keys": {"email": "wcoyote@acme.net", "user_id": "u1"},
        "name": "Wile E. Coyote",
        "traits": {"login_count": 24, "is_staff": False},
        "company": {"id": "acme"},
    }
    user = env.ok("POST", "/users", 201, json=body)
    company = env.ok("POST", "/companies/lookup", json={"keys": {"id": "acme"}})
    assert user["company_ids"] == [company["id"]] and user["id"].startswith("user_")
    assert user["traits"] == {"login_count": 24, "is_staff": False}
    other = env.ok("POST", "/companies", 201, json={"keys": {"id": "beta"}})
    again = env.ok("POST", "/users", json={"keys": {"user_id": "u1"}, "company": {"id": "beta"}})
    assert sorted(again["company_ids"]) == sorted([company["id"], other["id"]])
    assert again["name"] == "Wile E. Coyote"
    assert env.ok("POST", "/users/lookup", json={"keys": {"email": "wcoyote@acme.net"}}) == again
    env.ok("POST", "/users", 201, json={"keys": {"email": "roadrunner@acme.net"}})
    members = env.ok("GET", "/users", params={"company_id": other["id"]})
    assert [u["id"] for u in members] == [user["id"]]
    assert len(env.ok("GET", "/users")) == 2
    assert_error(
        env("POST", "/users", json={"keys": {"id": "x"}, "company": {}}), 422, "validation_error"
    )
    # deleting the company removes the membership; deleting the user removes it
    env.ok("DELETE", f"/companies/{other['id']}", 204)
    assert env.ok("GET", f"/users/{user['id']}")["company_ids"] == [company["id"]]
    env.ok("DELETE", f"/users/{user['id']}", 204)
    assert_error(env("GET", f"/users/{user['id']}"), 404, "user_not_found")
    assert_error(env("DELETE", f"/users/{user['id']}"), 404, "user_not_found")
    assert_error(env("GET", f"/users/{user['id']}/metrics"), 404, "user_not_found")
    assert_error(
        env("POST", "/users/lookup", json={"keys": {"user_id": "u1"}}), 404, "user_not_found"
    )
    # the keys are free again
    assert env.ok("POST", "/users", 201, json={"keys": {"user_id": "u1"}})["id"] != user["id"]


def test_list_filters_and_pages(env: Env) -> None:
    env.ok("POST", "/plans", 201, json={"id": "pro"})
    made = []
    for n, name in enumerate(["Acme", "Acme Labs", "Globex", "100%_Real"]):
        body: dict[str, Any] = {"keys": {"id": f"c{n}"}, "name": name}
        if n % 2:
            body["plan_id"] = "pro"
        made.append(env.ok("POST", "/companies", 201, json=body))
    ids = sorted(c["id"] for c in made)
    assert [c["id"] for c in env.ok("GET", "/companies")] == ids
    first = env.ok("GET", "/companies", params={"limit": 3})
    rest = env.ok("GET", "/companies", params={"limit": 3, "after": first[-1]["id"]})
    assert [c["id"] for c in first + rest] == ids
    acme = env.ok("GET", "/companies", params={"q": "acme"})
    assert sorted(c["name"] for c in acme) == ["Acme", "Acme Labs"]
    assert [c["name"] for c in env.ok("GET", "/companies", params={"q": "%_"})] == ["100%_Real"]
    on_pro = env.ok("GET", "/companies", params={"plan_id": "pro"})
    assert sorted(c["name"] for c in on_pro) == ["100%_Real", "Acme Labs"]
    assert_error(env("GET", "/companies", params={"q": "a\x00"}), 422, "validation_error")
    assert_error(env("GET", "/companies/comp%00x"), 404, "company_not_found")
    assert_error(env("GET", "/companies/nope"), 404, "company_not_found")
    assert_error(env("DELETE", "/companies/nope"), 404, "company_not_found")


def test_environments_are_isolated(env: Env, make_env: Any, owner: Any) -> None:
    other = make_env(owner)
    mine = env.ok("POST", "/companies", 201, json={"keys": {"id": "same"}})
    theirs = other.ok("POST", "/companies", 201, json={"keys": {"id": "same"}})
    assert mine["id"] != theirs["id"]
    assert_error(other("GET", f"/companies/{mine['id']}"), 404, "company_not_found")
    assert_error(other("DELETE", f"/companies/{mine['id']}"), 404, "company_not_found")
    env.ok("POST", "/features", 201, json={"id": "f"})
    other.ok("POST", "/features", 201, json={"id": "f"})
    ovr = {"company_id": theirs["id"], "feature_id": "f", "value_type": "boolean"}
    assert_error(env("POST", "/overrides", json=ovr), 404, "company_not_found")
