"""The flags SDK against the real server: ``check_flag``/``check_flag_details``/
``check_flags``, caching, defaults, offline, failures answered by defaults, request
contexts, ``mp.flags`` and ``mp.companies`` (every method), sync and async; local
evaluation through the client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, get_type_hints

import pytest

from conftest import FlagsEnv
from millpond import AsyncMillpond, ForbiddenError, LocalCache, Millpond, NotFoundError
from millpond.models.flags import FlagCheck, TrackEvent

from .conftest import FakeServer, Reply

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
    called("set_rules", "ruleset", "audit")
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
    mp.flags.delete("new")
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
    mp.send_events([TrackEvent(event="ran", company=ACME)])
    metrics = mp.companies.company_metrics(acme.id)
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
        if not name.startswith("_")
    }
    assert public == CALLED
