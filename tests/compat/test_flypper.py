"""The original flypper package (``flypper`` 0.1.7, unmodified) on millpond flags through
``millpond.flags.FlypperStorage``, against the session's real server: the seed document's
examples (with FlypperStorage where it builds flypper-sqlalchemy's storage), flypper's
``Client`` polling by version, its WSGI web UI driven by werkzeug's WSGI test client, and
millpond's SDK seeing the same flags and answering as flypper does for the same actors
(flypper's own md5 percentage hashing)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import jinja2
import pytest
import werkzeug.urls
from flypper.client import Client as FlypperClient
from flypper.context import Context as FlypperContext
from flypper.entities.flag import Flag as FlypperFlag
from flypper.storage.in_memory import InMemoryStorage
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import Client as WsgiClient

from conftest import FlagsEnv
from millpond import Millpond
from millpond.engine.flags import (
    CompanyContext,
    EvalContext,
    UserContext,
    compile_ruleset,
    flypper_actor,
)
from millpond.errors import ApiError, ForbiddenError, UnprocessableEntityError
from millpond.flags import FlypperStorage
from millpond.flags._flypper import Gates, gates_from, gates_of, rule_of
from millpond.models.flags import Flag, FlagRuleset, Rule

# flypper 0.1.7's web UI imports werkzeug.urls.url_parse, which Werkzeug 3 removed (the
# workaround docs/compat.md gives); it only feeds a template filter the UI never uses
if not hasattr(werkzeug.urls, "url_parse"):
    werkzeug.urls.url_parse = urllib.parse.urlsplit

from flypper.wsgi.web_ui import FlypperWebUI

PROPERTY = settings(max_examples=300, deadline=None, database=None)
ACTORS_42 = {"actor_key": "user_id", "actor_ids": ["42"]}


def flag_data(name: str, enabled: bool = True, **gates: Any) -> dict[str, Any]:
    return {
        "name": name,
        "deleted": gates.pop("deleted", False),
        "enabled": enabled,
        "enabled_for_actors": gates.get("actors"),
        "enabled_for_percentage_of_actors": gates.get("percentage"),
    }


def entities(entries: dict[str, str]) -> tuple[dict[str, str] | None, dict[str, str] | None]:
    """flypper entries as the company and user keys millpond checks (user_id → user id)."""
    company: dict[str, str] = {}
    user: dict[str, str] = {}
    for name, value in entries.items():
        of_company, key = flypper_actor(name)
        (company if of_company else user)[key] = value
    return company or None, user or None


@pytest.fixture
def mp(flags_env: FlagsEnv, base_url: str) -> Iterator[Millpond]:
    with Millpond(api_key=flags_env.bound_key(), base_url=base_url, cache_providers=[]) as mp:
        yield mp


@pytest.fixture
def storage(mp: Millpond) -> FlypperStorage:
    return FlypperStorage(mp)


# -- the seed's examples ---------------------------------------------------------------------


def test_the_seed_usage(storage: FlypperStorage, mp: Millpond) -> None:
    # "Build a storage backend": FlypperStorage instead of SqlAlchemyStorage
    storage.upsert(flag_data("flag_name", actors=ACTORS_42))
    shampoo = {"actor_key": "item_reference", "actor_ids": ["blue-shampoo"]}
    storage.upsert(flag_data("other_flag_name", actors=shampoo))
    storage.commit()

    # "Use it in the web UI"
    web_ui = FlypperWebUI(storage=storage)
    page = WsgiClient(web_ui).get("/flypper/")
    assert page.status_code == 200
    assert "<code>flag_name</code>" in page.text and "<code>other_flag_name</code>" in page.text

    # "Use it in your code" (the seed forgets to import Context as FlypperContext)
    flypper_client = FlypperClient(storage=storage, ttl=10)
    flypper_context = FlypperContext(client=flypper_client, entries={"user_id": "42"})
    assert flypper_context.is_enabled("flag_name") is True
    # the seed's call passes one entry named "entries": the item's entry never arrives
    assert (
        flypper_context.is_enabled(
            "other_flag_name",
            entries={"item_reference": "blue-shampoo"},
        )
        is False
    )
    assert flypper_context.is_enabled("other_flag_name", item_reference="blue-shampoo") is True
    assert FlypperContext(flypper_client, {"user_id": "7"}).is_enabled("flag_name") is False

    # millpond's SDK sees the same flags and answers the same, for the users it knows
    assert mp.check_flag("flag_name", user={"id": "42"}) is False  # not identified yet
    for keys in ({"id": "42"}, {"id": "7"}, {"item_reference": "blue-shampoo"}):
        mp.companies.upsert_user(keys=keys)
    assert mp.check_flag("flag_name", user={"id": "42"}) is True
    assert mp.check_flag("flag_name", user={"id": "7"}) is False
    assert mp.check_flag("other_flag_name", user={"item_reference": "blue-shampoo"}) is True
    with mp.flag_context(user_id="42") as ctx:
        assert ctx.is_enabled("flag_name") and ctx.is_disabled("other_flag_name")


# -- versions ----------------------------------------------------------------------------------


def test_the_client_polls_by_version(storage: FlypperStorage, mp: Millpond) -> None:
    now = [0.0]
    client = FlypperClient(storage=storage, ttl=10, time_fn=lambda: now[0])
    first = storage.upsert(flag_data("a"))
    assert set(client.flags()) == {"a"}
    second = storage.upsert(flag_data("b", enabled=False))
    assert second.version > first.version
    assert [f.name for f in storage.list(version__gt=first.version)] == ["b"]
    assert storage.list(version__gt=second.version) == []
    assert set(client.flags()) == {"a"}  # within the ttl: no sync
    now[0] = 10.0
    assert set(client.flags()) == {"a", "b"}
    assert FlypperContext(client).is_enabled("a") and FlypperContext(client).is_disabled("b")

    # a change made in millpond reaches flypper's client at its next sync
    mp.flags.set_rules("b", [rule_of(Gates(enabled=True))])
    now[0] = 20.0
    assert FlypperContext(client).is_enabled("b")
    mp.flags.delete("a")
    now[0] = 30.0
    assert set(client.flags()) == {"b"}
    assert client._last_version == mp.flags.get("a", include_deleted=True).version


def test_deleted_flags_do_not_break_a_new_client(storage: FlypperStorage) -> None:
    # flypper's own defect, with its own in-memory storage: a client's first sync lists a
    # soft-deleted flag it never had, and Client._sync fails deleting it from its cache
    memory = InMemoryStorage()
    memory.upsert(flag_data("gone", deleted=True))
    with pytest.raises(KeyError):
        FlypperClient(storage=memory).flags()

    storage.upsert(flag_data("gone"))
    storage.upsert(flag_data("gone", deleted=True))
    storage.upsert(flag_data("kept"))
    assert set(FlypperClient(storage=storage).flags()) == {"kept"}
    # the UI's listing has it once, deleted
    assert [(f.name, f.is_deleted) for f in storage.list()] == [("gone", True), ("kept", False)]


# -- the web UI ------------------------------------------------------------------------------


def test_the_web_ui_on_millpond_flags(storage: FlypperStorage, mp: Millpond) -> None:
    for actor in ("42", "8"):
        mp.companies.upsert_user(keys={"id": actor})
    ui = WsgiClient(FlypperWebUI(storage=storage))
    created = ui.post("/flypper/new", data={"flag_name": "new-editor"})
    assert (created.status_code, created.headers["Location"]) == (302, "/flypper/")
    assert mp.flags.get("new-editor").default_value is False
    assert mp.check_flag_details("new-editor", user={"id": "42"}).value is False
    assert "Fully disabled" in ui.get("/flypper/").text

    edit = {
        "flag_name": "new-editor",
        "enabled": "on",
        "enabled_for_actors": "on",
        "enabled_for_actors_key": "user_id",
        "enabled_for_actors_ids": "42\n7\n",
        "enabled_for_percentage_of_actors_key": "user_id",
        "enabled_for_percentage_of_actors_percentage": "",
    }
    assert ui.post("/flypper/edit", data=edit).status_code == 302
    assert mp.check_flag("new-editor", user={"id": "42"}) is True
    assert mp.check_flag("new-editor", user={"id": "8"}) is False
    assert "Enabled for 2" in ui.get("/flypper/").text
    form = ui.get("/flypper/edit_form", query_string={"flag_name": "new-editor"}).text
    assert "42\n7\n</textarea>" in form

    # disable: the actor list is kept, the flag is off for everyone
    disabled = {k: v for k, v in edit.items() if k != "enabled"}
    assert ui.post("/flypper/edit", data=disabled).status_code == 302
    assert mp.check_flag("new-editor", user={"id": "42"}) is False
    assert mp.flags.rules("new-editor")[0].conditions[0].actors == [{"id": "42"}, {"id": "7"}]

    # enable again for a percentage of actors: flypper's hashing (42 is in bucket 5174)
    percent = {**edit, "enabled_for_percentage_of_actors": "on"}
    del percent["enabled_for_actors"]
    for pct, expected in (("51.73", False), ("51.74", True)):
        percent["enabled_for_percentage_of_actors_percentage"] = pct
        assert ui.post("/flypper/edit", data=percent).status_code == 302
        assert mp.check_flag("new-editor", user={"id": "42"}) is expected

    soft = ui.post("/flypper/soft_delete", query_string={"flag_name": "new-editor"})
    assert soft.status_code == 302
    assert mp.check_flag_details("new-editor", user={"id": "42"}).reason == "FLAG_NOT_FOUND"
    assert "new-editor" not in ui.get("/flypper/").text
    # flypper's own defect: its deleted-flags page does not compile (a missing parenthesis)
    with pytest.raises(jinja2.TemplateSyntaxError):
        ui.get("/flypper/", query_string={"deleted": "1"})

    back = ui.post("/flypper/reactivate", query_string={"flag_name": "new-editor"})
    assert back.status_code == 302
    assert mp.check_flag("new-editor", user={"id": "42"}) is True  # its gates came back

    gone = ui.post("/flypper/delete", query_string={"flag_name": "new-editor"})
    assert (gone.status_code, gone.headers["Location"]) == (302, "/flypper/?deleted=1")
    assert mp.flags.list(include_deleted=True) == [] and storage.list() == []
    # flypper's own defect: its 404 page is missing from the package
    with pytest.raises(jinja2.TemplateNotFound):
        ui.get("/flypper/edit_form", query_string={"flag_name": "new-editor"})


def test_flags_made_in_millpond_as_flypper_sees_them(storage: FlypperStorage, mp: Millpond) -> None:
    actors = {
        "value": True,
        "conditions": [{"condition_type": "actor_list", "actors": [{"id": "9"}]}],
    }
    mp.flags.create("from-console", rules=[actors])
    mp.flags.create("everyone", default_value=True)
    trait = {"condition_type": "trait", "trait_key": "tier", "trait_value": "gold"}
    mp.flags.create("by-trait", rules=[{"value": True, "conditions": [trait]}])
    seen = {f.name: f.data for f in storage.list()}
    assert seen["from-console"]["enabled_for_actors"] == {
        "actor_key": "user_id",
        "actor_ids": ["9"],
    }
    assert seen["from-console"]["enabled"] is True
    assert (seen["everyone"]["enabled"], seen["everyone"]["enabled_for_actors"]) == (True, None)
    assert seen["by-trait"]["enabled"] is False  # flypper cannot express a trait rule
    context = FlypperContext(FlypperClient(storage=storage), {"user_id": "9"})
    assert context.is_enabled("from-console") and context.is_enabled("everyone")
    # turned on for everyone in millpond (its default): flypper shows it so
    mp.flags.toggle("from-console")
    assert storage.list(version__gt=context._client._last_version)[0].data["enabled"] is True
    anyone = FlypperContext(FlypperClient(storage=storage), {"user_id": "1"})
    assert anyone.is_enabled("from-console") and mp.check_flag("from-console", user={"id": "1"})

    # soft delete and reactivate through flypper keep a rule flypper cannot express
    ui = WsgiClient(FlypperWebUI(storage=storage))
    ui.post("/flypper/soft_delete", query_string={"flag_name": "by-trait"})
    assert mp.flags.get("by-trait", include_deleted=True).deleted_at is not None
    ui.post("/flypper/reactivate", query_string={"flag_name": "by-trait"})
    assert mp.flags.get("by-trait").deleted_at is None
    assert mp.flags.rules("by-trait")[0].conditions[0].trait_key == "tier"
    # an edit through flypper replaces it by flypper's gates
    ui.post("/flypper/edit", data={"flag_name": "by-trait", "enabled": "on"})
    assert [r.id for r in mp.flags.rules("by-trait")] == ["flypper"]
    assert mp.check_flag("by-trait", user={"id": "1"}) is True


# -- errors ------------------------------------------------------------------------------------


def test_refused_writes_change_nothing(
    storage: FlypperStorage,
    flags_env: FlagsEnv,
    base_url: str,
    make_user: Callable[..., tuple[str, str]],
) -> None:
    storage.upsert(flag_data("mine"))
    read_key = flags_env.bound_key("read")
    _, stranger_key = make_user(prefix="stranger")
    before = flags_env("GET", "")["version"]
    with pytest.raises(UnprocessableEntityError):
        storage.upsert(flag_data("not a key"))
    bad = flag_data("pct", percentage={"actor_key": "user_id", "percentage": 120.0})
    with pytest.raises(UnprocessableEntityError):
        storage.upsert(bad)
    with Millpond(api_key=read_key, base_url=base_url) as reader:
        with pytest.raises(ForbiddenError):
            FlypperStorage(reader).upsert(flag_data("x"))
        assert [f.name for f in FlypperStorage(reader).list()] == ["mine"]
    # another account's key reaches neither the flags nor their changes
    with Millpond(api_key=stranger_key, base_url=base_url, environment=flags_env.id) as other:
        with pytest.raises(ApiError) as refused:
            FlypperStorage(other).list()
        assert refused.value.status_code in (403, 404)
        with pytest.raises(ApiError):
            FlypperStorage(other).upsert(flag_data("mine", enabled=False))
        with pytest.raises(ApiError):
            FlypperStorage(other).delete("mine")
    storage.delete("no-such-flag")
    storage.delete(None)  # the web UI's delete without a name
    assert flags_env("GET", "")["version"] == before
    assert [(f.name, f.data["enabled"]) for f in storage.list()] == [("mine", True)]


# -- agreement with flypper's own evaluation ------------------------------------------------------

NAMES = ["user_id", "company_id", "email"]
actor_lists = st.fixed_dictionaries(
    {"actor_key": st.sampled_from(NAMES), "actor_ids": st.lists(st.sampled_from("0123456789"))}
)
percentages = st.fixed_dictionaries(
    {
        "actor_key": st.sampled_from(NAMES),
        "percentage": st.one_of(
            st.sampled_from([0.0, 100.0, 51.74, 51.73]),
            st.floats(0, 100),
            st.integers(0, 10000).map(lambda n: n / 100),
        ),
    }
)
datas = st.builds(
    lambda enabled, actors, pct: {
        "name": "f",
        "deleted": False,
        "enabled": enabled,
        "enabled_for_actors": actors,
        "enabled_for_percentage_of_actors": pct,
    },
    st.booleans(),
    st.none() | actor_lists,
    st.none() | percentages,
)
entry_sets = st.dictionaries(
    st.sampled_from(NAMES), st.sampled_from("0123456789") | st.text(min_size=1, max_size=8)
)


@PROPERTY
@given(datas, entry_sets)
def test_the_engine_answers_as_flypper_does(data: dict[str, Any], entries: dict[str, str]) -> None:
    gates = gates_from(data)
    ruleset = FlagRuleset(flag=Flag(key="f"), rules=[Rule.model_validate(rule_of(gates))])
    assert gates_of(ruleset) == gates  # the round trip is exact
    company, user = entities(entries)
    ctx = EvalContext(
        CompanyContext("c", keys=company) if company else None,
        UserContext("u", keys=user) if user else None,
    )
    expected = FlypperFlag({**data, "updated_at": 0.0, "version": 1}).is_enabled(**entries)
    assert compile_ruleset(ruleset).evaluate(ctx).value is expected


def test_the_server_answers_as_flypper_does(storage: FlypperStorage, mp: Millpond) -> None:
    flags = [
        flag_data("p30", percentage={"actor_key": "user_id", "percentage": 30.0}),
        flag_data("p12", percentage={"actor_key": "company_id", "percentage": 12.34}),
        flag_data(
            "both",
            actors={"actor_key": "email", "actor_ids": [f"{i}@x.io" for i in range(0, 200, 3)]},
            percentage={"actor_key": "user_id", "percentage": 50.0},
        ),
    ]
    for data in flags:
        storage.upsert(data)
    client = FlypperClient(storage=storage)
    enabled = {name: 0 for name in ("p30", "p12", "both")}
    for i in range(200):
        entries = {"user_id": f"u{i}", "company_id": f"c{i}", "email": f"{i}@x.io"}
        company, user = entities(entries)
        assert company is not None and user is not None
        mp.companies.upsert_user(keys=user, company=company)  # millpond checks known actors
        checks = {c.flag: c.value for c in mp.check_flags(company=company, user=user)}
        context = FlypperContext(client, entries)
        assert checks == {name: context.is_enabled(name) for name in enabled}, entries
        for name, value in checks.items():
            enabled[name] += value
    assert 40 <= enabled["p30"] <= 80 and 10 <= enabled["p12"] <= 40 and enabled["both"] > 10


def test_millpond_checks_only_the_actors_it_knows(storage: FlypperStorage, mp: Millpond) -> None:
    # the known difference: flypper evaluates any entries, millpond's server the companies
    # and users it has been told about (identify, or upsert_company/upsert_user)
    storage.upsert(flag_data("all", percentage={"actor_key": "user_id", "percentage": 100.0}))
    storage.upsert(flag_data("listed", actors=ACTORS_42))
    context = FlypperContext(FlypperClient(storage=storage), {"user_id": "42"})
    assert context.is_enabled("all") and context.is_enabled("listed")
    assert mp.check_flag("all", user={"id": "42"}) is True  # 100 %: everyone, known or not
    assert mp.check_flag("listed", user={"id": "42"}) is False
    mp.companies.upsert_user(keys={"id": "42"})
    assert mp.check_flag("listed", user={"id": "42"}) is True
