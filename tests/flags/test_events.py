"""Identify and track events: batches stored before they are acknowledged, idempotent by
key (in a batch, across batches, between concurrent batches), applied all or nothing;
metrics per period feeding usage limits."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ._helpers import assert_error, unique
from .conftest import Env, Superuser

ACME = {"id": "acme"}


def _track(event: str = "call", key: str | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"event_type": "track", "event": event, "company": ACME, **fields}
    if key is not None:
        body["idempotency_key"] = key
    return body


def _metrics(env: Env, kind: str, entity_id: str) -> dict[tuple[str, str, str], Any]:
    found = env.ok("GET", f"/{kind}/{entity_id}/metrics")
    return {(m["event"], m["period"], m["aggregation"]): m["value"] for m in found}


def _company(env: Env, keys: dict[str, str] = ACME) -> dict[str, Any]:
    found: dict[str, Any] = env.ok("POST", "/companies/lookup", json={"keys": keys})
    return found


def test_track_creates_and_counts(env: Env) -> None:
    batch = [
        _track(quantity=3, user={"email": "a@acme.net"}),
        _track(quantity=4),
        _track("other", company={"id": "beta"}),
        {"event_type": "track", "event": "anonymous"},
    ]
    assert env.ok("POST", "/events", json={"events": batch}) == {"accepted": 4, "duplicates": 0}
    acme = _company(env)
    assert acme["last_seen_at"] is not None and acme["keys"] == ACME
    figures = _metrics(env, "companies", acme["id"])
    for period in ("all_time", "current_day", "current_week", "current_month"):
        assert figures[("call", period, "count")] == 2
        assert figures[("call", period, "sum")] == 7
    user = env.ok("POST", "/users/lookup", json={"keys": {"email": "a@acme.net"}})
    assert _metrics(env, "users", user["id"])[("call", "all_time", "sum")] == 3
    assert user["company_ids"] == []  # track does not make memberships; identify does
    beta = _company(env, {"id": "beta"})
    assert _metrics(env, "companies", beta["id"]) == {
        ("other", p, a): 1
        for p in ("all_time", "current_day", "current_week", "current_month")
        for a in ("count", "sum")
    }
    stored = env.ok("GET", "/events")
    assert [e["event"] for e in stored] == ["anonymous", "other", "call", "call"]
    assert stored[-1]["company_id"] == acme["id"] and stored[-1]["user_id"] == user["id"]
    assert stored[0]["company_id"] is None and stored[0]["body"]["event"] == "anonymous"
    tracked = env.ok("GET", "/events", params={"company_id": acme["id"], "event": "call"})
    assert [e["quantity"] for e in tracked] == [4, 3]
    older = env.ok("GET", "/events", params={"before": stored[1]["seq"]})
    assert [e["id"] for e in older] == [e["id"] for e in stored[2:]]


def test_idempotency_keys_count_once(env: Env) -> None:
    first = [_track(key="k1"), _track(key="k2"), _track(key="k1")]
    assert env.ok("POST", "/events", json={"events": first}) == {"accepted": 2, "duplicates": 1}
    # the client retries the whole batch, and adds one
    retry = [*first, _track(key="k3")]
    assert env.ok("POST", "/events", json={"events": retry}) == {"accepted": 1, "duplicates": 3}
    # events without a key are never duplicates
    plain = [_track(), _track()]
    assert env.ok("POST", "/events", json={"events": plain}) == {"accepted": 2, "duplicates": 0}
    acme = _company(env)
    assert _metrics(env, "companies", acme["id"])[("call", "all_time", "count")] == 5
    assert len(env.ok("GET", "/events")) == 5


def test_idempotency_keys_are_per_environment(env: Env, make_env: Any, owner: Any) -> None:
    other = make_env(owner)
    for e in (env, other):
        assert e.ok("POST", "/events", json={"events": [_track(key="same")]})["accepted"] == 1


def test_concurrent_batches(env: Env) -> None:
    """Batches racing on the same idempotency keys and on creating the same new companies
    count each event once and make each company once."""
    batches = [
        [_track(key=f"k{n}", company={"id": f"new{n % 3}"}) for n in range(i, i + 20)]
        for i in range(0, 40, 4)
    ]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: env.ok("POST", "/events", json={"events": b}), batches))
    assert sum(a["accepted"] for a in answers) == 56  # k0 … k55
    assert sum(a["accepted"] + a["duplicates"] for a in answers) == 20 * len(batches)
    companies = env.ok("GET", "/companies")
    assert sorted(c["keys"]["id"] for c in companies) == ["new0", "new1", "new2"]
    total = sum(
        _metrics(env, "companies", c["id"])[("call", "all_time", "count")] for c in companies
    )
    assert total == 56  # k0 … k55


def test_usage_limit_flips_and_replays_do_not_count(env: Env) -> None:
    env.ok("POST", "/plans", 201, json={"id": "pro"})
    env.ok(
        "POST", "/features", 201, json={"id": "api", "feature_type": "event", "event_name": "call"}
    )
    env.ok(
        "POST",
        "/entitlements",
        201,
        json={
            "plan_id": "pro",
            "feature_id": "api",
            "value_type": "numeric",
            "value_numeric": 5,
            "metric_period": "current_month",
        },
    )
    env.ok("POST", "/flags", 201, json={"key": "api", "feature_id": "api"})
    env.ok("POST", "/companies", 201, json={"keys": ACME, "plan_id": "pro"})

    def check() -> dict[str, Any]:
        result: dict[str, Any] = env.ok("POST", "/flags/api/check", json={"company": ACME})
        return result

    keys = [unique("call") for _ in range(5)]
    for n, key in enumerate(keys[:4]):
        env.ok("POST", "/events", json={"events": [_track(key=key)]})
        assert check()["entitlement"]["usage"] == n + 1 and check()["value"] is True
    # last month's events count all time, not this month
    last_month = (datetime.now(UTC).replace(day=1) - timedelta(days=2)).isoformat()
    env.ok("POST", "/events", json={"events": [_track(sent_at=last_month) for _ in range(3)]})
    assert check()["value"] is True and check()["entitlement"]["usage"] == 4
    # replays of counted events change nothing
    replay = {"events": [_track(key=k) for k in keys[:4]]}
    assert env.ok("POST", "/events", json=replay) == {"accepted": 0, "duplicates": 4}
    assert check()["value"] is True
    env.ok("POST", "/events", json={"events": [_track(key=keys[4])]})
    result = check()
    assert (result["value"], result["reason"]) == (False, "USAGE_EXCEEDED")
    assert (result["entitlement"]["usage"], result["entitlement"]["allocation"]) == (5, 5)
    figures = _metrics(env, "companies", _company(env)["id"])
    assert figures[("call", "all_time", "count")] == 8
    assert figures[("call", "current_month", "count")] == 5
    # an event "sent" in the future counts now
    tomorrow = (datetime.now(UTC) + timedelta(days=40)).isoformat()
    env.ok("POST", "/events", json={"events": [_track(sent_at=tomorrow)]})
    assert check()["entitlement"]["usage"] == 6


def test_sum_metrics(env: Env) -> None:
    env.ok("POST", "/plans", 201, json={"id": "pro"})
    env.ok(
        "POST",
        "/features",
        201,
        json={
            "id": "gb",
            "feature_type": "event",
            "event_name": "upload",
            "metric_aggregation": "sum",
        },
    )
    env.ok(
        "POST",
        "/entitlements",
        201,
        json={"plan_id": "pro", "feature_id": "gb", "value_type": "numeric", "value_numeric": 100},
    )
    env.ok("POST", "/flags", 201, json={"key": "upload", "feature_id": "gb"})
    env.ok("POST", "/companies", 201, json={"keys": ACME, "plan_id": "pro"})
    env.ok("POST", "/events", json={"events": [_track("upload", quantity=60) for _ in range(2)]})
    result = env.ok("POST", "/flags/upload/check", json={"company": ACME})
    assert (result["value"], result["entitlement"]["usage"]) == (False, 120)
    big = 2**53
    env.ok("POST", "/events", json={"events": [_track("huge", quantity=big) for _ in range(3)]})
    assert _metrics(env, "companies", _company(env)["id"])[("huge", "all_time", "sum")] == 3 * big


def test_identify(env: Env) -> None:
    event = {
        "event_type": "identify",
        "idempotency_key": "id-1",
        "keys": {"email": "wcoyote@acme.net", "user_id": "u1"},
        "name": "Wile E. Coyote",
        "traits": {"login_count": 24, "is_staff": False},
        "company": {"keys": ACME, "name": "Acme Widgets, Inc.", "traits": {"city": "Atlanta"}},
    }
    assert env.ok("POST", "/events", json={"events": [event]})["accepted"] == 1
    user = env.ok("POST", "/users/lookup", json={"keys": {"user_id": "u1"}})
    company = _company(env)
    assert user["name"] == "Wile E. Coyote" and user["company_ids"] == [company["id"]]
    assert company["name"] == "Acme Widgets, Inc." and company["traits"] == {"city": "Atlanta"}
    # later traits merge; a replayed identify is ignored (does not put old traits back)
    newer = {"event_type": "identify", "keys": {"user_id": "u1"}, "traits": {"login_count": 25}}
    env.ok("POST", "/events", json={"events": [newer]})
    assert env.ok("POST", "/events", json={"events": [event]})["duplicates"] == 1
    user = env.ok("GET", f"/users/{user['id']}")
    assert user["traits"] == {"login_count": 25, "is_staff": False}
    # identify then track in one batch: the track finds the identified user by another key
    batch = [
        {"event_type": "identify", "keys": {"email": "rr@acme.net", "id": "u2"}},
        {"event_type": "track", "event": "beep", "user": {"id": "u2"}},
    ]
    env.ok("POST", "/events", json={"events": batch})
    rr = env.ok("POST", "/users/lookup", json={"keys": {"email": "rr@acme.net"}})
    assert _metrics(env, "users", rr["id"])[("beep", "all_time", "count")] == 1
    # identify events change no configuration: no version, no audit entry
    assert env.ok("GET", "/audit") == env.ok("GET", "/audit", params={"entity": "environment"})


def test_a_batch_is_all_or_nothing(env: Env, control_db: Superuser) -> None:
    env.ok("POST", "/companies", 201, json={"keys": {"id": "a"}})
    env.ok("POST", "/companies", 201, json={"keys": {"id": "b"}})
    batch = [
        _track(key="ok-1", company={"id": "fresh"}),
        _track(key="bad", company={"id": "a", "domain": "x"}),
        {
            "event_type": "identify",
            "keys": {"id": "u"},
            "company": {"keys": {"id": "b", "domain": "x"}},
        },
    ]
    assert_error(env("POST", "/events", json={"events": batch}), 409, "key_conflict")
    assert env.ok("GET", "/events") == []
    with control_db() as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM flag_events WHERE environment_id = %(e)s),"
            " (SELECT count(*) FROM flag_metrics WHERE environment_id = %(e)s),"
            " (SELECT count(*) FROM flag_users WHERE environment_id = %(e)s),"
            " (SELECT count(*) FROM flag_companies WHERE environment_id = %(e)s)",
            {"e": env.id},
        ).fetchone()
    assert counts == (0, 0, 0, 2)
    # the key is still free: the good events go in once the batch is fixed
    assert env.ok("POST", "/events", json={"events": batch[:1]})["accepted"] == 1


def test_acknowledged_events_are_committed(env: Env, control_db: Superuser) -> None:
    key = unique("durable")
    env.ok("POST", "/events", json={"events": [_track(key=key, quantity=2)]})
    with control_db() as conn:  # another session sees it: committed before the answer
        row = conn.execute(
            "SELECT e.event, e.quantity, m.count FROM flag_events e JOIN flag_metrics m"
            " ON m.environment_id = e.environment_id AND m.entity_id = e.company_id"
            " AND m.period = 'all_time' WHERE e.environment_id = %s AND e.idempotency_key = %s",
            (env.id, key),
        ).fetchone()
    assert row == ("call", 2, 1)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"events": []},
        {"events": [_track()] * 1001},
        {"events": [{"event": "x"}]},
        {"events": [{"event_type": "page", "event": "x"}]},
        {"events": [{"event_type": "track"}]},
        {"events": [{"event_type": "track", "event": ""}]},
        {"events": [_track(quantity=-1)]},
        {"events": [_track(quantity=2**53 + 1)]},
        {"events": [_track(company={"id": ""})]},
        {"events": [_track(idempotency_key="")]},
        {"events": [_track(traits={"t": "nul\x00"})]},
        {"events": [_track(extra=1)]},
        {"events": [{"event_type": "identify", "keys": {}}]},
        {"events": [_track(), {"event_type": "identify"}]},
    ],
)
def test_bad_batches_store_nothing(env: Env, body: dict[str, Any]) -> None:
    assert_error(env("POST", "/events", json=body), 422, "validation_error")
    assert env.ok("GET", "/events") == []
