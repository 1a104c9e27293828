"""The flags SDK against the real server: ``check_flag``/``check_flag_details``/
``check_flags``, caching, defaults, offline, failures answered by defaults, request
contexts, ``mp.flags`` and ``mp.companies`` (every method), sync and async; local
evaluation through the client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, get_type_hints

import pytest

from conftest import FlagsEnv
from millpond import (
    AsyncMillpond,
    ForbiddenError,
    LocalCache,
    Millpond,
    MillpondError,
    NotFoundError,
    UnprocessableEntityError,
)
from millpond.models.flags import FlagCheck, TrackEvent

from .conftest import FakeServer, Reply, Run

ACME = {"id": "acme"}
GOLD_RULE = {
    "value": True,
    "conditions": [
        {
            "condition_type": "trait",
            "trait_entity": "company",
            "trait_key": "tier",
            "operator": "eq",
            "trait_value": "gold",
        }
    ],
}
CALLED: set[str] = set()
"""Resource methods the tests below call (checked against the surface at the end)."""


def called(*names: str) -> None:
    CALLED.update(names)


@pytest.fixture
def env(flags_env: FlagsEnv) -> FlagsEnv:
    flags_env("POST", "/flags", 201, json={"key": "gold", "rules": [GOLD_RULE]})
    flags_env("POST", "/flags", 201, json={"key": "beta", "default_value": True})
    flags_env("POST", "/companies", 201, json={"keys": ACME, "traits": {"tier": "gold"}})
    return flags_env


@pytest.fixture
def mp(env: FlagsEnv, base_url: str) -> Iterator[Millpond]:
    with Millpond(api_key=env.bound_key(), base_url=base_url, cache_providers=[]) as client:
        yield client


def test_checks(mp: Millpond) -> None:
    assert mp.check_flag("gold", company=ACME) is True
    assert mp.check_flag("gold", company={"id": "nobody"}) is False
    details = mp.check_flag_details("gold", company=ACME)
    assert details.reason == "RULE_MATCH" and details.company_id and details.rule_id
    missing = mp.check_flag_details("nope")
    assert (missing.value, missing.reason) == (False, "FLAG_NOT_FOUND")
    every = mp.check_flags(company=ACME)
    assert {c.flag: c.value for c in every} == {"beta": True, "gold": True}
    some = mp.check_flags(["gold", "nope", "beta"], company={"id": "x"})
    assert [(c.flag, c.value, c.reason) for c in some] == [
        ("gold", False, "DEFAULT"),
        ("nope", False, "FLAG_NOT_FOUND"),
        ("beta", True, "DEFAULT"),
    ]


def test_bad_arguments_raise(mp: Millpond) -> None:
    with pytest.raises(TypeError):
        mp.check_flag("")
    with pytest.raises(TypeError):
        mp.check_flag("gold", company="acme")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="user_<key>"):
        mp.flag_context(account_id="1")


def test_an_account_key_names_its_environment(env: FlagsEnv, base_url: str) -> None:
    with Millpond(api_key=env.key, base_url=base_url, environment=env.id) as mp:
        assert mp.check_flag("beta") is True
    with Millpond(api_key=env.key, base_url=base_url) as mp:  # no environment: defaults
        check = mp.check_flag_details("beta")
        assert check.reason == "ERROR" and "environment" in (check.error or "")


def test_cache_hits_make_no_request_and_expire(fake: FakeServer) -> None:
    now = [0.0]
    cache = LocalCache(max_entries=2, ttl_ms=1000, clock=lambda: now[0])
    answer = {"flag": "f", "value": True, "reason": "DEFAULT"}
    fake.reply(Reply(200, answer))
    with Millpond("mp_k", fake.url, environment="env_1", cache_providers=[cache]) as mp:
        assert mp.check_flag("f", user={"id": "1"}) is True
        assert mp.check_flag("f", user={"id": "1"}) is True
        assert len(fake.requests) == 1
        assert fake.last.path == "/v1/flags/environments/env_1/flags/f/check"
        assert fake.last.json == {"company": None, "user": {"id": "1"}}
        mp.check_flag("f", user={"id": "2"})  # another user: another entry
        assert len(fake.requests) == 2
        now[0] = 1.5  # past the TTL
        mp.check_flag("f", user={"id": "1"})
        assert len(fake.requests) == 3
        mp.check_flag("g")
        assert len(cache) == 2  # LRU: bounded


def test_no_cache_always_asks(fake: FakeServer) -> None:
    fake.reply(Reply(200, {"flag": "f", "value": True, "reason": "DEFAULT"}))
    with Millpond("mp_k", fake.url, environment="e", cache_providers=[]) as mp:
        for _ in range(3):
            mp.check_flag("f")
    assert len(fake.requests) == 3


def test_failures_answer_the_defaults(fake: FakeServer) -> None:
    fake.reply(Reply(503, {"error": {"code": "unavailable", "message": "down"}}))
    with Millpond(
        "mp_k", fake.url, environment="e", max_retries=1, flag_defaults={"f": True}
    ) as mp:
        assert mp.check_flag("f") is True
        assert mp.check_flag("g") is False
        check = mp.check_flag_details("f")
        assert check.reason == "ERROR" and "down" in (check.error or "")
        assert [c.value for c in mp.check_flags()] == [True]  # the flags it has defaults for
    fake.reply(Reply(200, {"flag": "f", "value": False, "reason": "DEFAULT"}, delay=0.5))
    with Millpond("mp_k", fake.url, environment="e", timeout=0.1, max_retries=0) as mp:
        assert mp.check_flag_details("f").reason == "ERROR"  # a timeout, not an exception


def test_both_clients_answer_defaults_and_log(
    run: Run, fake: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake.reply(Reply(503, {"error": {"code": "unavailable", "message": "down"}}))
    options: dict[str, Any] = {"environment": "e", "max_retries": 0, "flag_defaults": {"f": True}}
    check = run(lambda mp: mp.check_flag_details("f"), **options)
    assert (check.value, check.reason) == (True, "ERROR") and len(fake.requests) == 1
    assert "flag check failed" in caplog.text and "down" in caplog.text
    refused = {**options, "base_url": "http://127.0.0.1:1"}  # nothing listens there
    assert run(lambda mp: mp.check_flag("f"), **refused) is True
    assert run(lambda mp: mp.check_flag("g"), **refused) is False
    assert run(lambda mp: mp.check_flag("f"), offline=True, flag_defaults={"f": True}) is True
    assert len(fake.requests) == 1


def test_offline_makes_no_request(fake: FakeServer) -> None:
    with Millpond(base_url=fake.url, offline=True, flag_defaults={"f": True}) as mp:
        assert mp.check_flag("f") is True and mp.check_flag("g") is False
        assert mp.check_flag_details("f").reason == "DEFAULT"
        assert [c.flag for c in mp.check_flags()] == ["f"]
        mp.track("ran")
    assert fake.requests == []


def test_a_context_answers_from_one_snapshot(env: FlagsEnv, mp: Millpond) -> None:
    with mp.flag_context(company_id="acme") as ctx:
        assert ctx.is_enabled("gold") and ctx.is_enabled("beta")
        env("PATCH", "/flags/beta", json={"default_value": False})
        assert ctx.is_enabled("beta")  # the snapshot of the request
        assert ctx.is_disabled("nope")
        # entries of the question override the context's: a check of its own
        assert ctx.is_disabled("gold", company_id="other")
        assert not ctx.is_enabled("beta", user={"id": "u"})
    with mp.flag_context(company=ACME) as ctx:
        assert ctx.is_disabled("beta")  # a new context sees the change


def test_flags_resource(env: FlagsEnv, mp: Millpond) -> None:
    called("create", "get", "list", "update", "toggle", "delete", "restore", "rules")
    called("set_rules", "ruleset", "rulesets", "audit")
    made = mp.flags.create("new", name="New", rules=[GOLD_RULE])
    assert made.key == "new" and made.default_value is False
    assert mp.flags.get("new").name == "New"
    assert [f.key for f in mp.flags.list()] == ["beta", "gold", "new"]
    assert mp.flags.update("new", description="d").description == "d"
    assert mp.flags.toggle("new").default_value is True
    assert mp.flags.toggle("new", False).default_value is False
    assert len(mp.flags.rules("new")) == 1
    assert mp.flags.set_rules("new", []) == []
    assert mp.flags.ruleset("new").flag.key == "new"
    version = mp.flags.get("new").version
    assert sorted(r.flag.key for r in mp.flags.rulesets()) == ["beta", "gold", "new"]
    assert mp.flags.rulesets(since_version=version) == []
    mp.flags.delete("new")
    (deleted,) = mp.flags.rulesets(since_version=version)  # a delta has the deleted ones
    assert deleted.flag.key == "new" and deleted.flag.deleted_at is not None
    assert "new" not in [r.flag.key for r in mp.flags.rulesets()]
    with pytest.raises(NotFoundError):
        mp.flags.get("new")
    assert mp.flags.get("new", include_deleted=True).deleted_at is not None
    assert "new" in [f.key for f in mp.flags.list(include_deleted=True)]
    assert mp.flags.restore("new").deleted_at is None
    called("purge")
    mp.flags.delete("new")
    mp.flags.purge("new")
    assert "new" not in [f.key for f in mp.flags.list(include_deleted=True)]
    audit = mp.flags.audit(entity="flag")
    assert [a.action for a in audit[:3]] == ["purge", "delete", "restore"]


def test_rules_one_by_one(mp: Millpond) -> None:
    called("add_rule", "get_rule", "replace_rule", "delete_rule")
    rule = mp.flags.add_rule("beta", {**GOLD_RULE, "id": "gold-off", "value": False})
    assert rule.id == "gold-off" and rule.flag_key == "beta"
    assert mp.check_flag_details("beta", company=ACME).rule_id == "gold-off"
    assert mp.check_flag("beta", company=ACME) is False
    assert mp.flags.get_rule("beta", "gold-off").value is False
    assert mp.flags.replace_rule("beta", "gold-off", {**GOLD_RULE, "name": "n"}).name == "n"
    assert mp.check_flag("beta", company=ACME) is True
    assert [r.id for r in mp.flags.rules("beta")] == ["gold-off"]
    mp.flags.delete_rule("beta", "gold-off")
    assert mp.flags.rules("beta") == []
    with pytest.raises(NotFoundError):
        mp.flags.get_rule("beta", "gold-off")
    with pytest.raises(UnprocessableEntityError):
        mp.flags.add_rule("beta", {"value": "maybe"})


def test_plans_entitlements_overrides(env: FlagsEnv, mp: Millpond) -> None:
    called("features", "get_feature", "create_feature", "update_feature", "delete_feature")
    called("plans", "get_plan", "create_plan", "update_plan", "delete_plan")
    called("entitlements", "get_entitlement", "create_entitlement", "update_entitlement")
    called("delete_entitlement", "overrides", "get_override", "create_override")
    called("update_override", "delete_override")
    assert mp.flags.create_feature("api", name="API").feature_type == "boolean"
    assert mp.flags.update_feature("api", description="calls").description == "calls"
    assert mp.flags.get_feature("api").name == "API"
    assert [f.id for f in mp.flags.features()] == ["api"]
    mp.flags.create("api-access", feature_id="api")
    assert mp.flags.create_plan("pro", name="Pro").name == "Pro"
    assert mp.flags.update_plan("pro", description="d").description == "d"
    assert mp.flags.get_plan("pro").name == "Pro"
    assert [p.id for p in mp.flags.plans()] == ["pro"]
    acme = mp.companies.upsert_company(keys=ACME, plan_id="pro")

    def check() -> tuple[bool, str, str | None]:
        found = mp.check_flag_details("api-access", company=ACME)
        return found.value, found.reason, found.rule_id

    grant = mp.flags.create_entitlement(plan_id="pro", feature_id="api", value_type="boolean")
    assert check() == (True, "PLAN_ENTITLEMENT", grant.id)
    assert mp.flags.get_entitlement(grant.id).plan_id == "pro"
    assert [e.id for e in mp.flags.entitlements(plan_id="pro")] == [grant.id]
    assert mp.flags.entitlements(feature_id="other") == []
    assert mp.flags.update_entitlement(grant.id, value_bool=False).value_bool is False
    assert check() == (False, "PLAN_ENTITLEMENT", grant.id)

    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    own = mp.flags.create_override(
        company=ACME, feature_id="api", value_type="boolean", expires_at=until
    )
    assert own.company_id == acme.id and own.expires_at == until
    assert check() == (True, "COMPANY_OVERRIDE", own.id)
    assert mp.flags.get_override(own.id).feature_id == "api"
    assert [o.id for o in mp.flags.overrides(company_id=acme.id)] == [own.id]
    assert mp.flags.update_override(own.id, value_bool=False).value_bool is False
    assert check() == (False, "COMPANY_OVERRIDE", own.id)
    with pytest.raises(UnprocessableEntityError):  # a company by id or by keys, not both
        mp.flags.create_override(
            company_id=acme.id, company=ACME, feature_id="api", value_type="boolean"
        )

    mp.flags.delete_override(own.id)
    mp.flags.delete_entitlement(grant.id)
    assert check() == (False, "DEFAULT", None)
    mp.flags.delete_plan("pro")
    assert mp.flags.update("api-access", clear_feature=True).feature_id is None
    mp.flags.delete_feature("api")
    for gone in (lambda: mp.flags.get_feature("api"), lambda: mp.flags.get_plan("pro")):
        with pytest.raises(NotFoundError):
            gone()


def test_checks_log(env: FlagsEnv, mp: Millpond) -> None:
    called("checks")
    env("POST", "/flags/beta/check", json={"company": ACME})  # not recorded
    env("POST", "/flags/beta/check?record=true", json={"company": ACME})
    env("POST", "/check?record=true", json={"user": {"id": "u"}})
    beta = mp.flags.checks(flag="beta")
    assert [(c.value, c.company, c.user) for c in beta] == [
        (True, None, {"id": "u"}),  # newest first
        (True, ACME, None),
    ]
    assert [c.flag for c in mp.flags.checks(limit=1)] in (["beta"], ["gold"])
    assert mp.flags.checks(flag="beta", before=beta[-1].id) == []


def test_events_log(mp: Millpond) -> None:
    called("events")
    mp.identify({"id": "u1"}, company={"keys": ACME})
    mp.track("export", company=ACME, quantity=3)
    assert mp.flush()
    newest, oldest = mp.flags.events(limit=2)
    assert (newest.event_type, newest.event, newest.quantity) == ("track", "export", 3)
    assert oldest.event_type == "identify" and newest.seq > oldest.seq
    assert [e.event_type for e in mp.flags.events(event_type="identify")] == ["identify"]
    assert mp.flags.events(before=oldest.seq, event="export") == []


def test_companies_resource(env: FlagsEnv, mp: Millpond) -> None:
    called("upsert_company", "upsert_user", "get_company", "get_user", "list_companies")
    called("list_users", "delete_company", "delete_user", "company_metrics")
    env("POST", "/plans", 201, json={"id": "pro"})
    acme = mp.companies.upsert_company(keys=ACME, name="Acme", plan_id="pro")
    assert acme.name == "Acme" and acme.plan_id == "pro" and acme.traits == {"tier": "gold"}
    assert mp.companies.upsert_company(keys=ACME, clear_plan=True).plan_id is None
    user = mp.companies.upsert_user(keys={"email": "w@acme.net"}, name="W", company=ACME)
    assert mp.companies.get_user({"email": "w@acme.net"}).id == user.id
    assert mp.companies.get_company({"id": "acme"}).id == acme.id
    assert [c.id for c in mp.companies.list_companies(q="acm")] == [acme.id]
    assert [u.id for u in mp.companies.list_users(company_id=acme.id)] == [user.id]
    mp.send_events([TrackEvent(event="ran", company=ACME, user={"email": "w@acme.net"})])
    metrics = mp.companies.company_metrics(acme.id)
    assert {(m.period, m.aggregation): m.value for m in metrics}[("all_time", "count")] == 1
    called("user_metrics")
    metrics = mp.companies.user_metrics(user.id)
    assert {(m.period, m.aggregation): m.value for m in metrics}[("all_time", "count")] == 1
    mp.companies.delete_user(user.id)
    mp.companies.delete_company(acme.id)
    with pytest.raises(NotFoundError):
        mp.companies.get_company(ACME)


def test_environments_and_bound_keys(base_url: str, make_user: Any) -> None:
    called("environments", "create_environment", "create_key")
    _, key = make_user(prefix="envs")
    with Millpond(api_key=key, base_url=base_url) as mp:
        made = mp.flags.create_environment("production", environment_type="production")
        assert [e.id for e in mp.flags.environments()] == [made.id]
        bound = mp.flags.create_key(environment="production", name="app", scope="read")
        assert bound.environment_id == made.id and bound.scope == "read"
    with Millpond(api_key=bound.secret, base_url=base_url) as app:
        assert app.check_flag_details("x").reason == "FLAG_NOT_FOUND"  # found its environment
        with pytest.raises(ForbiddenError):
            app.flags.create_key()  # a bound key makes no keys
    called("keys", "revoke_key")
    with Millpond(api_key=key, base_url=base_url) as mp:
        listed = mp.flags.keys(environment="production")
        assert [k.id for k in listed] == [bound.id]
        assert all(not hasattr(k, "secret") for k in listed)  # never the secrets
        mp.flags.revoke_key(listed[0].id, environment="production")
        assert mp.flags.keys(environment="production") == []
    with Millpond(api_key=bound.secret, base_url=base_url) as app, pytest.raises(MillpondError):
        app.flags.list()  # revoked: refused at once


def test_async_twin(env: FlagsEnv, base_url: str) -> None:
    key = env.bound_key()

    async def main() -> None:
        async with AsyncMillpond(api_key=key, base_url=base_url) as amp:
            assert await amp.check_flag("gold", company=ACME) is True
            assert [c.flag for c in await amp.check_flags(company=ACME)] == ["beta", "gold"]
            async with amp.flag_context(company_id="acme") as ctx:
                assert await ctx.is_enabled("gold") and not await ctx.is_disabled("beta")
            assert (await amp.flags.get("gold")).key == "gold"
            assert (await amp.companies.get_company(ACME)).traits == {"tier": "gold"}

    asyncio.run(main())


def test_local_evaluation_through_the_client(env: FlagsEnv, base_url: str) -> None:
    with Millpond(
        api_key=env.bound_key(), base_url=base_url, local_evaluation=True, cache_providers=[]
    ) as mp:
        assert mp.check_flag("gold", company=ACME) is True  # the server, while warming up
        deadline = time.monotonic() + 10
        while mp._local is not None and mp._local.evaluate(["gold"], ACME, None) is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        env("PATCH", "/flags/beta", json={"default_value": False})
        while mp.check_flag("beta", company=ACME):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        checks: list[FlagCheck] = mp.check_flags(company=ACME)
        assert {c.flag: c.value for c in checks} == {"beta": False, "gold": True}


def test_flag_store_answers_first(base_url: str, fake: FakeServer) -> None:
    class Store:
        def evaluate(self, keys: Any, company: Any, user: Any) -> list[FlagCheck]:
            return [FlagCheck(flag=k, value=True, reason="RULE_MATCH") for k in keys or ["x"]]

        def note_track(self, *args: Any) -> None:
            pass

    with Millpond("mp_k", fake.url, environment="e", flag_store=Store()) as mp:
        assert mp.check_flag("anything") is True
        assert [c.flag for c in mp.check_flags()] == ["x"]
    assert fake.requests == []
    with pytest.raises(ValueError, match="not both"):
        Millpond("mp_k", fake.url, flag_store=Store(), local_evaluation=True)


def test_every_resource_method_is_exercised() -> None:
    hints = get_type_hints(Millpond)
    public = {
        name
        for resource in ("flags", "companies")
        for name in vars(hints[resource])
        if not name.startswith(("_", "iter"))  # the iterators: tests/client/test_paging.py
    }
    assert public == CALLED


def test_the_guides_metered_example(mp: Millpond) -> None:
    """docs/flags.md, "Entitlements": a monthly limit on the plan, unlimited for acme."""
    mp.flags.create_feature("api", feature_type="event", event_name="api-call")
    mp.flags.create("api-access", feature_id="api")
    mp.flags.create_plan("pro", name="Pro")
    mp.flags.create_entitlement(
        plan_id="pro",
        feature_id="api",
        value_type="numeric",
        value_numeric=1,
        metric_period="current_month",
    )
    mp.companies.upsert_company(keys={"id": "initech"}, plan_id="pro")
    mp.send_events([TrackEvent(event="api-call", company={"id": "initech"})])
    used = mp.check_flag_details("api-access", company={"id": "initech"})
    assert (used.value, used.reason) == (False, "USAGE_EXCEEDED")
    assert used.entitlement and (used.entitlement.allocation, used.entitlement.usage) == (1, 1)
    mp.companies.upsert_company(keys=ACME, plan_id="pro")
    mp.flags.create_override(company=ACME, feature_id="api", value_type="unlimited")
    check = mp.check_flag_details("api-access", company=ACME)
    assert (check.value, check.reason) == (True, "COMPANY_OVERRIDE")
