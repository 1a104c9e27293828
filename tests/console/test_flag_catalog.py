"""The flags catalog in the console, in headless Chromium and over plain HTTP: features
(listed with their kind, the flags gating them and who grants them; created, edited,
deleted), plans and their entitlements, company overrides from a flag's page and from a
feature's page — each checked through the API, and through what the flag's check answers
— with errors shown inline with the input kept (422), unknown features and plans as the
not-found page, and read-only keys seeing no controls and changing nothing."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page

from conftest import FlagsEnv
from console._helpers import browser_login, console_client, follow, form_token

ACME = {"company": {"id": "acme"}}


def _submit(page: Page, selector: str) -> int:
    """Click a submit button; the status of the page it leads to."""
    with page.expect_navigation() as answer:
        page.click(selector)
    response = answer.value
    assert response is not None
    return response.status


def _check(env: FlagsEnv, key: str) -> tuple[bool, str]:
    answer = env("POST", f"/flags/{key}/check", json=ACME)
    return answer["value"], answer["reason"]


def _metered(env: FlagsEnv) -> None:
    """A feature metered by export events, gated by the flag exporting; acme on no plan."""
    feature = {"id": "exports", "name": "Exports", "feature_type": "event", "event_name": "export"}
    env("POST", "/features", 201, json=feature)
    env("POST", "/flags", 201, json={"key": "exporting", "feature_id": "exports"})
    env("POST", "/companies", 201, json={"keys": {"id": "acme"}, "name": "Acme"})


# -- features ----------------------------------------------------------------------------------


def test_features_are_listed_made_edited_and_deleted(
    page: Page, base_url: str, flags_env: FlagsEnv
) -> None:
    env = flags_env
    _metered(env)
    env("POST", "/plans", 201, json={"id": "pro", "name": "Pro"})
    grant = {"plan_id": "pro", "feature_id": "exports", "value_type": "numeric"}
    env("POST", "/entitlements", 201, json={**grant, "value_numeric": 10})
    browser_login(page, base_url, env.key)
    page.goto(f"{base_url}/console/flags?env={env.id}")
    follow(page, "nav.subnav a:has-text('Features')")
    row = page.inner_text("tr[data-feature=exports]")
    assert "metered by “export” events (their number)" in row
    assert "exporting" in row and "Pro (on, up to 10)" in row

    # an event feature without its event: inline, kept, nothing made
    form = "#new-feature"
    page.fill(f"{form} input[name=id]", "reports")
    page.fill(f"{form} input[name=name]", "Reports")
    page.select_option(f"{form} select[name=feature_type]", "event")
    assert _submit(page, f"{form} button[name=create]") == 422
    assert "Track event: an event feature needs the event that meters it." in page.inner_text(
        f"{form} .problems"
    )
    assert page.input_value(f"{form} input[name=id]") == "reports"
    assert page.input_value(f"{form} input[name=name]") == "Reports"
    assert page.input_value(f"{form} select[name=feature_type]") == "event"
    page.fill(f"{form} input[name=id]", "bad id!")
    assert _submit(page, f"{form} button[name=create]") == 422
    assert "Id: may hold letters" in page.inner_text(f"{form} .problems")
    assert [f["id"] for f in env("GET", "/features")] == ["exports"]

    # a trait feature: made, then its page
    page.fill(f"{form} input[name=id]", "seats")
    page.fill(f"{form} input[name=name]", "Seats")
    page.select_option(f"{form} select[name=feature_type]", "trait")
    page.fill(f"{form} input[name=trait_key]", "seat_count")
    _submit(page, f"{form} button[name=create]")
    made = env("GET", "/features/seats")
    assert (made["name"], made["feature_type"], made["trait_key"]) == (
        "Seats",
        "trait",
        "seat_count",
    )
    assert made["event_name"] is None
    assert page.inner_text("h1").startswith("Seats")
    assert "metered by the company trait seat_count" in page.inner_text("main")

    # edited on its page; a change that would leave it without its trait is refused
    page.fill("#settings input[name=trait_key]", "")
    page.fill("#settings input[name=description]", "kept text")
    assert _submit(page, "#settings button[name=save]") == 422
    assert "Trait: a trait feature needs" in page.inner_text("#settings .problems")
    assert page.input_value("#settings input[name=description]") == "kept text"
    assert env("GET", "/features/seats") == made
    page.fill("#settings input[name=name]", "Seats in use")
    page.fill("#settings input[name=trait_key]", "seats")
    _submit(page, "#settings button[name=save]")
    saved = env("GET", "/features/seats")
    assert (saved["name"], saved["trait_key"], saved["description"]) == (
        "Seats in use",
        "seats",
        "kept text",
    )

    # deleted from the list, asked first: the flag gating it then gates nothing
    page.goto(f"{base_url}/console/features?env={env.id}")
    page.on("dialog", lambda dialog: dialog.accept())
    _submit(page, "tr[data-feature=exports] button[name=delete]")
    assert [f["id"] for f in env("GET", "/features")] == ["seats"]
    assert env("GET", "/flags/exporting")["feature_id"] is None
    assert env("GET", "/entitlements") == []
    assert page.locator("tr[data-feature]").count() == 1


# -- plans and entitlements --------------------------------------------------------------------


def test_plans_and_their_entitlements_decide_the_flag(
    page: Page, base_url: str, flags_env: FlagsEnv
) -> None:
    env = flags_env
    _metered(env)
    browser_login(page, base_url, env.key)
    page.goto(f"{base_url}/console/plans?env={env.id}")
    assert "No plans in prod yet" in page.inner_text("table.plans")

    form = "#new-plan"
    page.fill(f"{form} input[name=id]", "no way")
    page.fill(f"{form} input[name=name]", "Pro")
    assert _submit(page, f"{form} button[name=create]") == 422
    assert "Id: may hold letters" in page.inner_text(f"{form} .problems")
    assert page.input_value(f"{form} input[name=name]") == "Pro"
    assert env("GET", "/plans") == []
    page.fill(f"{form} input[name=id]", "pro")
    _submit(page, f"{form} button[name=create]")
    assert env("GET", "/plans/pro")["name"] == "Pro"
    env("POST", "/companies", json={"keys": {"id": "acme"}, "plan_id": "pro"})
    assert _check(env, "exporting") == (False, "DEFAULT")

    # an entitlement whose limit is no number: inline, kept, nothing made; then a good one
    new = "form.grant-new"
    page.select_option(f"{new} select[name=feature_id]", "exports")
    page.select_option(f"{new} select[name=value_type]", "numeric")
    page.fill(f"{new} input[name=value_numeric]", "ten")
    page.select_option(f"{new} select[name=metric_period]", "current_month")
    assert _submit(page, f"{new} button[value=save]") == 422
    assert "Limit:" in page.inner_text("#entitlements .problems")
    assert page.input_value(f"{new} input[name=value_numeric]") == "ten"
    assert page.input_value(f"{new} select[name=metric_period]") == "current_month"
    page.fill(f"{new} input[name=value_numeric]", "")
    assert _submit(page, f"{new} button[value=save]") == 422
    assert "Limit: a grant up to a limit needs the limit." in page.inner_text(
        "#entitlements .problems"
    )
    assert env("GET", "/entitlements") == []
    page.fill(f"{new} input[name=value_numeric]", "2")
    _submit(page, f"{new} button[value=save]")
    (made,) = env("GET", "/entitlements")
    assert (made["plan_id"], made["feature_id"], made["value_numeric"]) == ("pro", "exports", 2)
    assert "on, up to 2 per month" in page.inner_text("tr[data-feature=exports]")
    assert _check(env, "exporting") == (True, "PLAN_ENTITLEMENT")

    # changed to off: the check says so
    row = "tr[data-feature=exports]"
    page.click(f"{row} details > summary")
    page.select_option(f"{row} select[name=value_type]", "boolean")
    page.select_option(f"{row} select[name=value_bool]", "off")
    _submit(page, f"{row} button[value=save]")
    assert env("GET", f"/entitlements/{made['id']}")["value_bool"] is False
    assert _check(env, "exporting") == (False, "PLAN_ENTITLEMENT")

    # renamed; a name too long is refused with the text kept
    page.fill("#settings input[name=description]", "For teams")
    page.fill("#settings input[name=name]", "x" * 5000)
    assert _submit(page, "#settings button[name=save]") == 422
    assert page.input_value("#settings input[name=description]") == "For teams"
    assert env("GET", "/plans/pro")["name"] == "Pro"
    page.fill("#settings input[name=name]", "Pro (2026)")
    _submit(page, "#settings button[name=save]")
    assert env("GET", "/plans/pro")["description"] == "For teams"
    assert page.inner_text("h1").startswith("Pro (2026)")

    # the entitlement removed, then the plan deleted (both asked first)
    page.on("dialog", lambda dialog: dialog.accept())
    _submit(page, f"{row} button[value=delete]")
    assert env("GET", "/entitlements") == []
    assert _check(env, "exporting") == (False, "DEFAULT")
    _submit(page, "#settings button[name=delete]")
    assert env("GET", "/plans") == []
    assert env("GET", "/companies")[0]["plan_id"] is None
    assert page.url.startswith(f"{base_url}/console/plans?")


# -- company overrides -------------------------------------------------------------------------


def test_company_overrides_made_on_the_flag_page_change_the_check(
    page: Page, base_url: str, flags_env: FlagsEnv
) -> None:
    env = flags_env
    _metered(env)
    assert _check(env, "exporting") == (False, "DEFAULT")
    browser_login(page, base_url, env.key)
    page.goto(f"{base_url}/console/flags/exporting?env={env.id}")
    add = "#plans details.override-add"
    page.click(f"{add} > summary")

    # errors: inline, the company's keys kept, nothing made
    page.fill(f"{add} input[name=company]", "id=acme")
    page.select_option(f"{add} select[name=value_type]", "numeric")
    assert _submit(page, f"{add} button[value=override]") == 422
    assert "Limit: a grant up to a limit needs the limit." in page.inner_text("#plans .problems")
    assert page.input_value(f"{add} input[name=company]") == "id=acme"
    page.fill(f"{add} input[name=value_numeric]", "5")
    page.fill(f"{add} input[name=until]", "next week")
    assert _submit(page, f"{add} button[value=override]") == 422
    assert "Until: “next week” is not a date" in page.inner_text("#plans .problems")
    page.fill(f"{add} input[name=until]", "")
    page.fill(f"{add} input[name=company]", "id=nobody")
    assert _submit(page, f"{add} button[value=override]") == 404
    assert "No company with keys" in page.inner_text("#plans .problems")
    assert page.input_value(f"{add} input[name=company]") == "id=nobody"
    assert env("GET", "/overrides") == []

    page.fill(f"{add} input[name=company]", "acme")  # a bare value is the id key
    page.select_option(f"{add} select[name=value_type]", "boolean")
    page.fill(f"{add} input[name=until]", "2999-01-01")
    _submit(page, f"{add} button[value=override]")
    (made,) = env("GET", "/overrides")
    assert (made["feature_id"], made["value_type"]) == ("exports", "boolean")
    assert made["expires_at"].startswith("2999-01-01T00:00:00")
    assert _check(env, "exporting") == (True, "COMPANY_OVERRIDE")
    row = page.inner_text(f"tr[data-override={made['id']}]")
    assert "Acme (id=acme)" in row and "2999-01-01 00:00 UTC" in row

    page.on("dialog", lambda dialog: dialog.accept())
    _submit(page, f"tr[data-override={made['id']}] button[value=delete-override]")
    assert env("GET", "/overrides") == []
    assert _check(env, "exporting") == (False, "DEFAULT")


def test_company_overrides_on_the_feature_page(
    page: Page, base_url: str, flags_env: FlagsEnv
) -> None:
    env = flags_env
    _metered(env)
    env("POST", "/plans", 201, json={"id": "pro"})
    grant = {"plan_id": "pro", "feature_id": "exports", "value_type": "boolean"}
    env("POST", "/entitlements", 201, json={**grant, "value_bool": False})
    env("POST", "/companies", json={"keys": {"id": "acme"}, "plan_id": "pro"})
    assert _check(env, "exporting") == (False, "PLAN_ENTITLEMENT")
    browser_login(page, base_url, env.key)
    page.goto(f"{base_url}/console/features/exports?env={env.id}")
    assert "exporting" in page.inner_text("#gating")
    assert "off" in page.inner_text("#plans tr[data-plan=pro]")

    form = "#overrides form.override-new"
    page.fill(f"{form} input[name=company]", "id=" + "x" * 300)
    assert _submit(page, f"{form} button[value=override]") == 422
    assert "Company: key names and values must be 1 to 255 characters" in page.inner_text(
        "#overrides .problems"
    )
    page.fill(f"{form} input[name=company]", "id=acme")
    page.select_option(f"{form} select[name=value_type]", "unlimited")
    _submit(page, f"{form} button[value=override]")
    (made,) = env("GET", "/overrides")
    assert made["value_type"] == "unlimited"
    assert _check(env, "exporting") == (True, "COMPANY_OVERRIDE")
    assert "on, unlimited" in page.inner_text(f"tr[data-override={made['id']}]")

    # a second override of the same company is the service's conflict, inline
    page.fill(f"{form} input[name=company]", "id=acme")
    assert _submit(page, f"{form} button[value=override]") == 409
    assert "already has an override" in page.inner_text("#overrides .problems")

    page.on("dialog", lambda dialog: dialog.accept())
    _submit(page, f"tr[data-override={made['id']}] button[value=delete]")
    assert env("GET", "/overrides") == []
    assert _check(env, "exporting") == (False, "PLAN_ENTITLEMENT")


# -- not found, read-only ----------------------------------------------------------------------


def test_unknown_features_and_plans_are_not_found_pages(base_url: str, flags_env: FlagsEnv) -> None:
    env = flags_env
    with console_client(base_url, env.key) as http:
        for path, title, code in (
            ("features/nope", "Feature", "feature_not_found"),
            ("plans/nope", "Plan", "plan_not_found"),
        ):
            r = http.get(f"/console/{path}?env={env.id}")
            assert r.status_code == 404, path
            assert f"<h1>{title}</h1>" in r.text and code in r.text
            assert 'aria-current="page">Flags' in r.text
            csrf = form_token(r.text)
            r = http.post(f"/console/{path}/save?env={env.id}", data={"csrf": csrf})
            assert r.status_code == 404 and f"<h1>{title}</h1>" in r.text
        assert "<h1>Features</h1>" in http.get(f"/console/features?env={env.id}").text
        assert "<h1>Plans</h1>" in http.get(f"/console/plans?env={env.id}").text


def _state(env: FlagsEnv) -> list[Any]:
    return [env("GET", path) for path in ("/features", "/plans", "/entitlements", "/overrides")]


def test_read_only_keys_see_no_controls_and_change_nothing(
    page: Page, base_url: str, flags_env: FlagsEnv
) -> None:
    env = flags_env
    _metered(env)
    env("POST", "/plans", 201, json={"id": "pro"})
    grant = {"plan_id": "pro", "feature_id": "exports", "value_type": "unlimited"}
    entitlement = env("POST", "/entitlements", 201, json=grant)["id"]
    override = {"company": {"id": "acme"}, "feature_id": "exports", "value_type": "boolean"}
    override_id = env("POST", "/overrides", 201, json=override)["id"]
    reader = env.bound_key(scope="read")
    browser_login(page, base_url, reader)
    for path in ("features", "features/exports", "plans", "plans/pro", "flags/exporting"):
        page.goto(f"{base_url}/console/{path}?env={env.id}")
        assert page.locator("main form[method=post]").count() == 0, path
    page.goto(f"{base_url}/console/plans/pro?env={env.id}")
    assert "on, unlimited" in page.inner_text("tr[data-feature=exports]")

    before = _state(env)
    posts = {
        "features/new": {"id": "mine"},
        "features/exports/save": {"name": "Mine"},
        "features/exports/delete": {},
        "features/exports/override": {"company": "id=acme", "value_type": "boolean"},
        "features/exports/override#delete": {"do": "delete", "override_id": override_id},
        "plans/new": {"id": "mine"},
        "plans/pro/save": {"name": "Mine"},
        "plans/pro/delete": {},
        "plans/pro/grant": {"entitlement_id": entitlement, "do": "delete"},
        "flags/exporting/grant": {
            "do": "override",
            "company": "id=acme",
            "value_type": "boolean",
        },
    }
    with console_client(base_url, reader) as http:
        csrf = form_token(http.get(f"/console/flags?env={env.id}").text)
        for path, data in posts.items():
            url = f"/console/{path.partition('#')[0]}?env={env.id}"
            r = http.post(url, data={"csrf": csrf, **data})
            assert r.status_code == 403, (path, r.status_code)
            assert "read-only" in r.text, path
    assert _state(env) == before


def test_flags_keyed_like_the_catalog_pages_stay_flags(base_url: str, flags_env: FlagsEnv) -> None:
    for key in ("features", "plans"):
        flags_env("POST", "/flags", 201, json={"key": key, "name": f"The {key} flag"})
    with console_client(base_url, flags_env.key) as http:
        for key in ("features", "plans"):
            page = http.get(f"/console/flags/{key}", params={"env": flags_env.id})
            assert page.status_code == 200 and f"The {key} flag" in page.text, key
            assert f'action="/console/flags/{key}/save' in page.text
