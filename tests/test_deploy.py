"""The deployment files (``deploy/``, docs/deployment.md), checked as far as this machine
allows (it has systemd's tools but no container engine): the systemd unit passes
``systemd-analyze verify``; both files start ``millpond up`` with options and settings
that exist, as a user other than root, and the container's health check asks a route the
server has; and ``millpond up`` stops cleanly on SIGTERM, the signal both send."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from _up import millpond_up
from _waiting import wait_until
from millpond.server.config import Settings
from millpond.server.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "millpond.service"
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
SETTINGS = {f"MILLPOND_{name.upper()}" for name in Settings.model_fields}


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(_joined(UNIT.read_text(), "#"))
    return parser


def _joined(text: str, comment: str) -> str:
    """The file without comments, continuation lines joined."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith(comment)]
    return "\n".join(lines).replace("\\\n", " ")


def _unit_environment() -> dict[str, str]:
    """The unit's ``Environment=NAME=value`` lines (configparser keeps only the last)."""
    pairs = [
        line.partition("=")[2].partition("=")
        for line in UNIT.read_text().splitlines()
        if line.startswith("Environment=")
    ]
    return {name: value for name, _, value in pairs}


def _instructions() -> list[tuple[str, str]]:
    """The Containerfile's (INSTRUCTION, arguments)."""
    out = []
    for line in _joined(CONTAINERFILE.read_text(), "#").splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _up_options() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "millpond.cli", "up", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    return done.stdout


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    """As written, but for ExecStart's program: /opt/millpond exists only where the unit
    is installed, so the copy verified runs this checkout's ``millpond``."""
    here = Path(sys.executable).parent / "millpond"
    copy = tmp_path / "millpond.service"
    copy.write_text(UNIT.read_text().replace("/opt/millpond/bin/millpond", str(here)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    # verify only warns (exit 0) about values it ignores: any output is a fault
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def test_the_unit_runs_millpond_up_as_its_own_user_with_known_settings() -> None:
    service = _unit()["Service"]
    assert service["User"] == "millpond" and service["User"] != "root"
    command = shlex.split(service["ExecStart"])
    assert command[0].endswith("/bin/millpond") and command[1] == "up"
    help_text = _up_options()
    assert all(arg in help_text for arg in command[2:] if arg.startswith("--"))
    assert set(_unit_environment()) <= SETTINGS
    secrets = {"MILLPOND_DATABASE_URL", "MILLPOND_SECRET_KEY", "MILLPOND_METRICS_TOKEN"}
    assert not secrets & set(_unit_environment())  # the unit is world-readable
    assert service["EnvironmentFile"] == "-/etc/millpond/env"
    assert service["ReadWritePaths"] == "/var/lib/millpond"
    assert _unit_environment()["MILLPOND_DATA_DIR"].startswith("/var/lib/millpond/")


def test_the_containerfile_runs_millpond_up_as_its_own_user_and_checks_readiness() -> None:
    steps = _instructions()
    kinds = [kind for kind, _ in steps]
    assert kinds[0] == "FROM" and "python:3.11" in steps[0][1]
    user = [args for kind, args in steps if kind == "USER"]
    assert user == ["millpond"]
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN")
    installs = [args for kind, args in steps if kind == "RUN" and "pip install" in args]
    assert len(installs) == 1 and "[server]" in installs[0]
    env = " ".join(args for kind, args in steps if kind == "ENV")
    assert set(re.findall(r"(MILLPOND_[A-Z_]+)=", env)) <= SETTINGS
    defaults = Settings()
    exposed = {int(p) for kind, args in steps if kind == "EXPOSE" for p in args.split()}
    assert exposed == {defaults.port, defaults.gateway_port}
    cmd = json.loads(next(args for kind, args in steps if kind == "CMD"))
    assert cmd[:2] == ["millpond", "up"]
    check = next(args for kind, args in steps if kind == "HEALTHCHECK")
    assert f"127.0.0.1:{defaults.port}/v1/health/ready" in check
    assert (ROOT / ".dockerignore").read_text().count(".venv") >= 1


def test_the_documented_readiness_route_and_signal(tmp_path: Path) -> None:
    """``millpond up`` answers the health check's route, and SIGTERM (systemd's and the
    container's stop signal) ends it cleanly, its embedded Postgres with it."""
    port = free_port()
    proc = millpond_up(tmp_path / "data", port)
    try:
        wait_until(
            lambda: _ready(port) or proc.poll() is not None,
            timeout=90,
            what="millpond up to be ready",
        )
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    # uvicorn shuts down, then exits by the signal it got (systemd counts that as a clean
    # stop; a container's status is 143)
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Application shutdown complete." in out
    assert not (tmp_path / "data" / "pg" / "postmaster.pid").exists(), out


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/health/ready").status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.parametrize("path", ["deploy/millpond.service", "deploy/Containerfile"])
def test_the_deployment_doc_shows_each_file(path: str) -> None:
    doc = (ROOT / "docs" / "deployment.md").read_text()
    assert f"({'../' + path})" in doc or f"`{path}`" in doc
