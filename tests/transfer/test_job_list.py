"""Listing import and export jobs (``GET /v1/imports``, ``GET /v1/exports``), through the
API, the SDK and the CLI; and finished jobs purged after the retention period."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from millpond import Millpond
from millpond.cli import app
from millpond.server.testing import ServerThread
from millpond.server.transfer import worker

from ._helpers import Api

CSV = b"id,name\n1,a\n2,b\n"


def _ids(r: Any) -> list[str]:
    assert r.status_code == 200, r.text
    return [job["id"] for job in r.json()]


def test_newest_first_filtered_and_paged(
    xfer: Api, make_user: Callable[..., tuple[str, str]]
) -> None:
    _, key = make_user(prefix="jobs")
    first, second = xfer.make_db(key), xfer.make_db(key)
    a = xfer.run_import(key, first, "t1", CSV)
    b = xfer.run_import(key, second, "t2", CSV)
    bad = xfer.run_import(key, first, "t3", b"id\n1\nx\n", column_types={"id": "bigint"})
    assert bad["state"] == "FAILED"
    e = xfer.run_export(key, first, table_name="t1", export_format="csv")
    assert _ids(xfer.get("/v1/imports", key)) == [bad["id"], b["id"], a["id"]]
    assert _ids(xfer.get("/v1/imports", key, params={"database": first})) == [bad["id"], a["id"]]
    assert _ids(xfer.get("/v1/imports", key, params={"state": "FAILED"})) == [bad["id"]]
    assert _ids(xfer.get("/v1/imports", key, params={"limit": 1})) == [bad["id"]]
    assert _ids(xfer.get("/v1/imports", key, params={"before": b["id"]})) == [a["id"]]
    exports = xfer.get("/v1/exports", key).json()
    assert [x["id"] for x in exports] == [e["id"]]
    assert exports[0]["download_url"]  # a live export's listing carries its signed link
    # the listing is the same as the job itself
    assert xfer.get("/v1/imports", key).json()[1] == xfer.get(f"/v1/imports/{b['id']}", key).json()


def test_only_your_own_jobs(xfer: Api, make_user: Callable[..., tuple[str, str]]) -> None:
    _, key = make_user(prefix="jobs")
    _, stranger = make_user(prefix="jobs")
    db = xfer.make_db(key)
    job = xfer.run_import(key, db, "t", CSV)
    assert job["id"] not in _ids(xfer.get("/v1/imports", stranger))
    assert _ids(xfer.get("/v1/imports", stranger, params={"database": db})) == []
    assert _ids(xfer.get("/v1/imports", stranger, params={"before": job["id"]})) == []
    assert xfer.get("/v1/imports", None).status_code == 401


def test_bad_parameters_are_refused(xfer: Api, owner: tuple[str, str]) -> None:
    key = owner[1]
    for params in (
        {"limit": 0},
        {"limit": 1001},
        {"state": "done"},
        {"before": "x" * 65},
        {"before": "a\x00b"},
    ):
        r = xfer.get("/v1/exports", key, params=params)
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", params


def test_sdk_and_cli(base_url: str, xfer: Api, make_user: Callable[..., tuple[str, str]]) -> None:
    _, key = make_user(prefix="jobs")
    db = xfer.make_db(key)
    job = xfer.run_import(key, db, "t", CSV)
    with Millpond(api_key=key, base_url=base_url) as mp:
        listed = mp.imports.list(database=db, state="DONE")
        assert [j.id for j in listed] == [job["id"]] and listed[0].tables[0].rows == 2
        assert mp.exports.list() == []
    env = {"MILLPOND_API_KEY": None, "MILLPOND_URL": None, "COLUMNS": "200"}
    runner = CliRunner()
    result = runner.invoke(app, ["--url", base_url, "--key", key, "jobs", "import"], env=env)
    assert result.exit_code == 0, result.stderr
    assert [j["id"] for j in json.loads(result.stdout)] == [job["id"]]
    table = runner.invoke(
        app, ["--url", base_url, "--key", key, "--format", "table", "jobs", "import"], env=env
    )
    assert table.exit_code == 0 and job["id"] in table.stdout
    bad = runner.invoke(app, ["--url", base_url, "--key", key, "jobs", "copy"], env=env)
    assert bad.exit_code == 2 and "KIND must be one of import, export" in bad.stderr


def test_finished_jobs_are_purged_after_the_retention_period(
    server: ServerThread,
    xfer: Api,
    make_user: Callable[..., tuple[str, str]],
    superuser: Callable[[str], psycopg.Connection[Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, key = make_user(prefix="jobs")
    db = xfer.make_db(key)
    old = xfer.run_import(key, db, "t1", CSV)
    recent = xfer.run_import(key, db, "t2", CSV)
    with superuser(server.settings.control_database) as conn:
        conn.execute(
            "UPDATE transfer_jobs SET finished_at = now() - interval '31 days' WHERE id = %s",
            (old["id"],),
        )
    monkeypatch.setattr(worker, "CLEANUP_EVERY_S", 0.1)
    deadline = time.monotonic() + 10
    while old["id"] in _ids(xfer.get("/v1/imports", key)):
        assert time.monotonic() < deadline, "the old job was not purged"
        # a queued job wakes the worker loop, which cleans up on its way
        xfer.post("/v1/exports", key, json={"db_name": db, "query_string": "SELECT 1"})
        time.sleep(0.2)
    assert recent["id"] in _ids(xfer.get("/v1/imports", key))
    assert xfer.get(f"/v1/imports/{old['id']}", key).status_code == 404
