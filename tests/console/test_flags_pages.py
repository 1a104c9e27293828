"""The flags pages as a product, in headless Chromium and over plain HTTP: what each flag
answers, the for-everyone switch, every rule made through the API read and edited
(forms and JSON), errors shown inline with the input kept (422), the not-found page, the
Evaluate panel, plans and entitlements, the audit log as diffs, and read-only keys.
Results are checked through the API."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page

from conftest import FlagsEnv
from console._helpers import browser_login, console_client, follow, form_token

EVERY_KIND = [
    {
        "id": "listed",
        "name": "Listed people",
        "value": True,
        "conditions": [
            {
                "condition_type": "actor_list",
                "actor_entity": "user",
                "actors": [{"email": "ada@example.com"}, {"id": "u7"}],
            }
        ],
    },
    {
        "id": "rollout",
        "value": True,
        "conditions": [{"condition_type": "rollout", "actor_key": "email", "percentage": 25}],
    },
    {
        "id": "gold",
        "value": True,
        "priority": 5,
        "conditions": [
            {
                "condition_type": "trait",
                "trait_key": "tier",
                "operator": "eq",
                "trait_value": "gold",
            },
            {"condition_type": "plan", "operator": "ne", "resource_ids": ["free"]},
            {
                "condition_type": "metric",
                "event_name": "api-call",
                "metric_period": "current_month",
                "operator": "lt",
                "metric_value": 1000,
            },
        ],
        "condition_groups": [
            {
                "conditions": [
                    {"condition_type": "company", "resource_ids": ["comp_1"]},
                    {"condition_type": "user", "operator": "ne", "resource_ids": ["user_9"]},
                ]
            }
        ],
    },
    {
        "id": "old-flypper",
        "value": True,
        "conditions": [
            {"condition_type": "flypper_rollout", "actor_key": "user_id", "percentage": 12.5}
        ],
    },
]

TIER = {"condition_type": "trait", "trait_key": "tier", "operator": "eq", "trait_value": "gold"}
GOLD = {"id": "gold", "name": "Gold", "value": True, "conditions": [TIER]}


def _flag(env: FlagsEnv, key: str, **body: Any) -> None:
    env("POST", "/flags", 201, json={"key": key, **body})


def _rules(env: FlagsEnv, key: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = env("GET", f"/flags/{key}/rules")
    return found


def _open_flag(page: Page, base_url: str, env: FlagsEnv, key: str) -> None:
    page.goto(f"{base_url}/console/flags/{key}?env={env.id}")


def _submit(page: Page, selector: str) -> int:
    """Click a submit button; the status of the page it leads to."""
    with page.expect_navigation() as answer:
        page.click(selector)
    response = answer.value
    assert response is not None
    return response.status


# -- 1. the list says what each flag answers ---------------------------------------------------


def test_the_list_says_what_each_flag_answers(
    page: Page, base_url: str, flags_env: FlagsEnv
) -> None:
    env = flags_env
    _flag(env, "plain")
    _flag(env, "always", default_value=True)
    _flag(env, "gold-only", rules=[GOLD])
    _flag(env, "killed", rules=[{"rule_type": "global_override", "value": False}, EVERY_KIND[0]])
    browser_login(page, base_url, env.key)
    page.goto(f"{base_url}/console/flags?env={env.id}")

    def state(key: str) -> str:
        return page.inner_text(f"tr[data-flag={key}] .state")

    assert state("plain") == "off for everyone"
    assert state("always") == "on for everyone"
    assert state("gold-only") == "on by rules (1)"
    assert state("killed") == "off for everyone"
    assert "switched" in page.inner_text("tr[data-flag=killed]")

    # off for everyone beats a rule that turns it on; the rules come back afterwards
    env("POST", "/companies", 201, json={"keys": {"id": "acme"}, "traits": {"tier": "gold"}})
    check = {"company": {"id": "acme"}}
    assert env("POST", "/flags/gold-only/check", json=check)["value"] is True
    page.on("dialog", lambda dialog: dialog.accept())
    follow(page, "tr[data-flag=gold-only] button[value=off]")
    assert state("gold-only") == "off for everyone"
    answer = env("POST", "/flags/gold-only/check", json=check)
    assert (answer["value"], answer["reason"]) == (False, "GLOBAL_OVERRIDE")
    assert [r["id"] for r in _rules(env, "gold-only")] == ["everyone", "gold"]
    follow(page, "tr[data-flag=gold-only] button[value=rules]")
    assert state("gold-only") == "on by rules (1)"
    assert [r["id"] for r in _rules(env, "gold-only")] == ["gold"]
    assert env("POST", "/flags/gold-only/check", json=check)["reason"] == "RULE_MATCH"
    # the API's own global override is replaced by the switch, not stacked
    follow(page, "tr[data-flag=killed] button[value=on]")
    first = _rules(env, "killed")[0]
    assert (first["rule_type"], first["value"]) == ("global_override", True)
    assert sum(r["rule_type"] == "global_override" for r in _rules(env, "killed")) == 1


# -- 2. every rule is readable and editable ----------------------------------------------------


def test_rules_made_through_the_api_are_read_and_edited(
    page: Page, base_url: str, flags_env: FlagsEnv
) -> None:
    env = flags_env
    _flag(env, "wide", rules=EVERY_KIND)
    before = {r["id"]: r for r in _rules(env, "wide")}
    browser_login(page, base_url, env.key)
    _open_flag(page, base_url, env, "wide")
    assert page.locator("article.rule").count() == 4
    text = page.inner_text("#rules")
    for sentence in (
        "the user is listed: email=ada@example.com; id=u7",
        "25% of users, picked by their email",
        "the company's trait tier is “gold”",
        "the company's plan is not one of: free",
        "the company's number of “api-call” events this month is less than 1000",
        "the company's id is one of: comp_1",
        "the user's id is not one of: user_9",
        "12.5% of actors, picked as flypper does, by user_id",
    ):
        assert sentence in text, sentence
    assert "other rule" not in text  # nothing hidden

    # edit one condition of the rule with three: the others stay as they were
    rule = "article[data-rule=gold]"
    page.click(f"{rule} details.edit:first-of-type > summary")
    page.fill(f"{rule} [name='c0.trait_value']", "platinum")
    assert _submit(page, f"{rule} button[value=save]") == 200
    gold = next(r for r in _rules(env, "wide") if r["id"] == "gold")
    assert gold["conditions"][0]["trait_value"] == "platinum"
    assert gold["conditions"][1:] == before["gold"]["conditions"][1:]  # ids kept too
    assert gold["condition_groups"] == before["gold"]["condition_groups"]
    assert gold["priority"] == 5

    # add an alternative to its group, then remove the plan condition
    page.click(f"{rule} details.edit:first-of-type > summary")
    page.select_option(f"{rule} select[name=add_kind]", "trait")
    page.select_option(f"{rule} select[name=add_where]", "g0.")
    assert _submit(page, f"{rule} button[value=add]") == 200
    assert "Fill in the new condition" in page.inner_text(rule)
    page.fill(f"{rule} [name='g0.c2.trait_key']", "beta")
    page.fill(f"{rule} [name='g0.c2.trait_value']", "true")
    page.check(f"{rule} [name='c1.remove']")
    _submit(page, f"{rule} button[value=save]")
    gold = next(r for r in _rules(env, "wide") if r["id"] == "gold")
    assert [c["condition_type"] for c in gold["conditions"]] == ["trait", "metric"]
    added = gold["condition_groups"][0]["conditions"][2]
    assert (added["trait_key"], added["trait_value"]) == ("beta", True)

    # edit another as JSON; remove a third
    rule = "article[data-rule=rollout]"
    page.click(f"{rule} details.edit:nth-of-type(2) > summary")
    page.fill(
        f"{rule} textarea[name=json]",
        '{"value": false, "conditions": [{"condition_type": "rollout", "percentage": 50}]}',
    )
    _submit(page, f"{rule} .json-form button")
    rollout = next(r for r in _rules(env, "wide") if r["id"] == "rollout")
    assert (rollout["value"], rollout["conditions"][0]["percentage"]) == (False, 50)
    page.on("dialog", lambda dialog: dialog.accept())
    _submit(page, "article[data-rule=old-flypper] button[value=delete]")
    assert [r["id"] for r in _rules(env, "wide")] == ["listed", "rollout", "gold"]

    # a new rule as JSON
    page.click("#add-rule-json > summary")
    page.fill(
        "#add-rule-json textarea",
        '{"id": "pros", "value": true, "conditions": [{"condition_type": "plan",'
        ' "resource_ids": ["pro"]}]}',
    )
    _submit(page, "#add-rule-json button")
    assert _rules(env, "wide")[-1]["id"] == "pros"
    assert "the company's plan is one of: pro" in page.inner_text("article[data-rule=pros]")


# -- 3. errors inline, input kept, 422 ---------------------------------------------------------


def test_a_bad_rollout_is_shown_next_to_its_form_with_the_input_kept(
    page: Page, base_url: str, flags_env: FlagsEnv
) -> None:
    env = flags_env
    _flag(env, "ramp", rules=[EVERY_KIND[1]])
    before = _rules(env, "ramp")
    browser_login(page, base_url, env.key)
    _open_flag(page, base_url, env, "ramp")
    rule = "article[data-rule=rollout]"
    page.click(f"{rule} details.edit:first-of-type > summary")
    page.fill(f"{rule} [name='c0.percentage']", "150")
    page.fill(f"{rule} [name=name]", "Half the users")
    assert _submit(page, f"{rule} button[value=save]") == 422
    problems = page.inner_text(f"{rule} .problems")
    assert "Condition 1, percentage (0 to 100): must be at most 100." in problems
    assert "pydantic" not in page.content() and "less_than_equal" not in page.content()
    assert page.input_value(f"{rule} [name='c0.percentage']") == "150"
    assert page.input_value(f"{rule} [name=name]") == "Half the users"
    assert _rules(env, "ramp") == before  # nothing saved

    # the same in the JSON editor, and JSON that is no JSON
    page.click(f"{rule} details.edit:nth-of-type(2) > summary")
    typed = '{"value": true, "conditions": [{"condition_type": "rollout", "percentage": 150}]}'
    page.fill(f"{rule} textarea[name=json]", typed)
    assert _submit(page, f"{rule} .json-form button") == 422
    assert "must be at most 100" in page.inner_text(f"{rule} .json-form .problems")
    assert page.input_value(f"{rule} textarea[name=json]") == typed
    page.fill(f"{rule} textarea[name=json]", "{nope")
    assert _submit(page, f"{rule} .json-form button") == 422
    assert "This is not valid JSON" in page.inner_text(f"{rule} .json-form .problems")
    assert _rules(env, "ramp") == before

    # a new rule with a percentage that is not a number
    page.click("#add-rule > summary")
    page.select_option("#add-rule select[name=add_kind]", "rollout")
    _submit(page, "#add-rule button[value=add]")
    page.fill("#add-rule [name='c0.percentage']", "lots")
    assert _submit(page, "#add-rule button[value=save]") == 422
    assert "“lots” is not a number" in page.inner_text("#add-rule .problems")
    assert page.input_value("#add-rule [name='c0.percentage']") == "lots"
    assert _rules(env, "ramp") == before


def test_settings_and_new_flags_keep_their_input_on_errors(
    base_url: str, flags_env: FlagsEnv
) -> None:
    env = flags_env
    _flag(env, "named")
    with console_client(base_url, env.key) as http:
        csrf = form_token(http.get(f"/console/flags?env={env.id}").text)
        r = http.post(
            f"/console/flags/named/save?env={env.id}",
            data={"csrf": csrf, "name": "x" * 5000, "description": "kept text"},
        )
        assert r.status_code == 422 and "kept text" in r.text
        assert "This was not saved" in r.text
        r = http.post(
            f"/console/flags/new?env={env.id}",
            data={"csrf": csrf, "key": "bad key!", "name": "Mine"},
        )
        assert r.status_code == 422 and 'value="bad key!"' in r.text and 'value="Mine"' in r.text
    assert env("GET", "/flags/named")["name"] == ""
    assert [f["key"] for f in env("GET", "/flags")] == ["named"]


# -- 5. unknown flags ---------------------------------------------------------------------------


def test_an_unknown_flag_is_a_not_found_page_of_the_flags_section(
    base_url: str, flags_env: FlagsEnv
) -> None:
    with console_client(base_url, flags_env.key) as http:
        r = http.get(f"/console/flags/nope?env={flags_env.id}")
        assert r.status_code == 404
        assert "<h1>Flag</h1>" in r.text and "Audit log</h1>" not in r.text
        assert 'href="/console/flags?env=' in r.text and 'aria-current="page">Flags' in r.text
        assert "flag_not_found" in r.text
        csrf = form_token(r.text)
        r = http.post(f"/console/flags/nope/rule?env={flags_env.id}", data={"csrf": csrf})
        assert r.status_code == 404 and "<h1>Flag</h1>" in r.text


# -- 6. Evaluate --------------------------------------------------------------------------------


def test_the_evaluate_panel_answers_as_the_check_api(
    page: Page, base_url: str, flags_env: FlagsEnv
) -> None:
    env = flags_env
    tier = EVERY_KIND[2]["conditions"][0]
    _flag(
        env,
        "gold-only",
        rules=[{"id": "gold", "name": "Gold", "value": True, "conditions": [tier]}],
    )
    env("POST", "/companies", 201, json={"keys": {"id": "acme"}, "traits": {"tier": "gold"}})
    browser_login(page, base_url, env.key)
    _open_flag(page, base_url, env, "gold-only")
    page.fill("#evaluate input[name=company]", "id=acme")
    _submit(page, "#evaluate button")
    verdict = page.locator(".verdict")
    assert verdict.get_attribute("data-value") == "on"
    assert verdict.get_attribute("data-reason") == "RULE_MATCH"
    assert "a rule matched, rule Gold" in verdict.inner_text()
    assert "tier=“gold”" in verdict.inner_text()
    api = env("POST", "/flags/gold-only/check", json={"company": {"id": "acme"}})
    assert (api["value"], api["reason"], api["rule_id"]) == (True, "RULE_MATCH", "gold")

    page.fill("#evaluate input[name=company]", "unknown-co")
    page.fill("#evaluate input[name=user]", "email=ada@example.com")
    _submit(page, "#evaluate button")
    assert verdict.get_attribute("data-reason") == "DEFAULT"
    assert "No company has these keys" in verdict.inner_text()
    assert "No user has these keys" in verdict.inner_text()

    page.fill("#evaluate input[name=company]", "id=" + "x" * 300)
    assert _submit(page, "#evaluate button") == 422
    assert "Company: key names and values must be 1 to 255 characters" in page.inner_text(
        "#evaluate .problems"
    )
    assert page.input_value("#evaluate input[name=user]") == "email=ada@example.com"


# -- 7. plans, entitlements, usage ---------------------------------------------------------------


def test_plans_grant_the_flag_feature(page: Page, base_url: str, flags_env: FlagsEnv) -> None:
    env = flags_env
    env(
        "POST",
        "/features",
        201,
        json={"id": "exports", "feature_type": "event", "event_name": "export"},
    )
    env("POST", "/plans", 201, json={"id": "pro", "name": "Pro"})
    env("POST", "/plans", 201, json={"id": "free", "name": "Free"})
    _flag(env, "exporting")
    env("POST", "/companies", 201, json={"keys": {"id": "acme"}, "plan_id": "pro"})
    env(
        "POST",
        "/events",
        json={"events": [{"event_type": "track", "event": "export", "company": {"id": "acme"}}]},
    )
    browser_login(page, base_url, env.key)
    _open_flag(page, base_url, env, "exporting")
    assert "gates no feature" in page.inner_text("#plans")
    page.select_option("#settings select[name=feature_id]", "exports")
    _submit(page, "#settings button[name=save]")
    assert env("GET", "/flags/exporting")["feature_id"] == "exports"
    assert "nothing (not entitled)" in page.inner_text("tr[data-plan=pro]")

    # a limit that is no number: inline, kept; then a good one
    form = "form.grant-new"
    page.select_option(f"{form} select[name=plan_id]", "pro")
    page.select_option(f"{form} select[name=value_type]", "numeric")
    page.fill(f"{form} input[name=value_numeric]", "ten")
    page.select_option(f"{form} select[name=metric_period]", "current_month")
    assert _submit(page, f"{form} button") == 422
    assert "Limit" in page.inner_text("#plans .problems")
    assert page.input_value(f"{form} input[name=value_numeric]") == "ten"
    assert env("GET", "/entitlements") == []
    page.fill(f"{form} input[name=value_numeric]", "10")
    _submit(page, f"{form} button")
    (made,) = env("GET", "/entitlements")
    assert (made["plan_id"], made["value_numeric"], made["metric_period"]) == (
        "pro",
        10,
        "current_month",
    )
    assert "on, up to 10 per month" in page.inner_text("tr[data-plan=pro]")
    assert page.inner_text("#rules h2") == "Rules (0)"
    assert page.inner_text("h1 .state") == "on by plans"

    # Evaluate shows the plan's grant and the usage against it
    page.fill("#evaluate input[name=company]", "acme")
    _submit(page, "#evaluate button")
    verdict = page.inner_text(".verdict")
    assert "the company's plan grants the flag's feature" in verdict
    assert "Usage: 1 of 10 this month" in verdict
    assert "export" in page.inner_text("table.metrics")

    page.click("tr[data-plan=pro] details > summary")
    page.select_option("tr[data-plan=pro] select[name=value_type]", "unlimited")
    _submit(page, "tr[data-plan=pro] details button[value=save]")
    assert env("GET", f"/entitlements/{made['id']}")["value_type"] == "unlimited"
    assert "on, unlimited" in page.inner_text("tr[data-plan=pro]")
    page.on("dialog", lambda dialog: dialog.accept())
    _submit(page, "tr[data-plan=pro] button[value=delete]")
    assert env("GET", "/entitlements") == []


# -- 4. the audit log ---------------------------------------------------------------------------


def test_the_audit_log_shows_what_changed(page: Page, base_url: str, flags_env: FlagsEnv) -> None:
    env = flags_env
    _flag(env, "audited", rules=[EVERY_KIND[1]])
    env("PATCH", "/flags/audited", json={"name": "Audited"})
    changed = {
        **EVERY_KIND[1],
        "conditions": [{**EVERY_KIND[1]["conditions"][0], "percentage": 60}],
    }
    env("PUT", "/flags/audited/rules/rollout", json=changed)
    for n in range(7):
        env("PATCH", "/flags/audited", json={"description": f"take {n}"})
    browser_login(page, base_url, env.key)
    page.goto(f"{base_url}/console/audit?env={env.id}&flag=audited")
    entries = page.locator("tr.audit-entry")
    assert entries.count() == 10
    rows = page.inner_text("table.audit")
    assert "name\t“”\t→\tAudited" in rows
    assert "condition 1\t25% of users, picked by their email\t→\t60% of users" in rows
    assert "description\ttake 5\t→\ttake 6" in rows
    assert '{"' not in rows and "updated_at" not in rows
    box = page.locator("table.audit").bounding_box()
    assert box is not None and box["height"] < 900  # ten entries, compact


# -- read-only keys ------------------------------------------------------------------------------


def test_read_only_keys_see_no_edit_controls_and_change_nothing(
    page: Page, base_url: str, flags_env: FlagsEnv
) -> None:
    env = flags_env
    env("POST", "/features", 201, json={"id": "reports"})
    env("POST", "/plans", 201, json={"id": "pro"})
    _flag(env, "beta", rules=EVERY_KIND[:2], feature_id="reports")
    reader = env.bound_key(scope="read")
    browser_login(page, base_url, reader)
    _open_flag(page, base_url, env, "beta")
    assert page.locator("article.rule").count() == 2
    assert page.locator("main form[method=post]").count() == 0
    assert page.locator("#evaluate button").count() == 1  # reading is allowed
    before = (env("GET", "/flags/beta"), _rules(env, "beta"))
    url = f"/console/flags/beta/{{}}?env={env.id}"
    posts = {
        "everyone": {"to": "on"},
        "toggle": {},
        "save": {"name": "Mine"},
        "rule": {"rule_id": "listed", "do": "delete"},
        "rule-json": {"rule_id": "", "json": '{"value": true}'},
        "grant": {"entitlement_id": "", "plan_id": "pro"},
        "delete": {},
    }
    with console_client(base_url, reader) as http:
        csrf = form_token(http.get(f"/console/flags?env={env.id}").text)
        for action, data in posts.items():
            r = http.post(url.format(action), data={"csrf": csrf, **data})
            assert r.status_code == 403, (action, r.status_code)
            assert "read-only" in r.text, action
    assert (env("GET", "/flags/beta"), _rules(env, "beta")) == before
    assert env("GET", "/entitlements") == []
