"""Local flag evaluation on the live stream (``LiveFlags``), against the real server: the
rules arrive and stay current, companies and users are watched on first use, usage metrics
and local ``track`` counts bite, and a forked child starts its own stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from _waiting import eventually
from conftest import FlagsEnv, in_forked_child
from millpond.client._base import ClientConfig
from millpond.client._flags_live_async import AsyncLiveFlags
from millpond.client._flags_live_sync import LiveFlags
from millpond.models.flags import FlagCheck

ACME = {"id": "acme"}


@pytest.fixture
def env(flags_env: FlagsEnv) -> FlagsEnv:
    return flags_env


@pytest.fixture
def live(env: FlagsEnv, base_url: str) -> Iterator[LiveFlags]:
    bound = env("POST", "/keys", 201, json={"scope": "read"})["secret"]
    flags = LiveFlags(ClientConfig.resolve(bound, base_url, 10.0, 0, None))
    yield flags
    flags.close()


def _one(live: LiveFlags, key: str, **who: Any) -> FlagCheck | None:
    found = live.evaluate([key], who.get("company"), who.get("user"))
    return found[0] if found is not None else None


def _value(live: LiveFlags, key: str, **who: Any) -> bool | None:
    check = _one(live, key, **who)
    return check.value if check is not None else None


def test_rules_are_loaded_then_kept_current(env: FlagsEnv, live: LiveFlags) -> None:
    env("POST", "/flags", 201, json={"key": "beta", "default_value": False})
    assert live.wait_ready()
    first = _one(live, "beta")
    assert first is not None and (first.value, first.reason) == (False, "DEFAULT")
    env("PATCH", "/flags/beta", json={"default_value": True})
    assert eventually(lambda: _value(live, "beta") is True)
    env("POST", "/flags", 201, json={"key": "new"})
    assert eventually(lambda: (_one(live, "new") or first).flag == "new")
    env("DELETE", "/flags/beta", 204)
    assert eventually(lambda: (_one(live, "beta") or first).reason == "FLAG_NOT_FOUND")
    everything = live.evaluate(None, None, None)
    assert everything is not None and [c.flag for c in everything] == ["new"]


def test_a_company_is_watched_on_first_use(env: FlagsEnv, live: LiveFlags) -> None:
    rule = {
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
    env("POST", "/flags", 201, json={"key": "gold", "rules": [rule]})
    env("POST", "/companies", 201, json={"keys": ACME, "traits": {"tier": "gold"}})
    assert live.wait_ready()
    # not mirrored yet: the client would ask the server this once
    assert _one(live, "gold", company=ACME) is None
    check = eventually(lambda: _one(live, "gold", company=ACME))
    assert check.value is True and check.reason == "RULE_MATCH" and check.company_id
    env("POST", "/companies", 200, json={"keys": ACME, "traits": {"tier": "tin"}})
    assert eventually(lambda: _value(live, "gold", company=ACME) is False)
    # a company that does not exist is answered locally, as the server would
    assert eventually(lambda: _one(live, "gold", company={"id": "nobody"}))
    nobody = _one(live, "gold", company={"id": "nobody"})
    assert nobody is not None and nobody.company_id is None and nobody.value is False
    # ...until it is identified: its key row arrives and it is watched
    env("POST", "/companies", 201, json={"keys": {"id": "nobody"}, "traits": {"tier": "gold"}})
    assert eventually(lambda: _value(live, "gold", company={"id": "nobody"}) is True)


def _usage(live: LiveFlags) -> float | None:
    check = _one(live, "api", company=ACME)
    return check.entitlement.usage if check is not None and check.entitlement else None


def test_usage_limits_from_metrics_and_local_tracks(env: FlagsEnv, live: LiveFlags) -> None:
    env(
        "POST",
        "/features",
        201,
        json={"id": "calls", "feature_type": "event", "event_name": "call"},
    )
    env("POST", "/plans", 201, json={"id": "pro"})
    env(
        "POST",
        "/entitlements",
        201,
        json={"plan_id": "pro", "feature_id": "calls", "value_type": "numeric", "value_numeric": 3},
    )
    env("POST", "/flags", 201, json={"key": "api", "feature_id": "calls"})
    env("POST", "/companies", 201, json={"keys": ACME, "plan_id": "pro"})
    assert live.wait_ready()
    assert eventually(lambda: _one(live, "api", company=ACME))
    within = _one(live, "api", company=ACME)
    assert within is not None and within.value is True and within.entitlement is not None
    track = {"event_type": "track", "event": "call", "company": ACME}
    env("POST", "/events", json={"events": [track, track]})
    assert eventually(
        lambda: (
            (c := _one(live, "api", company=ACME)) and c.entitlement and c.entitlement.usage == 2
        )
    )
    assert _value(live, "api", company=ACME) is True
    live.note_track("call", ACME, None, 1)  # counted at once, before the server knows
    exceeded = _one(live, "api", company=ACME)
    assert exceeded is not None and exceeded.value is False
    assert exceeded.entitlement is not None and exceeded.entitlement.usage == 3
    env("POST", "/events", json={"events": [track]})  # the server catches up: still 3
    assert eventually(
        lambda: (
            (c := _one(live, "api", company=ACME)) and c.entitlement and c.entitlement.usage == 3
        )
    )


def test_a_forked_child_starts_its_own_stream(env: FlagsEnv, live: LiveFlags) -> None:
    env("POST", "/flags", 201, json={"key": "beta", "default_value": True})
    assert live.wait_ready()

    def child() -> bool:  # its copy of the stream is gone; it connects anew
        ready_at_fork = live.ready
        return live.wait_ready(10) and _value(live, "beta") is True and not ready_at_fork

    assert in_forked_child(child)
    assert _value(live, "beta") is True  # the parent's stream is untouched
    env("PATCH", "/flags/beta", json={"default_value": False})
    assert eventually(lambda: _value(live, "beta") is False)


def test_a_revoked_key_stops_the_stream_and_checks_go_to_the_server(
    env: FlagsEnv, base_url: str
) -> None:
    made = env("POST", "/keys", 201, json={"scope": "read"})
    env("DELETE", f"/keys/{made['id']}", 204)
    live = LiveFlags(ClientConfig.resolve(made["secret"], base_url, 10.0, 0, None))
    try:
        assert not live.wait_ready(5)
        assert live.failed is not None and "unauthorized" in str(live.failed)
        assert live.evaluate(["x"], None, None) is None
    finally:
        live.close()


def test_async_twin_loads_watches_and_follows_changes(env: FlagsEnv, base_url: str) -> None:
    bound = env("POST", "/keys", 201, json={"scope": "read"})["secret"]
    env("POST", "/flags", 201, json={"key": "beta"})
    env("POST", "/companies", 201, json={"keys": ACME, "traits": {"n": 1}})

    async def main() -> None:
        live = AsyncLiveFlags(ClientConfig.resolve(bound, base_url, 10.0, 0, None))
        try:
            assert await live.wait_ready()
            assert live.evaluate(["beta"], ACME, None) is None  # watched from now on
            for _ in range(1000):
                found = live.evaluate(["beta"], ACME, None)
                if found is not None:
                    break
                await asyncio.sleep(0.01)
            assert found is not None and found[0].company_id is not None
            await asyncio.to_thread(env, "PATCH", "/flags/beta", json={"default_value": True})
            for _ in range(1000):
                if (live.evaluate(["beta"], ACME, None) or found)[0].value:
                    break
                await asyncio.sleep(0.01)
            assert (live.evaluate(["beta"], ACME, None) or found)[0].value is True
        finally:
            await live.aclose()

    asyncio.run(main())


def test_async_twin_outside_a_loop_answers_nothing(base_url: str) -> None:
    live = AsyncLiveFlags(ClientConfig.resolve("mp_" + "x" * 40, base_url, 10.0, 0, None))
    assert live.evaluate(["x"], None, None) is None  # no loop to run a stream on
