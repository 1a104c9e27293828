"""``millpond track``: one track event sent at once; what the server accepted, as JSON or a
table; idempotency keys; bad keys are usage errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from .conftest import Cli, unique


@pytest.fixture
def env(user_cli: tuple[str, Cli], base_url: str) -> tuple[str, Cli]:
    """A fresh flags environment's id, and the CLI of its owner."""
    _, cli = user_cli
    r = httpx.post(
        f"{base_url}/v1/flags/environments",
        json={"name": unique("cli-env")},
        headers={"Authorization": f"Bearer {cli.key}"},
    )
    assert r.status_code == 201, r.text
    return r.json()["id"], cli


def _metrics(cli: Cli, env_id: str, kind: str, keys: dict[str, str]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {cli.key}"}
    base = f"{cli.url}/v1/flags/environments/{env_id}/{kind}"
    found = httpx.post(f"{base}/lookup", json={"keys": keys}, headers=headers).json()
    figures = httpx.get(f"{base}/{found['id']}/metrics", headers=headers).json()
    return {
        f"{m['event']}:{m['aggregation']}": m["value"] for m in figures if m["period"] == "all_time"
    }


def test_track_sends_and_prints_what_was_accepted(env: tuple[str, Cli]) -> None:
    env_id, cli = env
    args = ["track", "signup", "-e", env_id, "--company", "id=acme", "--company", "x=1"]
    args += ["--user", "email=a@acme.net", "--quantity", "3"]
    assert cli.json(*args) == {"accepted": 1, "duplicates": 0}
    assert cli.json("track", "signup", "-e", env_id, "--company", "id=acme") == {
        "accepted": 1,
        "duplicates": 0,
    }
    figures = _metrics(cli, env_id, "companies", {"x": "1"})  # one company, two keys
    assert figures["signup:count"] == 2 and figures["signup:sum"] == 4
    assert _metrics(cli, env_id, "users", {"email": "a@acme.net"})["signup:sum"] == 3


def test_an_idempotency_key_counts_once(env: tuple[str, Cli]) -> None:
    env_id, cli = env
    args = ["track", "once", "-e", env_id, "--company", "id=acme", "--idempotency-key", "k1"]
    assert cli.json(*args) == {"accepted": 1, "duplicates": 0}
    assert cli.json(*args) == {"accepted": 0, "duplicates": 1}
    assert _metrics(cli, env_id, "companies", {"id": "acme"})["once:count"] == 1


def test_table_and_json_output(env: tuple[str, Cli]) -> None:
    env_id, cli = env
    out = cli.ok("track", "seen", "-e", env_id, table=True).stdout
    assert out.split() == ["accepted", "1", "duplicates", "0"]
    forced = cli.ok("track", "seen", "-e", env_id, "--json", table=True).stdout
    assert json.loads(forced) == {"accepted": 1, "duplicates": 0}


def test_the_environment_from_the_environment_variable(env: tuple[str, Cli]) -> None:
    env_id, cli = env
    with_env = Cli(cli.url, cli.key, cli.empty_dir, {"MILLPOND_ENVIRONMENT": env_id})
    assert with_env.json("track", "from-env", "--company", "id=acme")["accepted"] == 1
    assert _metrics(cli, env_id, "companies", {"id": "acme"})["from-env:count"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--company", "acme"], "NAME=VALUE"),
        (["--user", "=x"], "NAME=VALUE"),
        (["--quantity", "-1"], "'--quantity'"),
    ],
)
def test_bad_arguments_are_usage_errors(
    env: tuple[str, Cli], args: list[str], message: str
) -> None:
    env_id, cli = env
    result = cli("track", "x", "-e", env_id, *args)
    assert result.exit_code == 2, result.stdout
    assert message in result.stderr


def test_without_an_environment_it_says_how_to_give_one(env: tuple[str, Cli]) -> None:
    _, cli = env
    result = cli("track", "x", "--company", "id=acme")
    assert result.exit_code == 1
    assert "environment" in result.stderr and "Traceback" not in result.stderr
    unknown = cli("track", "x", "-e", "no-such-env")
    assert unknown.exit_code == 1 and "error:" in unknown.stderr
