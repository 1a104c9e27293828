"""The flags wire models: defaults, Schematic's field names accepted, key coercion, request
validation (keys, traits, NUL characters, quantities), the event union."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from millpond.models.flags import (
    CheckFlagRequest,
    Condition,
    EventBatch,
    EventRequest,
    Feature,
    Flag,
    FlagRuleset,
    IdentifyEvent,
    Rule,
    TrackEvent,
)


def test_defaults_and_unknown_fields() -> None:
    flag = Flag.model_validate({"key": "beta", "flag_type": "boolean", "future_field": 1})
    assert (flag.default_value, flag.version, flag.deleted_at) == (False, 1, None)
    rule = Rule.model_validate({"value": True})
    assert (rule.rule_type, rule.priority, rule.conditions) == ("standard", 0, [])
    assert Condition(condition_type="metric").metric_period == "all_time"


def test_schematic_names_are_accepted() -> None:
    feature = Feature.model_validate({"id": "f", "feature_type": "event", "event_subtype": "x"})
    assert feature.event_name == "x"
    condition = Condition.model_validate(
        {"condition_type": "trait", "trait_entity_type": "user", "event_subtype": "e"}
    )
    assert (condition.trait_entity, condition.event_name) == ("user", "e")


def test_percentage_bounds() -> None:
    for bad in (-0.1, 100.1):
        with pytest.raises(ValidationError):
            Condition(condition_type="rollout", percentage=bad)


def test_ruleset_json_round_trip() -> None:
    ruleset = FlagRuleset(
        flag=Flag(key="k", feature_id="f"),
        rules=[
            Rule(
                id="r",
                value=True,
                conditions=[Condition(condition_type="actor_list", actors=[{"email": "a@b.c"}])],
            )
        ],
        feature=Feature(id="f"),
    )
    assert FlagRuleset.model_validate_json(ruleset.model_dump_json()) == ruleset


def test_check_request() -> None:
    request = CheckFlagRequest.model_validate({"company": {"id": 42}, "user": {"email": "a@b"}})
    assert request.company == {"id": "42"}
    assert CheckFlagRequest().company is None
    for bad in (
        {"company": {"id": ""}},
        {"company": {"id": "a\x00"}},
        {"user": {"": "x"}},
        {"user": {"id": True}},
        {"user": {"id": "x" * 300}},
        {"companies": {"id": "1"}},  # unknown field
    ):
        with pytest.raises(ValidationError):
            CheckFlagRequest.model_validate(bad)


EVENTS: TypeAdapter[Any] = TypeAdapter(EventRequest)


def test_events_union() -> None:
    track = EVENTS.validate_python(
        {
            "event_type": "track",
            "event": "api-call",
            "company": {"id": 1},
            "quantity": 3,
            "idempotency_key": "k1",
        }
    )
    assert isinstance(track, TrackEvent) and track.company == {"id": "1"}
    assert track.quantity == 3
    identify = EVENTS.validate_python(
        {
            "event_type": "identify",
            "keys": {"email": "w@acme.net"},
            "traits": {"login_count": 24, "is_staff": False, "score": 1.5, "city": None},
            "company": {"keys": {"id": "acme"}, "name": "Acme", "traits": {"city": "Atlanta"}},
        }
    )
    assert isinstance(identify, IdentifyEvent)
    assert identify.traits == {"login_count": 24, "is_staff": False, "score": 1.5, "city": None}
    assert TrackEvent(event="x").quantity == 1


@pytest.mark.parametrize(
    "body",
    [
        {"event_type": "track", "event": ""},
        {"event_type": "track", "event": "x", "quantity": -1},
        {"event_type": "track", "event": "x", "quantity": 1.5},
        {"event_type": "track", "event": "x\x00"},
        {"event_type": "track", "event": "x", "idempotency_key": ""},
        {"event_type": "track", "event": "x", "traits": {"a": "b\x00"}},
        {"event_type": "track", "event": "x", "traits": {"a": [1]}},
        {"event_type": "track", "event": "x", "traits": {"a": float("nan")}},
        {"event_type": "identify", "keys": {}},
        {"event_type": "identify"},
        {"event_type": "identify", "keys": {"id": "1"}, "company": {"keys": {}}},
        {"event_type": "other", "event": "x"},
        {"event": "x"},
    ],
)
def test_bad_events_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EVENTS.validate_python(body)


def test_batch_limits() -> None:
    assert (
        len(EventBatch.model_validate({"events": [{"event_type": "track", "event": "e"}]}).events)
        == 1
    )
    with pytest.raises(ValidationError):
        EventBatch.model_validate({"events": []})
