"""``millpond flags`` and ``millpond companies`` against the session's server: JSON and
tables, the environment option, rules as JSON, confirmation, usage errors."""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import Cli, unique

GOLD = [
    {
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
]


@pytest.fixture
def env(user_cli: tuple[str, Cli], base_url: str) -> tuple[str, Cli]:
    _, cli = user_cli
    r = httpx.post(
        f"{base_url}/v1/flags/environments",
        json={"name": unique("cli-flags")},
        headers={"Authorization": f"Bearer {cli.key}"},
    )
    assert r.status_code == 201, r.text
    return r.json()["id"], cli


def test_flag_lifecycle(env: tuple[str, Cli]) -> None:
    env_id, cli = env
    e = ["-e", env_id]
    made = cli.json("flags", "create", "gold", *e, "--name", "Gold", "--rules", json.dumps(GOLD))
    assert made["key"] == "gold" and made["default_value"] is False
    assert cli.json("flags", "toggle", "gold", *e)["default_value"] is True
    assert (
        cli.json("flags", "update", "gold", *e, "--off", "--description", "d")["description"] == "d"
    )
    assert [f["key"] for f in cli.json("flags", "list", *e)] == ["gold"]
    table = cli.ok("flags", "list", *e, table=True).stdout
    assert "KEY" in table and "gold" in table and "off" in table
    cli.ok("companies", "upsert", "id=acme", *e, "--traits", '{"tier": "gold"}')
    checked = cli.json("flags", "check", "gold", *e, "--company", "id=acme")
    assert (checked["value"], checked["reason"]) == (True, "RULE_MATCH")
    every = cli.json("flags", "check", *e, "--company", "id=other")
    assert [(c["flag"], c["value"]) for c in every] == [("gold", False)]
    assert cli.json("flags", "delete", "gold", *e, "--yes") == {"deleted": "gold"}
    assert cli.json("flags", "list", *e) == []
    assert cli.json("flags", "list", *e, "--deleted")[0]["deleted_at"]
    assert cli.json("flags", "get", "gold", *e)["deleted_at"]
    assert cli.json("flags", "restore", "gold", *e)["deleted_at"] is None
    cli.ok("flags", "delete", "gold", *e, "--yes")
    assert cli.json("flags", "purge", "gold", *e, "--yes") == {"purged": "gold"}
    assert cli.json("flags", "list", *e, "--deleted") == []


def test_companies(env: tuple[str, Cli]) -> None:
    env_id, cli = env
    e = ["-e", env_id]
    made = cli.json("companies", "upsert", "id=acme", "domain=acme.net", *e, "--name", "Acme")
    assert made["keys"] == {"id": "acme", "domain": "acme.net"}
    assert cli.json("companies", "get", "domain=acme.net", *e)["id"] == made["id"]
    assert [c["id"] for c in cli.json("companies", "list", *e, "--q", "acm")] == [made["id"]]
    assert "acme.net" in cli.ok("companies", "list", *e, table=True).stdout
    assert cli.json("companies", "list", *e, "--users") == []
    assert cli.json("companies", "delete", made["id"], *e, "--yes") == {"deleted": made["id"]}
    missing = cli("companies", "get", "id=acme", *e)
    assert missing.exit_code == 1 and "company_not_found" in missing.stderr


def test_environment_from_a_bound_key_or_the_variable(env: tuple[str, Cli]) -> None:
    env_id, cli = env
    cli.ok("flags", "create", "beta", "-e", env_id, "--on")
    bound = httpx.post(
        f"{cli.url}/v1/flags/environments/{env_id}/keys",
        json={"scope": "read"},
        headers={"Authorization": f"Bearer {cli.key}"},
    ).json()["secret"]
    assert cli.as_(bound).json("flags", "check", "beta")["value"] is True
    with_env = Cli(cli.url, cli.key, cli.empty_dir, {**cli.env, "MILLPOND_ENVIRONMENT": env_id})
    assert [f["key"] for f in with_env.json("flags", "list")] == ["beta"]
    # an account key without an environment: the check cannot be made, exit 1
    failed = cli("flags", "check", "beta")
    assert failed.exit_code == 1 and "environment" in failed.stderr
    every = cli("flags", "check")  # every flag: an error too, never an empty list
    assert every.exit_code == 1 and "environment" in every.stderr and every.stdout == ""


def test_a_flag_gates_a_feature(env: tuple[str, Cli]) -> None:
    env_id, cli = env
    e = ["-e", env_id]
    r = httpx.post(
        f"{cli.url}/v1/flags/environments/{env_id}/features",
        json={"id": "api"},
        headers={"Authorization": f"Bearer {cli.key}"},
    )
    assert r.status_code == 201, r.text
    cli.ok("flags", "create", "api-access", *e)
    assert cli.json("flags", "update", "api-access", *e, "--feature", "api")["feature_id"] == "api"
    assert cli.json("flags", "update", "api-access", *e, "--name", "A")["feature_id"] == "api"
    cleared = cli.json("flags", "update", "api-access", *e, "--no-feature")
    assert cleared["feature_id"] is None and cleared["name"] == "A"
    both = cli("flags", "update", "api-access", *e, "--feature", "api", "--no-feature")
    assert both.exit_code == 2 and "not both" in both.stderr
    unknown = cli("flags", "update", "api-access", *e, "--feature", "nope")
    assert unknown.exit_code == 1 and "feature_not_found" in unknown.stderr


def test_usage_errors(env: tuple[str, Cli]) -> None:
    env_id, cli = env
    e = ["-e", env_id]
    for args, message in [
        (["flags", "create", "x", *e, "--rules", "{nope"], "--rules must be JSON"),
        (["flags", "create", "x", *e, "--rules", '{"a": 1}'], "JSON array of rule objects"),
        (["flags", "check", "x", *e, "--company", "acme"], "NAME=VALUE"),
        (["companies", "upsert", "id=a", *e, "--traits", "[1]"], "JSON object"),
    ]:
        result = cli(*args)
        assert result.exit_code == 2 and message in result.stderr, (args, result.stderr)
    refused = cli("flags", "delete", "x", *e)  # no terminal, no --yes
    assert refused.exit_code == 1 and "--yes" in refused.stderr
    unknown = cli("flags", "get", "nope", *e)
    assert unknown.exit_code == 1 and "flag_not_found" in unknown.stderr
    bad_rule = cli("flags", "create", "x", *e, "--rules", '[{"value": "maybe"}]')
    assert bad_rule.exit_code == 1 and "validation_error" in bad_rule.stderr
    assert cli.json("flags", "list", *e) == []  # nothing was made


def test_environments_and_their_keys(user_cli: tuple[str, Cli]) -> None:
    _, cli = user_cli
    name = unique("prod")
    made = cli.json("flags", "environments", "create", name, "--type", "production")
    assert made["name"] == name and made["environment_type"] == "production"
    listed = cli.json("flags", "environments", "list")
    assert made["id"] in [e["id"] for e in listed]
    table = cli.ok("flags", "environments", "list", table=True).stdout
    assert "TYPE" in table and name in table and "production" in table
    key = cli.json("flags", "keys", "create", "-e", name, "--name", "web", "--scope", "read")
    assert key["secret"].startswith("mp_") and key["scope"] == "read"
    # the bound key reaches that environment's flags with no -e, and reads only
    app = cli.as_(key["secret"])
    assert app.json("flags", "list") == []
    refused = app("flags", "create", "gold")
    assert refused.exit_code == 1 and "read-only" in refused.output
    # a bad type is a usage error that lists the choices; nothing is made
    bad = cli("flags", "environments", "create", unique("x"), "--type", "prod")
    assert bad.exit_code == 2 and "development" in bad.output
    assert len(cli.json("flags", "environments", "list")) == len(listed)


def test_lists_page_and_say_when_they_stop(
    env: tuple[str, Cli], monkeypatch: pytest.MonkeyPatch
) -> None:
    import millpond.cli._paging as paging

    env_id, cli = env
    e = ["-e", env_id]
    for i in range(5):
        cli.ok("flags", "create", f"f{i}", *e)
        cli.ok("companies", "upsert", f"id=c{i}", *e)
    monkeypatch.setattr(paging, "PAGE", 2)  # so --all takes three pages
    cut = cli("flags", "list", *e, "--limit", "3")
    assert cut.exit_code == 0 and [f["key"] for f in json.loads(cut.stdout)] == ["f0", "f1", "f2"]
    assert "the first 3 shown; --all for every one" in cut.stderr
    every = cli("flags", "list", *e, "--all")
    assert [f["key"] for f in json.loads(every.stdout)] == [f"f{i}" for i in range(5)]
    assert every.stderr == ""
    exact = cli("flags", "list", *e, "--limit", "5")
    assert len(json.loads(exact.stdout)) == 5 and exact.stderr == ""
    companies = cli("companies", "list", *e, "--all")
    assert len(json.loads(companies.stdout)) == 5 and companies.stderr == ""
    few = cli("companies", "list", *e, "--limit", "1")
    assert len(json.loads(few.stdout)) == 1 and "the first 1 shown" in few.stderr
