"""The Schematic SDK's ``features`` client (original, unmodified) against millpond: flags
(create, list, count, read by id or key, update, rules, delete; what the checks then
answer), features and the check log; errors in the SDK's shape."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from schematic.client import LocalCache, Schematic, SchematicConfig
from schematic.core import ApiError
from schematic.errors import BadRequestError, ForbiddenError, NotFoundError
from schematic.types import (
    CreateOrUpdateConditionGroupRequestBody,
    CreateOrUpdateConditionRequestBody,
    CreateOrUpdateFlagRequestBody,
    CreateOrUpdateRuleRequestBody,
)

from conftest import FlagsEnv

ACME = {"id": "acme"}


def _client(key: str, base_url: str) -> Schematic:
    config = SchematicConfig(
        base_url=f"{base_url}/compat/schematic", cache_providers=[LocalCache[bool](0, 0)]
    )
    return Schematic(key, config)


@pytest.fixture
def sdk(flags_env: FlagsEnv, base_url: str) -> Iterator[Schematic]:
    client = _client(flags_env.bound_key(), base_url)
    yield client
    client.shutdown()
    client._client_wrapper.httpx_client.httpx_client.close()


def _condition(**fields: object) -> CreateOrUpdateConditionRequestBody:
    return CreateOrUpdateConditionRequestBody(
        **{"metric_value": 0, "resource_ids": [], **fields}  # type: ignore[arg-type]
    )


def test_flags_crud_and_rules(sdk: Schematic) -> None:
    made = sdk.features.create_flag(
        key="new-editor",
        name="New editor",
        description="d",
        flag_type="boolean",
        default_value=False,
    ).data
    assert made.id.startswith("flag_") and made.rules == [] and made.default_value is False
    other = sdk.features.create_flag(
        key="beta", name="Beta", description="", flag_type="boolean", default_value=True
    ).data
    assert [f.key for f in sdk.features.list_flags().data] == ["new-editor", "beta"]
    assert [f.key for f in sdk.features.list_flags(q="edit").data] == ["new-editor"]
    assert [f.key for f in sdk.features.list_flags(ids=[other.id]).data] == ["beta"]
    assert [f.key for f in sdk.features.list_flags(limit=1, offset=1).data] == ["beta"]
    assert sdk.features.count_flags().data.count == 2
    assert sdk.features.get_flag(made.id).data.key == "new-editor"
    assert sdk.features.get_flag("new-editor").data.id == made.id  # a key works too
    updated = sdk.features.update_flag(
        made.id,
        key="new-editor",
        name="Editor",
        description="e",
        flag_type="boolean",
        default_value=False,
    ).data
    assert updated.name == "Editor" and updated.description == "e"
    # rules: a trait of the company (named by the definition id its entity_traits report)
    company = sdk.companies.upsert_company(keys=ACME, traits={"tier": "gold"}).data
    (tier,) = company.entity_traits
    gold = CreateOrUpdateRuleRequestBody(
        name="gold",
        priority=1,
        value=True,
        conditions=[
            _condition(
                condition_type="trait",
                operator="eq",
                trait_id=tier.definition_id,
                trait_value="gold",
            )
        ],
        condition_groups=[
            CreateOrUpdateConditionGroupRequestBody(
                conditions=[
                    _condition(condition_type="company", operator="eq", resource_ids=[company.id]),
                    _condition(condition_type="plan", operator="eq", resource_ids=["none"]),
                ]
            )
        ],
    )
    rules = sdk.features.update_flag_rules(made.id, rules=[gold]).data
    assert rules.flag is not None and rules.flag.id == made.id
    (rule,) = rules.rules
    assert rule.name == "gold" and rule.value is True
    assert rule.conditions[0].trait_id == "etd_company_tier"
    assert rule.conditions[0].trait_value == "gold"
    assert [c.condition_type for c in rule.condition_groups[0].conditions] == ["company", "plan"]
    assert sdk.features.get_flag(made.id).data.rules[0].id == rule.id
    assert sdk.check_flag("new-editor", company=ACME) is True
    assert sdk.check_flag("new-editor", company={"id": "other"}) is False
    check = sdk.features.check_flag("new-editor", company=ACME).data
    assert check.rule_id == rule.id
    # delete: gone from reads and lists; checks say so
    assert sdk.features.delete_flag(made.id).data.deleted is True
    with pytest.raises(NotFoundError):
        sdk.features.get_flag(made.id)
    assert sdk.features.count_flags().data.count == 1
    assert sdk.features.check_flag("new-editor", company=ACME).data.value is False


def test_flag_errors_change_nothing(sdk: Schematic, flags_env: FlagsEnv, base_url: str) -> None:
    made = sdk.features.create_flag(
        key="f", name="F", description="", flag_type="boolean", default_value=False
    ).data
    with pytest.raises(ApiError) as exists:
        sdk.features.create_flag(
            key="f", name="F", description="", flag_type="boolean", default_value=False
        )
    assert exists.value.status_code == 409
    with pytest.raises(BadRequestError) as rename:
        sdk.features.update_flag(
            made.id, key="g", name="G", description="", flag_type="boolean", default_value=True
        )
    assert "key" in rename.value.body.error
    bad_trait = CreateOrUpdateRuleRequestBody(
        name="r",
        priority=1,
        value=True,
        condition_groups=[],
        conditions=[_condition(condition_type="trait", operator="eq", trait_id="seats")],
    )
    with pytest.raises(BadRequestError) as unknown:
        sdk.features.update_flag_rules(made.id, rules=[bad_trait])
    assert unknown.value.body.code == "validation_error"
    crm = CreateOrUpdateRuleRequestBody(
        name="r",
        priority=1,
        value=True,
        condition_groups=[],
        conditions=[_condition(condition_type="crm_product", operator="eq")],
    )
    with pytest.raises(BadRequestError):
        sdk.features.update_flag_rules(made.id, rules=[crm])
    with pytest.raises(ApiError) as missing:
        sdk.features.update_flag_rules("flag_none", rules=[])
    assert missing.value.status_code == 404
    reader = _client(flags_env.bound_key(scope="read"), base_url)
    try:
        assert reader.features.get_flag(made.id).data.key == "f"
        with pytest.raises(ForbiddenError):
            reader.features.delete_flag(made.id)
    finally:
        reader.shutdown()
        reader._client_wrapper.httpx_client.httpx_client.close()
    flag = sdk.features.get_flag(made.id).data
    assert (flag.name, flag.default_value, flag.rules) == ("F", False, [])
    with pytest.raises(ApiError) as audience:  # not served: a clear 404
        sdk.features.count_audience_companies(conditions=[], condition_groups=[])
    assert audience.value.status_code == 404


def test_features(sdk: Schematic, flags_env: FlagsEnv) -> None:
    flag = CreateOrUpdateFlagRequestBody(
        key="api-access",
        name="API access",
        description="",
        flag_type="boolean",
        default_value=False,
    )
    api = sdk.features.create_feature(
        name="API",
        description="calls",
        feature_type="event",
        event_subtype="api-call",
        flag=flag,
    ).data
    assert api.feature_type == "event" and api.event_subtype == "api-call"
    assert [f.key for f in api.flags] == ["api-access"] and api.flags[0].feature_id == api.id
    seats = sdk.features.create_feature(
        name="Seats", description="", feature_type="trait", trait_id="etd_company_seats"
    ).data
    assert seats.trait_id == "etd_company_seats" and seats.trait is not None
    assert [f.id for f in sdk.features.list_features().data] == [api.id, seats.id]
    assert [f.id for f in sdk.features.list_features(q="sea").data] == [seats.id]
    assert sdk.features.count_features().data.count == 2
    # a plan entitled to it shows in its plans
    flags_env("POST", "/plans", 201, json={"id": "pro", "name": "Pro"})
    flags_env(
        "POST",
        "/entitlements",
        201,
        json={"plan_id": "pro", "feature_id": api.id, "value_type": "boolean", "value_bool": True},
    )
    got = sdk.features.get_feature(api.id).data
    assert [p.name for p in got.plans] == ["Pro"]
    renamed = sdk.features.update_feature(api.id, name="Public API").data
    assert renamed.name == "Public API" and renamed.event_subtype == "api-call"
    with pytest.raises(BadRequestError):
        sdk.features.create_feature(name="x", description="", feature_type="trait", trait_id="x")
    with pytest.raises(BadRequestError):  # an event feature needs its event
        sdk.features.create_feature(name="x", description="", feature_type="event")
    with pytest.raises(BadRequestError) as unsupported:
        sdk.features.list_features(without_plan_entitlement_for="pro")
    assert unsupported.value.body.code == "not_supported"
    assert sdk.features.delete_feature(api.id).data.deleted is True
    with pytest.raises(NotFoundError):
        sdk.features.get_feature(api.id)
    assert sdk.features.get_flag("api-access").data.feature_id is None  # gates nothing now
    assert sdk.features.count_features().data.count == 1


def test_flag_check_log(sdk: Schematic, flags_env: FlagsEnv) -> None:
    f = sdk.features.create_flag(
        key="f", name="F", description="", flag_type="boolean", default_value=True
    ).data
    g = sdk.features.create_flag(
        key="g", name="G", description="", flag_type="boolean", default_value=False
    ).data
    sdk.companies.upsert_company(keys=ACME, name="Acme")
    assert sdk.check_flag("f", company=ACME) is True  # this server records no checks
    assert sdk.features.count_flag_checks().data.count == 0
    assert sdk.features.get_flag(f.id).data.latest_check is None
    for key in ("f", "g", "f"):  # checks recorded on request (millpond's own API)
        flags_env("POST", f"/flags/{key}/check", params={"record": "true"}, json={"company": ACME})
    listed = sdk.features.list_flag_checks().data
    assert [c.flag_key for c in listed] == ["f", "g", "f"]  # newest first
    newest = listed[0]
    assert newest.value is True and newest.req_company == ACME and newest.flag_id == f.id
    assert newest.company is not None and newest.company.name == "Acme"
    assert newest.flag is not None and newest.flag.key == "f"
    assert [c.flag_key for c in sdk.features.list_flag_checks(flag_id=g.id).data] == ["g"]
    assert sdk.features.count_flag_checks(flag_ids=[f.id]).data.count == 2
    latest = sdk.features.get_latest_flag_checks().data
    assert sorted((c.flag_key, c.id) for c in latest) == sorted(
        [("f", newest.id), ("g", listed[1].id)]
    )
    assert sdk.features.get_flag_check(newest.id).data.flag_key == "f"
    latest_f = sdk.features.get_flag(f.id).data.latest_check
    assert latest_f is not None and latest_f.id == newest.id
    assert sdk.features.list_flag_checks(id=newest.id).data[0].id == newest.id
    assert sdk.features.list_flag_checks(id="nope").data == []
    with pytest.raises(NotFoundError):
        sdk.features.get_flag_check("nope")
