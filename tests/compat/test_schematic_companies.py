"""The Schematic SDK's ``companies`` client (and ``events.create_event``), original and
unmodified, against millpond: companies, users, memberships and traits as the SDK's
response models; errors as its ``ApiError`` subclasses; every role."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from schematic.client import Schematic, SchematicConfig
from schematic.core import ApiError
from schematic.errors import BadRequestError, ForbiddenError, NotFoundError, UnauthorizedError

from conftest import FlagsEnv

ACME = {"id": "acme"}


@pytest.fixture
def connect(base_url: str) -> Iterator[Callable[[str], Schematic]]:
    made: list[Schematic] = []

    def build(key: str) -> Schematic:
        client = Schematic(key, SchematicConfig(base_url=f"{base_url}/compat/schematic"))
        made.append(client)
        return client

    yield build
    for client in made:
        client.shutdown()
        client._client_wrapper.httpx_client.httpx_client.close()


@pytest.fixture
def sdk(flags_env: FlagsEnv, connect: Callable[[str], Schematic]) -> Schematic:
    return connect(flags_env.bound_key())


def test_companies_list_count_lookup_and_delete(sdk: Schematic, flags_env: FlagsEnv) -> None:
    flags_env("POST", "/plans", 201, json={"id": "gold", "name": "Gold"})
    acme = sdk.companies.upsert_company(keys=ACME, name="Acme Widgets", traits={"seats": 3}).data
    globex = sdk.companies.create_company(keys={"id": "globex", "slug": "gx"}, name="Globex").data
    flags_env("POST", "/companies", json={"keys": ACME, "plan_id": "gold"})
    listed = sdk.companies.list_companies()
    assert [c.id for c in listed.data] == [acme.id, globex.id]  # oldest first
    assert listed.params.limit == 100 and listed.params.offset == 0
    assert [p.name for p in listed.data[0].plans] == ["Gold"] and listed.data[1].plans == []
    page = sdk.companies.list_companies(limit=1, offset=1)
    assert [c.id for c in page.data] == [globex.id] and page.params.offset == 1
    assert [c.id for c in sdk.companies.list_companies(q="widget").data] == [acme.id]
    assert [c.id for c in sdk.companies.list_companies(plan_id="gold").data] == [acme.id]
    assert [c.id for c in sdk.companies.list_companies(ids=[globex.id]).data] == [globex.id]
    assert sdk.companies.count_companies().data.count == 2
    assert sdk.companies.count_companies(q="glob", limit=1).data.count == 1
    found = sdk.companies.lookup_company(keys={"slug": "gx"})
    assert found.data.id == globex.id and found.params.keys == {"slug": "gx"}
    with pytest.raises(NotFoundError) as missing:
        sdk.companies.lookup_company(keys={"id": "nobody"})
    assert missing.value.body.code == "company_not_found"
    deleted = sdk.companies.delete_company_by_keys(keys={"slug": "gx"})
    assert deleted.data.id == globex.id and deleted.data.name == "Globex"
    assert sdk.companies.delete_company(acme.id).data.deleted is True
    with pytest.raises(NotFoundError):
        sdk.companies.get_company(acme.id)
    assert sdk.companies.count_companies().data.count == 0


def test_upsert_by_id_and_update_only(sdk: Schematic) -> None:
    acme = sdk.companies.upsert_company(keys=ACME, name="Acme").data
    # keys added to the company the id names
    both = sdk.companies.upsert_company(id=acme.id, keys={"domain": "acme.net"}).data
    assert both.id == acme.id and {k.key for k in both.keys} == {"id", "domain"}
    with pytest.raises(ApiError) as refused:  # update_only never creates
        sdk.companies.upsert_company(keys={"id": "new"}, update_only=True)
    assert refused.value.status_code == 404
    assert sdk.companies.count_companies().data.count == 1
    updated = sdk.companies.upsert_company(keys=ACME, name="Acme 2", update_only=True).data
    assert updated.id == acme.id and updated.name == "Acme 2"
    with pytest.raises(ApiError) as unknown:
        sdk.companies.upsert_company(id="comp_0000000000000000", keys={"id": "x"})
    assert unknown.value.status_code == 404


def test_users_and_memberships(sdk: Schematic, flags_env: FlagsEnv) -> None:
    acme = sdk.companies.upsert_company(keys=ACME, name="Acme").data
    globex = sdk.companies.upsert_company(keys={"id": "globex"}, name="Globex").data
    wile = sdk.companies.upsert_user(keys={"email": "w@acme.net"}, company=ACME, name="W").data
    road = sdk.companies.create_user(
        keys={"email": "rr@globex.com"}, company={}, company_id=globex.id, name="RR"
    ).data
    assert [m.company_id for m in road.company_memberships] == [globex.id]
    assert road.company_memberships[0].company.name == "Globex"  # type: ignore[union-attr]
    assert [u.id for u in sdk.companies.list_users().data] == [wile.id, road.id]
    assert [u.id for u in sdk.companies.list_users(company_id=acme.id).data] == [wile.id]
    assert sdk.companies.count_users(company_id=globex.id).data.count == 1
    assert sdk.companies.lookup_user(keys={"email": "rr@globex.com"}).data.id == road.id
    # memberships: get or create (twice: the same one), list, delete
    made = sdk.companies.get_or_create_company_membership(company_id=globex.id, user_id=wile.id)
    again = sdk.companies.get_or_create_company_membership(company_id=globex.id, user_id=wile.id)
    assert made.data.id == again.data.id and made.data.company.id == globex.id  # type: ignore[union-attr]
    assert sdk.companies.get_company(globex.id).data.user_count == 2
    listed = sdk.companies.list_company_memberships(user_id=wile.id).data
    assert sorted(m.company_id for m in listed) == sorted([acme.id, globex.id])
    assert len(sdk.companies.list_company_memberships(company_id=globex.id).data) == 2
    assert sdk.companies.delete_company_membership(made.data.id).data.deleted is True
    with pytest.raises(ApiError) as gone:
        sdk.companies.delete_company_membership(made.data.id)
    assert gone.value.status_code == 404
    with pytest.raises(ApiError) as no_user:
        sdk.companies.get_or_create_company_membership(company_id=acme.id, user_id="user_none")
    assert no_user.value.status_code == 404
    assert [m.company_id for m in sdk.companies.get_user(wile.id).data.company_memberships] == [
        acme.id
    ]
    audit = flags_env("GET", "/audit", params={"entity": "user", "entity_id": wile.id})
    assert [e["action"] for e in audit][:2] == ["update", "update"]  # removed, added
    # deletes
    assert sdk.companies.delete_user_by_keys(keys={"email": "rr@globex.com"}).data.id == road.id
    assert sdk.companies.delete_user(wile.id).data.deleted is True
    assert sdk.companies.count_users().data.count == 0
    assert sdk.companies.get_company(acme.id).data.user_count == 0


def test_traits_and_single_events(sdk: Schematic, flags_env: FlagsEnv) -> None:
    company = sdk.companies.upsert_company_trait(keys=ACME, trait="tier", set_="gold").data
    assert company.traits == {"tier": "gold"}
    user = sdk.companies.upsert_user_trait(keys={"email": "w@acme.net"}, trait="role", set_="x")
    assert user.data.traits == {"role": "x"}
    with pytest.raises(BadRequestError) as incr:
        sdk.companies.upsert_company_trait(keys=ACME, trait="logins", incr=1)
    assert incr.value.body.code == "not_supported"
    sent = sdk.events.create_event(event_type="track", body={"event": "login", "company": ACME})
    assert sent.data.remote_ip == "127.0.0.1"
    metrics = flags_env("GET", f"/companies/{company.id}/metrics")
    assert {"event": "login", "period": "all_time", "aggregation": "count", "value": 1} in metrics


def test_errors_in_the_sdk_s_shape_change_nothing(
    sdk: Schematic, flags_env: FlagsEnv, connect: Callable[[str], Schematic], base_url: str
) -> None:
    sdk.companies.upsert_company(keys=ACME, name="Acme")
    sdk.companies.upsert_company(keys={"id": "globex"}, name="Globex")
    with pytest.raises(BadRequestError) as bad:  # traits are JSON scalars in millpond
        sdk.companies.upsert_company(keys=ACME, traits={"nested": {"a": 1}})
    assert bad.value.body.code == "validation_error" and "traits" in bad.value.body.error
    with pytest.raises(BadRequestError):
        sdk.companies.upsert_company(keys={})
    sdk.companies.upsert_company(keys={"id": "acme", "other": "x"})
    with pytest.raises(ApiError) as conflict:  # keys of two companies
        sdk.companies.upsert_company(keys={"id": "globex", "other": "x"}, name="Both")
    assert conflict.value.status_code == 409
    with pytest.raises(ApiError) as lookup:
        sdk.companies.lookup_company(keys={})
    assert lookup.value.status_code == 400
    for bad_page in (
        {"offset": -1},
        {"limit": 0},
        {"ids": ["c"] * 101},
        {"ids": ["c" * 65]},
        {"q": "q" * 256},
    ):
        with pytest.raises(ApiError) as page:
            sdk.companies.list_companies(**bad_page)  # type: ignore[arg-type]
        assert page.value.status_code == 400, bad_page
    with pytest.raises(ApiError) as unsupported:
        sdk.plans.list_plans()
    assert unsupported.value.status_code == 404
    assert unsupported.value.body["code"] == "not_supported"
    names = sorted(c.name for c in sdk.companies.list_companies().data)
    assert names == ["Acme", "Globex"]
    acme = sdk.companies.lookup_company(keys=ACME).data
    assert acme.traits == {} and {k.key for k in acme.keys} == {"id", "other"}
    r = httpx.post(f"{base_url}/compat/schematic/companies", json={"keys": ACME}, timeout=30)
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"


def test_every_role(
    sdk: Schematic,
    flags_env: FlagsEnv,
    connect: Callable[[str], Schematic],
    make_user: Callable[..., tuple[str, str]],
    base_url: str,
) -> None:
    acme = sdk.companies.upsert_company(keys=ACME, name="Acme").data
    reader = connect(flags_env.bound_key(scope="read"))
    assert reader.companies.get_company(acme.id).data.name == "Acme"
    assert reader.companies.count_companies().data.count == 1
    with pytest.raises(ForbiddenError) as read_only:
        reader.companies.upsert_company(keys=ACME, name="Mine")
    assert read_only.value.body.code == "read_only_key"
    with pytest.raises(ApiError) as cannot_delete:
        reader.companies.delete_company(acme.id)
    assert cannot_delete.value.status_code == 403
    # another user's environment sees none of it, and cannot reach it by id
    _, other_key = make_user(prefix="schemother")
    with httpx.Client(base_url=base_url, timeout=30) as http:
        auth = {"Authorization": f"Bearer {other_key}"}
        env = http.post("/v1/flags/environments", json={"name": "e"}, headers=auth).json()["id"]
        r = http.post(f"/v1/flags/environments/{env}/keys", json={}, headers=auth)
        stranger = connect(r.json()["secret"])
    with pytest.raises(NotFoundError):
        stranger.companies.get_company(acme.id)
    with pytest.raises(ApiError) as foreign:
        stranger.companies.delete_company(acme.id)
    assert foreign.value.status_code == 404
    assert stranger.companies.count_companies().data.count == 0
    stranger.companies.upsert_company(keys=ACME, name="Theirs")  # same keys, their own record
    assert sdk.companies.get_company(acme.id).data.name == "Acme"
    # an account key (no environment) and an unknown key
    with pytest.raises(ForbiddenError) as unbound:
        connect(flags_env.key).companies.list_companies()
    assert unbound.value.body.code == "environment_required"
    with pytest.raises(UnauthorizedError):
        connect("mp_" + "x" * 40).companies.list_companies()


def test_key_and_trait_definitions(sdk: Schematic) -> None:
    sdk.companies.upsert_company(keys=ACME, traits={"seats": 3, "tier": "gold"})
    sdk.companies.upsert_company(keys={"id": "globex"}, traits={"tier": "silver", "vip": True})
    sdk.companies.upsert_user(keys={"email": "w@acme.net"}, company={}, traits={"role": "dev"})
    keys = sdk.companies.list_entity_key_definitions().data
    assert [(k.entity_type, k.key) for k in keys] == [("company", "id"), ("user", "email")]
    assert sdk.companies.count_entity_key_definitions(entity_type="user").data.count == 1
    traits = sdk.companies.list_entity_trait_definitions(entity_type="company").data
    assert [(t.id, t.trait_type) for t in traits] == [
        ("etd_company_seats", "number"),
        ("etd_company_tier", "string"),
        ("etd_company_vip", "boolean"),
    ]
    assert sdk.companies.count_entity_trait_definitions(q="TI").data.count == 1
    assert sdk.companies.count_entity_trait_definitions(trait_type="string").data.count == 2
    tier = sdk.companies.get_entity_trait_definition("etd_company_tier").data
    assert tier.display_name == "tier" and tier.hierarchy == ["tier"]
    values = sdk.companies.get_entity_trait_values(definition_id="etd_company_tier").data
    assert [v.value for v in values] == ["gold", "silver"]
    assert [
        v.value
        for v in sdk.companies.get_entity_trait_values(
            definition_id="etd_company_tier", q="sil"
        ).data
    ] == ["silver"]
    made = sdk.companies.get_or_create_entity_trait_definition(
        entity_type="user", hierarchy=["plan_seats"], trait_type="number"
    ).data
    assert made.id == "etd_user_plan_seats"  # nothing is stored: it is not in use yet
    assert (
        sdk.companies.get_or_create_entity_trait_definition(
            entity_type="company", hierarchy=["tier"], trait_type="string"
        ).data.created_at
        == tier.created_at
    )
    with pytest.raises(NotFoundError):
        sdk.companies.get_entity_trait_definition("etd_user_plan_seats")
    with pytest.raises(NotFoundError):
        sdk.companies.get_entity_trait_definition("seats")
    # a company's entity_traits name the same definitions
    acme = sdk.companies.lookup_company(keys=ACME).data
    assert {t.definition_id for t in acme.entity_traits} == {
        "etd_company_seats",
        "etd_company_tier",
    }
