"""The original Schematic Python SDK (``schematichq`` 1.0.4, unmodified) against
millpond's ``/compat/schematic``: checks, bulk checks, identify and track, and the error
shape (the seed's examples: test_schematic_seed.py; companies and users:
test_schematic_companies.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from schematic.client import LocalCache, Schematic, SchematicConfig

from conftest import FlagsEnv

ACME = {"id": "acme"}
# no caching (``cache_providers=[]`` gets the package's default cache: see docs/compat.md)
NO_CACHE = LocalCache[bool](0, 0)


@pytest.fixture
def env(flags_env: FlagsEnv) -> FlagsEnv:
    return flags_env


@pytest.fixture
def schematic(env: FlagsEnv, base_url: str) -> Iterator[Schematic]:
    bound = env("POST", "/keys", 201, json={"name": "schematic"})["secret"]
    config = SchematicConfig(base_url=f"{base_url}/compat/schematic", cache_providers=[NO_CACHE])
    client = Schematic(bound, config)
    yield client
    client.shutdown()


def test_check_flag_and_bulk_check(env: FlagsEnv, schematic: Schematic) -> None:
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
    env("POST", "/flags", 201, json={"key": "beta", "default_value": True})
    env("POST", "/companies", 201, json={"keys": ACME, "traits": {"tier": "gold"}})
    assert schematic.check_flag("gold", company=ACME) is True
    assert schematic.check_flag("gold", company={"id": "other"}) is False
    assert schematic.check_flag("beta") is True
    response = schematic.features.check_flag("gold", company=ACME)
    assert response.data.reason == "RULE_MATCH" and response.data.company_id
    bulk = schematic.features.check_flags(company=ACME)
    assert {f.flag: f.value for f in bulk.data.flags} == {"beta": True, "gold": True}


def test_identify_and_track_reach_the_metrics(env: FlagsEnv, schematic: Schematic) -> None:
    schematic.identify(
        keys={"email": "w@acme.net"},
        company={"keys": ACME, "name": "Acme", "traits": {"seats": 3}},
        name="Wile",
        traits={"role": "admin"},
    )
    schematic.track(event="api-call", company=ACME, user={"email": "w@acme.net"})
    schematic.track(event="api-call", company=ACME)
    schematic.event_buffer._flush()  # the SDK's own flush, as its timer would
    company = env("POST", "/companies/lookup", json={"keys": ACME})
    assert company["name"] == "Acme" and company["traits"] == {"seats": 3}
    deadline = time.monotonic() + 10
    while True:
        metrics = env("GET", f"/companies/{company['id']}/metrics")
        counts = {
            m["period"]: m["value"]
            for m in metrics
            if m["event"] == "api-call" and m["aggregation"] == "count"
        }
        if counts.get("all_time") == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert counts["all_time"] == 2


def test_errors(env: FlagsEnv, base_url: str) -> None:
    url = f"{base_url}/compat/schematic/flags/beta/check"
    with httpx.Client(timeout=30) as http:
        r = http.post(url, json={})
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        assert r.json()["error"].startswith("missing API key")  # Schematic's shape
        r = http.post(url, json={}, headers={"X-Schematic-Api-Key": "mp_" + "x" * 40})
        assert r.status_code == 401
        # an account key names no environment
        r = http.post(url, json={}, headers={"X-Schematic-Api-Key": env.key})
        assert r.status_code == 403 and r.json()["code"] == "environment_required"
        read = env("POST", "/keys", 201, json={"scope": "read"})["secret"]
        r = http.post(
            f"{base_url}/compat/schematic/event-batch",
            json={"events": [{"event_type": "track", "body": {"event": "x"}}]},
            headers={"X-Schematic-Api-Key": read},
        )
        assert r.status_code == 403  # a read key checks but does not send events
        bound = env("POST", "/keys", 201, json={})["secret"]
        for bad in (
            {"events": []},
            {"events": [{"event_type": "page", "body": {}}]},
            {"events": [{"event_type": "track", "body": {}}]},  # no event name
            {"events": [{"event_type": "identify", "body": {"keys": {}}}]},
        ):
            r = http.post(
                f"{base_url}/compat/schematic/event-batch",
                json=bad,
                headers={"X-Schematic-Api-Key": bound},
            )
            assert r.status_code == 400, (bad, r.text)  # Schematic's status for bad input
            assert r.json()["code"] == "validation_error" and r.json()["error"]
    assert env("GET", "/events") == []  # nothing was stored


def test_the_sdk_falls_back_to_its_defaults_when_the_server_refuses(base_url: str) -> None:
    config = SchematicConfig(
        base_url=f"{base_url}/compat/schematic",
        cache_providers=[NO_CACHE],
        flag_defaults={"x": True},
    )
    client = Schematic("mp_" + "x" * 40, config)
    try:
        assert client.check_flag("x") is True
    finally:
        client.shutdown()
