"""/v1/flags/environments/{env}/…: every endpoint for every role — anonymous, a stranger,
the owner's read key, a key bound to another environment of the owner, keys bound to this
environment (write and read), a service account of the owner, the owner, a server admin.
A refused call changes nothing (the environment's version does not move)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from ._helpers import assert_error, ok, unique
from .conftest import Account, Call, Env, MakeAccount, MakeEnv

ROLES = [
    "anonymous",
    "stranger",
    "read",
    "bound_other",
    "bound",
    "bound_read",
    "service_account",
    "owner",
    "server_admin",
]

Expect = dict[str, tuple[int, str | None]]

_READ: Expect = {
    "anonymous": (401, "unauthorized"),
    "stranger": (404, "environment_not_found"),
    "read": (200, None),
    "bound_other": (403, "environment_forbidden"),
    "bound": (200, None),
    "bound_read": (200, None),
    "service_account": (200, None),
    "owner": (200, None),
    "server_admin": (200, None),
}
_WRITE: Expect = {
    **_READ,
    "read": (403, "read_only_key"),
    "bound_read": (403, "read_only_key"),
}
_MANAGE: Expect = {
    **_WRITE,
    "bound": (403, "environment_forbidden"),
}
_MANAGE_READ: Expect = {
    **_READ,
    "bound": (403, "environment_forbidden"),
    "bound_read": (403, "environment_forbidden"),
}


@dataclass
class World:
    """One environment of the owner, with one of everything, and a key per role."""

    env: Env
    keys: dict[str, str | None]
    feature: str
    flag: str
    rule: str
    plan: str
    entitlement: str
    company: str
    user: str
    override: str


@pytest.fixture(scope="module")
def world(
    call: Call, make_account: MakeAccount, make_env: MakeEnv, owner: Account, admin_key: str
) -> World:
    env = make_env(owner)
    other = make_env(owner)
    stranger = make_account()
    sa = ok(call("POST", "/v1/service-accounts", owner.key, json={"name": unique("sa")}), 201)
    sa_key = ok(call("POST", f"/v1/service-accounts/{sa['id']}/keys", owner.key, json={}), 201)

    def bound(e: Env, scope: str) -> str:
        made = ok(call("POST", e.base + "/keys", owner.key, json={"scope": scope}), 201)
        return str(made["secret"])

    keys: dict[str, str | None] = {
        "anonymous": None,
        "stranger": stranger.key,
        "read": owner.read_key,
        "bound_other": bound(other, "write"),
        "bound": bound(env, "write"),
        "bound_read": bound(env, "read"),
        "service_account": sa_key["secret"],
        "owner": owner.key,
        "server_admin": admin_key,
    }
    env.ok("POST", "/features", 201, json={"id": "f", "feature_type": "event", "event_name": "ev"})
    env.ok("POST", "/plans", 201, json={"id": "p"})
    ent = env.ok(
        "POST",
        "/entitlements",
        201,
        json={"plan_id": "p", "feature_id": "f", "value_type": "numeric", "value_numeric": 5},
    )
    env.ok(
        "POST",
        "/flags",
        201,
        json={"key": "flag", "feature_id": "f", "rules": [{"id": "r", "value": True}]},
    )
    company = env.ok("POST", "/companies", 201, json={"keys": {"id": "c"}, "plan_id": "p"})
    user = env.ok("POST", "/users", 201, json={"keys": {"email": "u@x"}, "company": {"id": "c"}})
    override = env.ok(
        "POST",
        "/overrides",
        201,
        json={"company_id": company["id"], "feature_id": "f", "value_type": "unlimited"},
    )
    return World(
        env, keys, "f", "flag", "r", "p", ent["id"], company["id"], user["id"], override["id"]
    )


# Each endpoint: (method, path under the environment, expectations, status on success,
# prepare) where prepare(world) makes what the call needs (with the owner's key) and returns
# the path's fields and the body.
Prepared = tuple[dict[str, str], Any]
Prepare = Callable[[World], Prepared]


def _none(w: World) -> Prepared:
    return {}, None


def _world(w: World) -> Prepared:
    return {
        "feature": w.feature,
        "flag": w.flag,
        "rule": w.rule,
        "plan": w.plan,
        "entitlement": w.entitlement,
        "company": w.company,
        "user": w.user,
        "override": w.override,
    }, None


def _check_body(w: World) -> Prepared:
    return {"flag": w.flag}, {"company": {"id": "c"}, "user": {"email": "u@x"}}


def _lookup_company(w: World) -> Prepared:
    return {}, {"keys": {"id": "c"}}


def _lookup_user(w: World) -> Prepared:
    return {}, {"keys": {"email": "u@x"}}


def _new_feature(w: World) -> Prepared:
    return {}, {"id": unique("f")}


def _feature(w: World) -> Prepared:
    made = w.env.ok("POST", "/features", 201, json={})
    return {"feature": made["id"]}, {"name": "renamed"}


def _new_flag(w: World) -> Prepared:
    return {}, {"key": unique("k"), "rules": [{"value": True}]}


def _flag(w: World) -> Prepared:
    key = unique("k")
    w.env.ok("POST", "/flags", 201, json={"key": key, "rules": [{"id": "r1", "value": True}]})
    return {"flag": key, "rule": "r1"}, {"name": "renamed"}


def _deleted_flag(w: World) -> Prepared:
    fields, _ = _flag(w)
    w.env.ok("DELETE", f"/flags/{fields['flag']}", 204)
    return fields, None


def _rules_body(w: World) -> Prepared:
    fields, _ = _flag(w)
    return fields, {"rules": [{"value": False, "rule_type": "default"}]}


def _rule_body(w: World) -> Prepared:
    fields, _ = _flag(w)
    return fields, {"value": False}


def _new_plan(w: World) -> Prepared:
    return {}, {"id": unique("p")}


def _plan(w: World) -> Prepared:
    made = w.env.ok("POST", "/plans", 201, json={})
    return {"plan": made["id"]}, {"name": "renamed"}


def _new_entitlement(w: World) -> Prepared:
    plan = w.env.ok("POST", "/plans", 201, json={})
    return {}, {"plan_id": plan["id"], "feature_id": w.feature, "value_type": "boolean"}


def _entitlement(w: World) -> Prepared:
    _, body = _new_entitlement(w)
    made = w.env.ok("POST", "/entitlements", 201, json=body)
    return {"entitlement": made["id"]}, {"value_type": "unlimited"}


def _new_override(w: World) -> Prepared:
    keys = {"id": unique("c")}
    w.env.ok("POST", "/companies", 201, json={"keys": keys})
    return {}, {"company": keys, "feature_id": w.feature, "value_type": "boolean"}


def _override(w: World) -> Prepared:
    _, body = _new_override(w)
    made = w.env.ok("POST", "/overrides", 201, json=body)
    return {"override": made["id"]}, {"value_bool": False}


def _new_company(w: World) -> Prepared:
    return {}, {"keys": {"id": unique("c")}, "traits": {"a": 1}}


def _company(w: World) -> Prepared:
    made = w.env.ok("POST", "/companies", 201, json={"keys": {"id": unique("c")}})
    return {"company": made["id"]}, None


def _new_user(w: World) -> Prepared:
    return {}, {"keys": {"email": unique("u")}, "company": {"id": unique("c")}}


def _user(w: World) -> Prepared:
    made = w.env.ok("POST", "/users", 201, json={"keys": {"email": unique("u")}})
    return {"user": made["id"]}, None


def _events(w: World) -> Prepared:
    event = {"event_type": "track", "event": "ev", "company": {"id": "c"}}
    return {}, {"events": [{**event, "idempotency_key": unique("i")}]}


def _env_update(w: World) -> Prepared:
    return {}, {"environment_type": "development"}


def _new_key(w: World) -> Prepared:
    return {}, {"scope": "read", "name": "matrix"}


def _key(w: World) -> Prepared:
    made = w.env.ok("POST", "/keys", 201, json={"scope": "read"})
    return {"key": made["id"]}, None


Endpoint = tuple[str, str, Expect, int, Prepare]

ENDPOINTS: dict[str, Endpoint] = {
    # environment and keys
    "get_environment": ("GET", "", _READ, 200, _none),
    "update_environment": ("PATCH", "", _MANAGE, 200, _env_update),
    "create_key": ("POST", "/keys", _MANAGE, 201, _new_key),
    "list_keys": ("GET", "/keys", _MANAGE_READ, 200, _none),
    "revoke_key": ("DELETE", "/keys/{key}", _MANAGE, 204, _key),
    # features
    "create_feature": ("POST", "/features", _WRITE, 201, _new_feature),
    "list_features": ("GET", "/features", _READ, 200, _none),
    "get_feature": ("GET", "/features/{feature}", _READ, 200, _world),
    "update_feature": ("PATCH", "/features/{feature}", _WRITE, 200, _feature),
    "delete_feature": ("DELETE", "/features/{feature}", _WRITE, 204, _feature),
    # flags, rules, rulesets
    "create_flag": ("POST", "/flags", _WRITE, 201, _new_flag),
    "list_flags": ("GET", "/flags", _READ, 200, _none),
    "get_flag": ("GET", "/flags/{flag}", _READ, 200, _world),
    "update_flag": ("PATCH", "/flags/{flag}", _WRITE, 200, _flag),
    "delete_flag": ("DELETE", "/flags/{flag}", _WRITE, 204, _flag),
    "restore_flag": ("POST", "/flags/{flag}/restore", _WRITE, 200, _deleted_flag),
    "purge_flag": ("POST", "/flags/{flag}/purge", _WRITE, 204, _deleted_flag),
    "get_ruleset": ("GET", "/flags/{flag}/ruleset", _READ, 200, _world),
    "list_rulesets": ("GET", "/rulesets", _READ, 200, _none),
    "list_rules": ("GET", "/flags/{flag}/rules", _READ, 200, _world),
    "replace_rules": ("PUT", "/flags/{flag}/rules", _WRITE, 200, _rules_body),
    "add_rule": ("POST", "/flags/{flag}/rules", _WRITE, 201, _rule_body),
    "get_rule": ("GET", "/flags/{flag}/rules/{rule}", _READ, 200, _world),
    "replace_rule": ("PUT", "/flags/{flag}/rules/{rule}", _WRITE, 200, _rule_body),
    "delete_rule": ("DELETE", "/flags/{flag}/rules/{rule}", _WRITE, 204, _flag),
    # checks
    "check_flag": ("POST", "/flags/{flag}/check", _READ, 200, _check_body),
    "check_flags": ("POST", "/check", _READ, 200, _check_body),
    "list_checks": ("GET", "/checks", _READ, 200, _none),
    # plans, entitlements, overrides
    "create_plan": ("POST", "/plans", _WRITE, 201, _new_plan),
    "list_plans": ("GET", "/plans", _READ, 200, _none),
    "get_plan": ("GET", "/plans/{plan}", _READ, 200, _world),
    "update_plan": ("PATCH", "/plans/{plan}", _WRITE, 200, _plan),
    "delete_plan": ("DELETE", "/plans/{plan}", _WRITE, 204, _plan),
    "create_entitlement": ("POST", "/entitlements", _WRITE, 201, _new_entitlement),
    "list_entitlements": ("GET", "/entitlements", _READ, 200, _none),
    "get_entitlement": ("GET", "/entitlements/{entitlement}", _READ, 200, _world),
    "update_entitlement": ("PATCH", "/entitlements/{entitlement}", _WRITE, 200, _entitlement),
    "delete_entitlement": ("DELETE", "/entitlements/{entitlement}", _WRITE, 204, _entitlement),
    "create_override": ("POST", "/overrides", _WRITE, 201, _new_override),
    "list_overrides": ("GET", "/overrides", _READ, 200, _none),
    "get_override": ("GET", "/overrides/{override}", _READ, 200, _world),
    "update_override": ("PATCH", "/overrides/{override}", _WRITE, 200, _override),
    "delete_override": ("DELETE", "/overrides/{override}", _WRITE, 204, _override),
    # companies and users
    "upsert_company": ("POST", "/companies", _WRITE, 201, _new_company),
    "list_companies": ("GET", "/companies", _READ, 200, _none),
    "lookup_company": ("POST", "/companies/lookup", _READ, 200, _lookup_company),
    "get_company": ("GET", "/companies/{company}", _READ, 200, _world),
    "delete_company": ("DELETE", "/companies/{company}", _WRITE, 204, _company),
    "company_metrics": ("GET", "/companies/{company}/metrics", _READ, 200, _world),
    "upsert_user": ("POST", "/users", _WRITE, 201, _new_user),
    "list_users": ("GET", "/users", _READ, 200, _none),
    "lookup_user": ("POST", "/users/lookup", _READ, 200, _lookup_user),
    "get_user": ("GET", "/users/{user}", _READ, 200, _world),
    "delete_user": ("DELETE", "/users/{user}", _WRITE, 204, _user),
    "user_metrics": ("GET", "/users/{user}/metrics", _READ, 200, _world),
    # events and audit
    "send_events": ("POST", "/events", _WRITE, 200, _events),
    "list_events": ("GET", "/events", _READ, 200, _none),
    "list_audit": ("GET", "/audit", _READ, 200, _none),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_role_matrix(call: Call, world: World, endpoint: str, role: str) -> None:
    method, path, expect, success, prepare = ENDPOINTS[endpoint]
    fields, body = prepare(world)
    before = world.env.version()
    kwargs: dict[str, Any] = {} if body is None or method == "DELETE" else {"json": body}
    r = call(method, world.env.base + path.format(**fields), world.keys[role], **kwargs)
    status, code = expect[role]
    if status >= 400:
        assert_error(r, status, code or "")
        assert world.env.version() == before, "a refused call changed something"
    else:
        assert r.status_code == success, (r.status_code, r.text)


def test_the_matrix_covers_every_route(world: World) -> None:
    """Every route of the flags router under an environment is in the matrix (delete of
    the environment itself has its own test)."""
    from millpond.server.flags.router import router

    prefix = "/v1/flags/environments/{env}"
    routes = {
        (method, route.path[len(prefix) :])
        for route in router.routes
        for method in getattr(route, "methods", ())
        if getattr(route, "path", "").startswith(prefix)
    }
    names = {
        "{key}": "{flag}",
        "{key_id}": "{key}",
        "{feature_id}": "{feature}",
        "{rule_id}": "{rule}",
        "{plan_id}": "{plan}",
        "{entitlement_id}": "{entitlement}",
        "{override_id}": "{override}",
        "{company_id}": "{company}",
        "{user_id}": "{user}",
    }

    def normal(path: str) -> str:
        for a, b in names.items():
            path = path.replace(a, b)
        return path

    covered = {(m, p) for m, p, *_ in ENDPOINTS.values()}
    missing = {(m, normal(p)) for m, p in routes} - covered - {("DELETE", "")}
    assert not missing


@pytest.mark.parametrize("role", ROLES)
def test_delete_environment(
    call: Call, make_env: MakeEnv, owner: Account, world: World, role: str
) -> None:
    """Deleting an environment: the owner (and a server admin, and the owner's service
    account) only; keys bound to it are deleted with it."""
    target = make_env(owner)
    bound = ok(call("POST", target.base + "/keys", owner.key, json={}), 201)["secret"]
    keys = {**world.keys}
    if role in ("bound", "bound_read"):  # bound to the target, for this test
        scope = "write" if role == "bound" else "read"
        keys[role] = ok(call("POST", target.base + "/keys", owner.key, json={"scope": scope}), 201)[
            "secret"
        ]
    status, code = _MANAGE[role]
    r = call("DELETE", target.base, keys[role])
    if status >= 400:
        assert_error(r, status, code or "")
        ok(call("GET", target.base, owner.key))
        ok(call("GET", target.base, bound))
    else:
        assert r.status_code == 204, r.text
        assert_error(call("GET", target.base, owner.key), 404, "environment_not_found")
        assert_error(call("GET", "/v1/me", bound), 401, "unauthorized")
