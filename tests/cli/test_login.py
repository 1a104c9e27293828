"""``millpond login``/``logout``/``whoami`` and profiles: a saved login is found from any
directory, only its owner can read it, a refused key is not saved, --key and --url still
win, and a profile that does not exist is a usage error."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from millpond.cli import app


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """The CLI with its own config directory, from a directory with no admin key file."""
    monkeypatch.chdir(tmp_path)
    env = {
        "MILLPOND_CONFIG_DIR": str(tmp_path / "config"),
        "MILLPOND_API_KEY": None,
        "MILLPOND_URL": None,
        "MILLPOND_PROFILE": None,
        "MILLPOND_DATA_DIR": str(tmp_path / "no-server"),
    }

    def invoke(*args: str, input: str | None = None, **extra: str) -> Result:
        return CliRunner().invoke(app, list(args), input=input, env={**env, **extra})

    return invoke


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_login_whoami_profiles_logout(
    run: Callable[..., Result],
    base_url: str,
    make_user: Callable[..., tuple[str, str]],
    tmp_path: Path,
) -> None:
    alice, alice_key = make_user(prefix="login")
    bob, bob_key = make_user(prefix="login")
    assert run("me").exit_code == 1  # nothing saved yet: says to log in
    assert "millpond login" in run("me").output

    saved = _json(run("login", "--url", base_url, input=alice_key + "\n"))
    assert saved["user"] == alice and saved["profile"] == "default"
    path = Path(saved["stored_in"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert alice_key in path.read_text()
    who = _json(run("whoami"))  # no --url, no --key: the saved login
    assert who["user"] == alice and who["url"] == base_url
    assert who["key_source"] == "profile default (millpond login)"

    # a second profile, given by option or environment; the first one stays the default
    assert _json(run("login", "--url", base_url, "--key", bob_key, "--profile", "b"))["user"] == bob
    assert _json(run("whoami", "--profile", "b"))["user"] == bob
    assert _json(run("whoami", MILLPOND_PROFILE="b"))["user"] == bob
    assert _json(run("me"))["user"]["username"] == alice
    # --key still wins over the profile; an unknown profile is a usage error
    assert _json(run("whoami", "--key", bob_key))["user"] == bob
    unknown = run("whoami", "--profile", "nope")
    assert unknown.exit_code == 2 and "millpond login --profile nope" in unknown.output

    # a refused key (or an unreachable server) is not saved
    refused = run("login", "--url", base_url, "--profile", "bad", input="mp_" + "x" * 40 + "\n")
    assert refused.exit_code == 1 and "not saved" in refused.output
    assert '"bad"' not in path.read_text()
    assert run("login", "--url", "http://127.0.0.1:9", "--profile", "x", input="k\n").exit_code == 1

    assert _json(run("logout", "--profile", "b")) == {"logged_out": "b"}
    assert run("whoami", "--profile", "b").exit_code == 2
    assert run("logout", "--profile", "b").exit_code == 2  # no such saved login
    assert _json(run("logout")) == {"logged_out": "default"}
    assert run("whoami").exit_code == 1
