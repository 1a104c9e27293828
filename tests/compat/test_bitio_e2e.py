"""The unmodified ``bitdotio`` 2.2.1 package with nothing pointed anywhere: bit.io's
hard-coded ``https://api.bit.io`` and ``db.bit.io:5432`` resolve to a millpond set up as
``millpond compat bitio`` prints (HTTPS on 443 with its certificate, the gateway on 5432).

It runs in a private mount and network namespace (``unshare``, as root), so the hosts file
and the ports are changed for nobody else on the machine (``bitio_netns.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("bitio_netns.py")


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--net", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _namespaces_work(), reason="needs root and unshare (namespaces)")
def test_the_seed_examples_against_the_hard_coded_hosts(tmp_path: Path) -> None:
    done = subprocess.run(
        ["unshare", "--mount", "--net", sys.executable, str(DRIVER), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    log = tmp_path / "server.log"
    server_log = log.read_text() if log.exists() else ""
    assert done.returncode == 0, done.stdout + done.stderr + server_log
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["key_prefix"] == "v2_"
    people = [("Alice", 45), ("Bob", 84), ("Catherine", 19), ("Davis", 22), ("Emily", 34)]
    assert seen["db_name"] == "my-username/my-db"
    assert seen["objects"] == [{"name": n, "age": a} for n, a in people]
    assert seen["import_state"] == "DONE"
    assert seen["import_status_url"].startswith("https://api.bit.io/v2beta/import/")
    assert seen["cities"] == [["Oslo"], ["Paris"]]
    assert seen["export_state"] == "DONE"
    assert seen["download_url"].startswith("https://api.bit.io/v1/exports/")
    assert seen["exported_header"] == "name,age"
    assert seen["pooled_count"] == 5
    assert seen["direct"] == ["unpooled", 5]
    assert seen["cli_list"] == ["my-username/my-db"] and seen["cli_list_same"]
    assert seen["cli_query"] == [[n, a] for n, a in people]
    assert seen["cli_objects"] == [{"one": 1}]
    assert seen["cli_stdin"] == [[2]] and seen["cli_help"]
    assert seen["cli_sub_help"] == [True, True]
    assert seen["cli_created"] == ["my-username/from-cli", True]
    assert seen["cli_info"] == "my-username/from-cli"
    assert seen["cli_updated_private"] is False
    assert seen["cli_deleted"] == "Successfully deleted database: my-username/from-cli"
    assert seen["cli_missing"] == [3, True]
    # the machine outside the namespaces is untouched
    assert "api.bit.io" not in Path("/etc/hosts").read_text()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MILLPOND_API_KEY", "MILLPOND_URL")}
    return subprocess.run(
        [sys.executable, "-m", "millpond.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_compat_bitio_prints_the_set_up(tmp_path: Path) -> None:
    from cryptography import x509

    data = tmp_path / "data"
    done = _run("compat", "bitio", "--address", "10.1.2.3", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "10.1.2.3 api.bit.io db.bit.io" in lines
    cert, key = data.resolve() / "bitio-cert.pem", data.resolve() / "bitio-key.pem"
    for line in (
        "export MILLPOND_HOST=10.1.2.3",
        "export MILLPOND_PORT=443",
        f"export MILLPOND_TLS_CERT={cert}",
        f"export MILLPOND_TLS_KEY={key}",
        "export MILLPOND_GATEWAY_PORT=5432",
        f"export REQUESTS_CA_BUNDLE={data.resolve() / 'bitio-ca-bundle.pem'}",
        "export BITIO_KEY=v2_<your millpond key without its mp_>",
    ):
        assert line in lines, done.stdout
    first = cert.read_bytes()
    made = x509.load_pem_x509_certificate(first)
    names = made.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["api.bit.io", "db.bit.io"]
    assert key.stat().st_mode & 0o777 == 0o600
    bundle = (data / "bitio-ca-bundle.pem").read_bytes()
    assert bundle.endswith(cert.read_bytes()) and bundle.count(b"BEGIN CERTIFICATE") > 10
    again = _run("-k", "mp_abc123", "compat", "bitio", "--data-dir", str(data))
    assert "export BITIO_KEY=v2_abc123" in again.stdout.splitlines()
    assert cert.read_bytes() == first  # made once, then reused
    bad = _run("compat", "bitio", "--address", "api.bit.io", "--data-dir", str(data))
    assert bad.returncode == 2 and "not an IP address" in bad.stderr


def test_https_needs_both_files(tmp_path: Path) -> None:
    from millpond.server.config import Settings

    assert Settings(data_dir=tmp_path).http_tls() is None
    both = Settings(data_dir=tmp_path, tls_cert=tmp_path / "c", tls_key=tmp_path / "k")
    assert both.http_tls() == (str(tmp_path / "c"), str(tmp_path / "k"))
    with pytest.raises(ValueError, match="both"):
        Settings(data_dir=tmp_path, tls_cert=tmp_path / "c").http_tls()
    env = {**os.environ, "MILLPOND_TLS_CERT": str(tmp_path / "c")}
    env.pop("MILLPOND_TLS_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "millpond.cli", "up", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2 and "MILLPOND_TLS_KEY" in done.stderr
