"""Run inside a private mount and network namespace by ``test_bitio_e2e.py`` (as root):
set millpond up as ``millpond compat bitio`` prints, with bit.io's hard-coded hosts
resolving to it, then run the seed's examples with the unmodified ``bitdotio`` package and
its ``bit`` CLI. Prints one JSON object of what it saw; the test asserts on it.

Nothing here reaches the machine outside: the hosts file is bind-mounted in this mount
namespace only, and 443/5432 are bound in this network namespace only.

Usage: ``python bitio_netns.py WORKDIR``
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def sh(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, env=env, input=stdin, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{args}: exit {done.returncode}: {done.stdout}{done.stderr}")
    return done.stdout


def exports(text: str) -> dict[str, str]:
    """The ``export NAME=value`` lines of the command's output."""
    found = {}
    for line in text.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            found[name] = shlex.split(value)[0]
    return found


def main(work: Path) -> dict[str, Any]:
    sh("ip", "link", "set", "lo", "up")
    data = work / "data"
    printed = sh(sys.executable, "-m", "millpond.cli", "compat", "bitio", "--data-dir", str(data))
    hosts_line = next(line for line in printed.splitlines() if line.endswith(" db.bit.io"))
    hosts = work / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{hosts_line}\n")
    sh("mount", "--bind", str(hosts), "/etc/hosts")
    env = exports(printed)
    server_env = {k: v for k, v in env.items() if k.startswith("MILLPOND_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "millpond.cli", "up", "--data-dir", str(data)],
        env={**os.environ, **server_env},
        stdout=subprocess.DEVNULL,
        stderr=open(work / "server.log", "wb"),  # noqa: SIM115 - the child holds it
    )
    try:
        os.environ["REQUESTS_CA_BUNDLE"] = env["REQUESTS_CA_BUNDLE"]
        return clients(data, server)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


def clients(data: Path, server: subprocess.Popen[bytes]) -> dict[str, Any]:
    import requests  # after REQUESTS_CA_BUNDLE is set

    deadline = time.monotonic() + 90
    while True:  # wait until it serves HTTPS on api.bit.io:443, verified
        try:
            if requests.get("https://api.bit.io/v1/health", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the server did not come up")
        time.sleep(0.1)
    admin = (data / "admin-key").read_text().strip()
    made = requests.post(
        "https://api.bit.io/v1/users",
        json={"username": "my-username"},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    )
    made.raise_for_status()
    mp_key = made.json()["api_key"]["secret"]
    printed = sh(
        sys.executable,
        "-m",
        "millpond.cli",
        "-k",
        mp_key,
        "compat",
        "bitio",
        "--data-dir",
        str(data),
    )
    key = exports(printed)["BITIO_KEY"]
    seen: dict[str, Any] = {"key_prefix": key[:3]}
    seen.update(sdk_examples(key, data))
    seen.update(cli_examples(key))
    return seen


def sdk_examples(key: str, work: Path) -> dict[str, Any]:
    """The seed's "Example usage", as written, plus the direct connections."""
    from bitdotio import bitdotio

    b = bitdotio(key)
    db_metadata = b.create_database("my-db", is_private=False)
    db_name = db_metadata["name"]
    with b.pooled_cursor(db_name) as cur:
        cur.execute("CREATE TABLE person (name text, age integer);")
        people = [("Alice", 45), ("Bob", 84), ("Catherine", 19), ("Davis", 22), ("Emily", 34)]
        for name, age in people:
            cur.execute("INSERT INTO person (name, age) VALUES (%s, %s)", (name, age))
    objects = b.query(db_name, "SELECT * FROM person", data_format="objects")
    city = work / "city.csv"
    city.write_text("name,population\nParis,2100000\nOslo,700000\n")
    with open(city, "rb") as f:
        job_status = b.create_import_job("my-username/my-db", "city", file=f)
        deadline = time.monotonic() + 60
        while job_status["state"] not in ("DONE", "FAILED") and time.monotonic() < deadline:
            job_status = b.get_import_job(job_status["id"])
            time.sleep(0.2)
    cities = b.query(db_name, "SELECT name FROM city ORDER BY name")["data"]
    export = b.create_export_job(db_name, table_name="person")
    deadline = time.monotonic() + 60
    while export["state"] not in ("DONE", "FAILED") and time.monotonic() < deadline:
        export = b.get_export_job(export["id"])
        time.sleep(0.1)
    import requests

    exported = requests.get(export["download_url"], timeout=30).text
    with b.pooled_connection(db_name) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM person")
        pooled = cur.fetchone()[0]
    conn = b.get_connection(db_name)
    try:
        cur = conn.cursor()
        cur.execute("SET application_name = 'unpooled'")  # a session of its own
        cur.execute("SELECT current_setting('application_name'), count(*) FROM person")
        direct = list(cur.fetchone())
    finally:
        conn.close()
    for pool in b._pools.values():
        pool.closeall()
    return {
        "db_name": db_name,
        "objects": objects["data"],
        "import_state": job_status["state"],
        "import_status_url": job_status["status_url"],
        "cities": cities,
        "export_state": export["state"],
        "download_url": export["download_url"],
        "exported_header": exported.splitlines()[0],
        "pooled_count": pooled,
        "direct": direct,
    }


def cli_examples(key: str) -> dict[str, Any]:
    """The seed's `bit` examples, and the rest of its `db` commands."""
    bit = str(BIN / "bit")
    env = {**os.environ, "BITIO_KEY": key}
    no_key = {k: v for k, v in os.environ.items() if k != "BITIO_KEY"}
    listed = json.loads(sh(bit, "db", "list", env=env))
    same = json.loads(sh(bit, "-k", key, "db", "list", env=no_key))
    query = json.loads(
        sh(
            bit,
            "-k",
            key,
            "query",
            "-d",
            "my-username/my-db",
            "-q",
            "SELECT * FROM person",
            env=no_key,
        )
    )
    objects = json.loads(
        sh(bit, "query", "-d", "my-username/my-db", "-q", "SELECT 1 AS one", "-o", env=env)
    )
    from_stdin = json.loads(
        sh(bit, "query", "-d", "my-username/my-db", "-qf", "-", env=env, stdin="SELECT 2")
    )
    helped = sh(bit, "--help", env=no_key)  # no key needed for the top help
    sub_help = subprocess.run(  # a defect: a command's --help wants a key (any v2_…)
        [bit, "db", "--help"], capture_output=True, text=True, env=no_key, timeout=60
    )
    sub_helped = sh(bit, "-k", "v2_any", "db", "--help", env=no_key)
    created = json.loads(sh(bit, "db", "create", "-n", "from-cli", env=env))
    info = json.loads(sh(bit, "db", "info", "-d", "my-username/from-cli", env=env))
    updated = json.loads(
        sh(bit, "db", "update", "-d", "my-username/from-cli", "-p", "False", env=env)
    )
    deleted = sh(bit, "db", "delete", "-d", "my-username/from-cli", env=env)
    failed = subprocess.run(
        [bit, "db", "info", "-d", "my-username/from-cli"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return {
        "cli_list": [d["name"] for d in listed],
        "cli_list_same": listed == same,
        "cli_query": query["data"],
        "cli_objects": objects["data"],
        "cli_stdin": from_stdin["data"],
        "cli_help": "db" in helped and "query" in helped,
        "cli_sub_help": [sub_help.returncode != 0, "list" in sub_helped],
        "cli_created": [created["name"], created["is_private"]],
        "cli_info": info["name"],
        "cli_updated_private": updated["is_private"],
        "cli_deleted": deleted.strip(),
        "cli_missing": [failed.returncode, "database_not_found" in failed.stdout],
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
