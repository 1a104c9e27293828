"""Environments of an account and the keys bound to them: create (and the default pair),
list, get by id or name, rename, delete; bound keys reach their environment only."""

from __future__ import annotations

import pytest

from ._helpers import assert_error, ok, unique
from .conftest import Account, Call, Env, MakeAccount, MakeEnv

ENVS = "/v1/flags/environments"


def test_create_get_and_list(call: Call, make_account: MakeAccount) -> None:
    me = make_account()
    prod = ok(call("POST", ENVS, me.key, json={"name": "Production"}), 201)
    assert prod["id"].startswith("env_") and prod["name"] == "Production"
    assert prod["environment_type"] == "production" and prod["version"] == 1
    test = ok(call("POST", ENVS, me.key, json={"name": "qa", "environment_type": "staging"}), 201)
    assert test["environment_type"] == "staging"
    other = ok(call("POST", ENVS, me.key, json={"name": "sandbox"}), 201)
    assert other["environment_type"] == "development"
    listed = ok(call("GET", ENVS, me.read_key))
    assert [e["id"] for e in listed] == [prod["id"], test["id"], other["id"]]
    # by id, and by name in any case
    for ref in (prod["id"], "production", "PRODUCTION"):
        assert ok(call("GET", f"{ENVS}/{ref}", me.read_key))["id"] == prod["id"]


def test_defaults_are_idempotent(call: Call, make_account: MakeAccount) -> None:
    me = make_account()
    first = ok(call("POST", ENVS + "/defaults", me.key))
    assert [(e["name"], e["environment_type"]) for e in first] == [
        ("development", "development"),
        ("production", "production"),
    ]
    again = ok(call("POST", ENVS + "/defaults", me.key))
    assert [e["id"] for e in again] == [e["id"] for e in first]
    assert_error(call("POST", ENVS + "/defaults", me.read_key), 403, "read_only_key")
    assert_error(call("POST", ENVS + "/defaults"), 401, "unauthorized")


def test_names_are_unique_per_account(call: Call, make_account: MakeAccount) -> None:
    me, them = make_account(), make_account()
    ok(call("POST", ENVS, me.key, json={"name": "shared"}), 201)
    assert_error(call("POST", ENVS, me.key, json={"name": "SHARED"}), 409, "environment_exists")
    theirs = ok(call("POST", ENVS, them.key, json={"name": "shared"}), 201)
    # a name resolves in the caller's own account only
    assert ok(call("GET", f"{ENVS}/shared", them.key))["id"] == theirs["id"]
    mine = ok(call("GET", f"{ENVS}/shared", me.key))
    assert mine["id"] != theirs["id"]
    assert_error(call("GET", f"{ENVS}/{theirs['id']}", me.key), 404, "environment_not_found")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "has space"},
        {"name": "env_sneaky"},
        {"name": "ENV_sneaky"},
        {"name": "-dash-first"},
        {"name": "x" * 64},
        {"name": "nul\x00"},
        {"name": "ok", "environment_type": "prod"},
        {"name": "ok", "extra": 1},
        {"name": 5},
    ],
)
def test_create_rejects_bad_input(call: Call, owner: Account, body: object) -> None:
    before = ok(call("GET", ENVS, owner.key))
    assert_error(call("POST", ENVS, owner.key, json=body), 422, "validation_error")
    assert ok(call("GET", ENVS, owner.key)) == before


def test_create_needs_a_write_key_of_no_environment(call: Call, owner: Account, env: Env) -> None:
    assert_error(call("POST", ENVS, json={"name": "x"}), 401, "unauthorized")
    assert_error(call("POST", ENVS, owner.read_key, json={"name": "x"}), 403, "read_only_key")
    bound = ok(call("POST", env.base + "/keys", owner.key, json={}), 201)["secret"]
    assert_error(call("POST", ENVS, bound, json={"name": "x"}), 403, "environment_forbidden")
    assert_error(call("POST", ENVS + "/defaults", bound), 403, "environment_forbidden")


@pytest.mark.parametrize("ref", ["nope", "env_0000000000000000", "env_x", "%00", "a b"])
def test_unknown_environments(call: Call, owner: Account, ref: str) -> None:
    assert_error(call("GET", f"{ENVS}/{ref}", owner.key), 404, "environment_not_found")
    assert_error(call("GET", f"{ENVS}/{ref}/flags", owner.key), 404, "environment_not_found")


def test_rename_and_retype(call: Call, env: Env, make_env: MakeEnv, owner: Account) -> None:
    new_name = unique("renamed")
    before = env.version()
    updated = env.ok("PATCH", json={"name": new_name, "environment_type": "staging"})
    assert updated["name"] == new_name and updated["environment_type"] == "staging"
    assert updated["version"] == before + 1
    # the old name is gone at once (the cached name is dropped), the new one works
    assert_error(call("GET", f"{ENVS}/{env.name}", owner.key), 404, "environment_not_found")
    assert ok(call("GET", f"{ENVS}/{new_name}", owner.key))["id"] == env.id
    taken = make_env(owner)
    assert_error(env("PATCH", json={"name": taken.name}), 409, "environment_exists")
    assert_error(env("PATCH", json={"name": "env_x"}), 422, "validation_error")
    assert_error(env("PATCH", json={"version": 3}), 422, "validation_error")
    audit = env.ok("GET", "/audit", params={"entity": "environment"})
    assert audit[0]["action"] == "update"
    assert audit[0]["before"]["name"] == env.name and audit[0]["after"]["name"] == new_name
    assert audit[-1]["action"] == "create" and audit[-1]["before"] is None


def test_delete_takes_everything_with_it(call: Call, make_env: MakeEnv, owner: Account) -> None:
    env = make_env(owner)
    env.ok("POST", "/flags", 201, json={"key": "f", "rules": [{"value": True}]})
    env.ok(
        "POST",
        "/events",
        json={"events": [{"event_type": "track", "event": "e", "company": {"id": "c"}}]},
    )
    env.ok("DELETE", status=204)
    assert_error(env("GET"), 404, "environment_not_found")
    assert_error(env("POST", "/flags/f/check", json={}), 404, "environment_not_found")
    # its name is free again
    again = ok(call("POST", ENVS, owner.key, json={"name": env.name}), 201)
    assert again["id"] != env.id and again["version"] == 1
    assert ok(call("GET", f"/v1/flags/environments/{again['id']}/flags", owner.key)) == []


def test_bound_keys(call: Call, env: Env, make_env: MakeEnv, owner: Account) -> None:
    made = env.ok("POST", "/keys", 201, json={"name": "sdk", "scope": "write"})
    assert made["secret"].startswith("mp_") and made["scope"] == "write"
    key = made["secret"]
    # it belongs to the owner (listed with the owner's keys too), bound to the environment
    assert made["id"] in {k["id"] for k in ok(call("GET", "/v1/keys", owner.key))}
    assert [k["id"] for k in env.ok("GET", "/keys")] == [made["id"]]
    assert "secret" not in env.ok("GET", "/keys")[0]
    # it reaches its environment, by id or name, and nothing else of the flags API
    ok(call("GET", env.base, key))
    ok(call("GET", f"{ENVS}/{env.name}", key))
    ok(call("POST", env.base + "/flags", key, json={"key": "made-by-sdk-key"}), 201)
    other = make_env(owner)
    assert_error(call("GET", other.base, key), 403, "environment_forbidden")
    assert_error(call("GET", f"{ENVS}/{other.name}", key), 403, "environment_forbidden")
    assert [e["id"] for e in ok(call("GET", ENVS, key))] == [env.id]
    assert_error(call("POST", env.base + "/keys", key, json={}), 403, "environment_forbidden")
    assert_error(call("GET", env.base + "/keys", key), 403, "environment_forbidden")
    assert_error(call("PATCH", env.base, key, json={"name": "x"}), 403, "environment_forbidden")
    # revoking it
    before = env.version()
    env.ok("DELETE", f"/keys/{made['id']}", 204)
    assert env.version() == before + 1
    assert_error(call("GET", env.base, key), 401, "unauthorized")
    assert env.ok("GET", "/keys") == []
    assert_error(env("DELETE", f"/keys/{made['id']}"), 404, "key_not_found")
    entry = env.ok("GET", "/audit", params={"entity": "key"})[0]
    assert entry["action"] == "delete" and entry["entity_id"] == made["id"]
    assert entry["before"]["id"] == made["id"] and "secret" not in entry["before"]


def test_revoke_only_keys_bound_to_the_environment(
    call: Call, env: Env, make_env: MakeEnv, owner: Account
) -> None:
    other = make_env(owner)
    theirs = ok(call("POST", other.base + "/keys", owner.key, json={}), 201)
    mine = ok(call("GET", "/v1/me", owner.key))["key"]["id"]
    for key_id in (theirs["id"], mine, "key_0000000000000000", "bad%00id", "x" * 300):
        assert_error(env("DELETE", f"/keys/{key_id}"), 404, "key_not_found")
    ok(call("GET", other.base, theirs["secret"]))
    assert_error(env("POST", "/keys", json={"scope": "admin"}), 422, "validation_error")
    assert_error(env("POST", "/keys", json={"expires_in_seconds": 0}), 422, "validation_error")


def test_server_admin_reaches_any_environment_by_id(
    call: Call, env: Env, owner: Account, admin_key: str
) -> None:
    ok(call("GET", env.base, admin_key))
    assert_error(call("GET", f"{ENVS}/{env.name}", admin_key), 404, "environment_not_found")
    made = ok(call("POST", env.base + "/keys", admin_key, json={"name": "by-admin"}), 201)
    # the key is the owner's, bound to the environment
    assert made["id"] in {k["id"] for k in ok(call("GET", "/v1/keys", owner.key))}
    me = ok(call("GET", "/v1/me", made["secret"]))
    assert me["user"]["username"] == owner.username
    assert made["environment_id"] == me["key"]["environment_id"] == env.id
    assert ok(call("GET", "/v1/me", owner.key))["key"]["environment_id"] is None
    entry = env.ok("GET", "/audit", params={"entity": "key"})[0]
    assert entry["username"] == "admin" and entry["entity_id"] == made["id"]


def test_a_service_account_makes_keys_of_its_own(call: Call, env: Env, owner: Account) -> None:
    sa = ok(call("POST", "/v1/service-accounts", owner.key, json={"name": unique("sa")}), 201)
    sa_key = ok(call("POST", f"/v1/service-accounts/{sa['id']}/keys", owner.key, json={}), 201)
    made = ok(call("POST", env.base + "/keys", sa_key["secret"], json={}), 201)
    assert made["service_account_id"] == sa["id"]
    me = ok(call("GET", "/v1/me", made["secret"]))
    assert me["service_account"]["id"] == sa["id"]
    by_owner = env.ok("POST", "/keys", 201, json={})
    assert by_owner["service_account_id"] is None
