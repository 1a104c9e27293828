"""bit.io's ``/v2beta`` API over plain HTTP: the request and response shapes the
``bitdotio`` 2.2.1 package uses, JSON errors, keys in bit.io's ``v2_`` spelling, and who
may do what."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from millpond.server.accounts.service import bitio_spelling
from millpond.server.testing import ServerThread

MakeUser = Callable[..., tuple[str, str]]


class Bit:
    """Calls to ``/v2beta`` with one key (``Authorization: Bearer``)."""

    def __init__(self, http: httpx.Client, key: str | None) -> None:
        self.http, self.key = http, key

    def __call__(self, method: str, path: str, status: int, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        r = self.http.request(method, f"/v2beta{path}", headers=headers, **kwargs)
        assert r.status_code == status, r.text
        return r.json()  # every answer has a JSON body, errors too

    def error(self, method: str, path: str, status: int, **kwargs: Any) -> str:
        code: str = self(method, path, status, **kwargs)["error"]["code"]
        return code

    def as_(self, key: str | None) -> Bit:
        return Bit(self.http, key)


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        yield client


@pytest.fixture
def user(make_user: MakeUser) -> tuple[str, str]:
    """A fresh user: (username, key in bit.io's spelling)."""
    name, key = make_user(prefix="bit")
    return name, bitio_spelling(key)


@pytest.fixture
def bit(http: httpx.Client, user: tuple[str, str]) -> Bit:
    return Bit(http, user[1])


def _wait(bit: Bit, kind: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = bit("GET", f"/{kind}/{job_id}", 200)
        if job["state"] in ("DONE", "FAILED") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_v2_spelling_is_the_same_key(http: httpx.Client, make_user: MakeUser) -> None:
    name, key = make_user(prefix="spell")
    spelled = bitio_spelling(key)
    assert spelled.startswith("v2_") and spelled[3:] == key[3:]
    for k in (key, spelled):  # both spellings, on the native API and on bit.io's
        me = http.get("/v1/me", headers={"Authorization": f"Bearer {k}"})
        assert me.status_code == 200 and me.json()["user"]["username"] == name
        assert Bit(http, k)("GET", "/db/", 200) == {"databases": []}
    for wrong in ("v2_" + key[3:-1], "v2_", "v3_" + key[3:], "v2_" + key):
        assert Bit(http, wrong).error("GET", "/db/", 401) == "unauthorized"
    assert Bit(http, None).error("GET", "/db/", 401) == "unauthorized"


def test_databases(bit: Bit, user: tuple[str, str]) -> None:
    owner = user[0]
    made = bit("POST", "/db/", 201, json={"name": "my-db", "is_private": False})
    assert made["name"] == f"{owner}/my-db" and made["is_private"] is False
    assert made["owner"] == owner and made["storage_usage_bytes"] > 0
    assert bit.error("POST", "/db/", 409, json={"name": "my-db"}) == "database_exists"
    assert bit.error("POST", "/db/", 422, json={"name": "no/slash"}) == "invalid_name"
    assert bit.error("POST", "/db/", 422, json={"name": "x", "extra": 1}) == "validation_error"
    listed = bit("GET", "/db/", 200)["databases"]
    assert [d["name"] for d in listed] == [f"{owner}/my-db"]
    got = bit("GET", f"/db/{owner}/my-db", 200)
    assert got["name"] == f"{owner}/my-db" and got["role"] == "owner"
    updated = bit(
        "PATCH",
        f"/db/{owner}/my-db",
        200,
        json={"name": "renamed", "is_private": True, "storage_limit_bytes": 10**9},
    )
    assert updated["name"] == f"{owner}/renamed" and updated["is_private"] is True
    assert updated["storage_limit_bytes"] == 10**9
    assert bit.error("GET", f"/db/{owner}/my-db", 404) == "database_not_found"
    assert bit("DELETE", f"/db/{owner}/renamed", 200) == {
        "name": f"{owner}/renamed",
        "deleted": True,
    }
    assert bit.error("DELETE", f"/db/{owner}/renamed", 404) == "database_not_found"
    assert bit("GET", "/db/", 200) == {"databases": []}


def test_strangers_and_readers(bit: Bit, user: tuple[str, str], make_user: MakeUser) -> None:
    owner = user[0]
    bit("POST", "/db/", 201, json={"name": "secret"})
    bit("POST", "/db/", 201, json={"name": "open", "is_private": False})
    _, other = make_user(prefix="stranger")
    stranger = bit.as_(bitio_spelling(other))
    assert stranger.error("GET", f"/db/{owner}/secret", 404) == "database_not_found"
    query = {"database_name": f"{owner}/secret", "query_string": "SELECT 1"}
    assert stranger.error("POST", "/query", 404, json=query) == "database_not_found"
    assert stranger("GET", f"/db/{owner}/open", 200)["role"] == "read"
    assert stranger.error("PATCH", f"/db/{owner}/open", 403, json={"is_private": True}) == (
        "forbidden"
    )
    assert stranger.error("DELETE", f"/db/{owner}/open", 403) == "forbidden"
    export = {"query_string": "SELECT 1"}
    assert stranger.error("POST", f"/db/{owner}/secret/export/", 404, json=export) == (
        "database_not_found"
    )
    form = {"table_name": "t", "file_url": "https://example.invalid/x.csv"}
    assert stranger.error("POST", f"/db/{owner}/open/import/", 403, data=form) == "forbidden"
    writes = {"database_name": f"{owner}/open", "query_string": "CREATE TABLE t (a int)"}
    assert stranger.error("POST", "/query", 400, json=writes) == "sql_error"
    assert bit("GET", f"/db/{owner}/open", 200)["is_private"] is False  # nothing changed


def test_query_shapes(bit: Bit, user: tuple[str, str]) -> None:
    db = f"{user[0]}/q"
    bit("POST", "/db/", 201, json={"name": "q"})
    setup = "CREATE TABLE person (name text, age integer); INSERT INTO person VALUES ('Al', 45)"
    bit("POST", "/query", 200, json={"database_name": db, "query_string": setup})
    body = {"database_name": db, "query_string": "SELECT * FROM person"}
    rows = bit("POST", "/query", 200, json=body)
    assert rows["data"] == [["Al", 45]] and rows["query_string"] == body["query_string"]
    assert rows["metadata"]["column_names"] == ["name", "age"]
    assert rows["metadata"]["column_types"] == ["text", "int4"]
    assert rows["metadata"]["row_count"] == 1
    objects = bit("POST", "/query?data_format=objects", 200, json=body)
    assert objects["data"] == [{"name": "Al", "age": 45}]
    assert bit.error("POST", "/query?data_format=rows", 422, json=body) == "validation_error"
    bad = {"database_name": db, "query_string": "SELECT nope FROM person"}
    assert bit.error("POST", "/query", 400, json=bad) == "sql_error"
    assert bit.error("POST", "/query", 422, json={"database_name": db}) == "validation_error"
    assert bit.error("POST", "/query", 422, json={**body, "query_string": ""}) == (
        "validation_error"
    )


def test_import_and_export_jobs(bit: Bit, user: tuple[str, str], make_user: MakeUser) -> None:
    owner = user[0]
    db = f"{owner}/jobs"
    bit("POST", "/db/", 201, json={"name": "jobs"})
    csv = b"name,population\nParis,2100000\nLyon,520000\n"
    files = {"file": ("city", csv)}  # the package names the part after the table
    job = bit("POST", f"/db/{db}/import/", 202, data={"table_name": "city"}, files=files)
    assert job["state"] in ("RECEIVED", "PROCESSING", "DONE")
    assert job["status_url"].endswith(f"/v2beta/import/{job['id']}")
    assert {"error_id", "error_type", "error_details"} <= job.keys()
    done = _wait(bit, "import", job["id"])
    assert done["state"] == "DONE", done
    q = {"database_name": db, "query_string": "SELECT name FROM city ORDER BY 1"}
    assert bit("POST", "/query", 200, json=q)["data"] == [["Lyon"], ["Paris"]]
    bad = bit(
        "POST",
        f"/db/{db}/import/",
        202,
        data={"table_name": "bad", "infer_header": "first_row"},
        files={"file": ("bad", b"\x00\x01\x02 not a table \xff\xfe")},
    )
    failed = _wait(bit, "import", bad["id"])
    assert failed["state"] == "FAILED" and failed["error_id"] and failed["error_type"]
    assert failed["error_details"]
    assert bit.error("POST", f"/db/{db}/import/", 422, data={"table_name": "x"}) == ("missing_file")
    form = {"table_name": "x", "infer_header": "sometimes", "file_url": "https://a.invalid/x"}
    assert bit.error("POST", f"/db/{db}/import/", 422, data=form) == "validation_error"
    assert bit.error("POST", f"/db/{db}/import/", 422, content=b"x") == "validation_error"
    assert bit.error("GET", "/import/imp_nope", 404) == "import_not_found"

    export = bit("POST", f"/db/{db}/export/", 202, json={"table_name": "city"})
    assert export["status_url"].endswith(f"/v2beta/export/{export['id']}")
    finished = _wait(bit, "export", export["id"])
    assert finished["state"] == "DONE" and finished["download_url"], finished
    download = bit.http.get(finished["download_url"])  # a signed link: no key needed
    assert download.status_code == 200 and b"Paris" in download.content
    both = {"table_name": "city", "query_string": "SELECT 1"}
    assert bit.error("POST", f"/db/{db}/export/", 422, json=both) == "validation_error"
    fmt = {"table_name": "city", "export_format": "pdf"}
    assert bit.error("POST", f"/db/{db}/export/", 422, json=fmt) == "validation_error"
    assert bit.error("GET", "/export/exp_nope", 404) == "export_not_found"
    stranger = bit.as_(bitio_spelling(make_user(prefix="peek")[1]))
    assert stranger.error("GET", f"/export/{export['id']}", 404) == "export_not_found"
    assert stranger.error("GET", f"/import/{job['id']}", 404) == "import_not_found"


def test_keys(bit: Bit, http: httpx.Client, user: tuple[str, str]) -> None:
    made = bit("POST", "/api-key/", 201)
    assert made["api_key"].startswith("v2_") and made["db_password"] == made["api_key"]
    assert made["username"] == user[0]
    second = bit.as_(made["api_key"])
    assert second("GET", "/db/", 200) == {"databases": []}
    assert bit("DELETE", f"/api-key/?api_key={made['api_key']}", 200) == {"revoked": 1}
    assert second.error("GET", "/db/", 401) == "unauthorized"
    assert bit.error("DELETE", f"/api-key/?api_key={made['api_key']}", 404) == "key_not_found"
    third = bit.as_(bit("POST", "/api-key/", 201)["api_key"])
    assert third("DELETE", "/api-key/", 200) == {"revoked": 2}  # every key of the user
    assert bit.error("GET", "/db/", 401) == "unauthorized"


def test_service_accounts(http: httpx.Client, make_user: MakeUser) -> None:
    name, key = make_user(prefix="sa")
    auth = {"Authorization": f"Bearer {key}"}
    r = http.post("/v1/service-accounts", json={"name": "etl"}, headers=auth)
    assert r.status_code == 201, r.text
    sa_id = str(r.json()["id"])
    bit = Bit(http, bitio_spelling(key))
    listed = bit("GET", "/service-account/", 200)["service_accounts"]
    assert [(a["id"], a["name"]) for a in listed] == [(sa_id, "etl")]
    assert bit("GET", f"/service-account/{sa_id}", 200)["key_count"] == 0
    for missing in ("999999999", "abc", "1" * 30):
        path = f"/service-account/{missing}"
        assert bit.error("GET", path, 404) == "service_account_not_found"
    creds = bit("POST", f"/service-account/{sa_id}/api-key/", 201)
    assert creds["api_key"].startswith("v2_") and creds["service_account_id"] == int(sa_id)
    robot = bit.as_(creds["api_key"])
    assert robot("POST", "/db/", 201, json={"name": "robot-db"})["name"] == f"{name}/robot-db"
    assert robot.error("GET", "/service-account/", 403) == "forbidden"
    _, other = make_user(prefix="sa-other")
    stranger = bit.as_(bitio_spelling(other))
    assert stranger.error("POST", f"/service-account/{sa_id}/api-key/", 404) == (
        "service_account_not_found"
    )
    assert stranger.error("DELETE", f"/service-account/{sa_id}/api-key/", 404) == (
        "service_account_not_found"
    )
    assert robot("GET", "/db/", 200)["databases"]  # the stranger revoked nothing
    assert bit("DELETE", f"/service-account/{sa_id}/api-key/", 200) == {"revoked": 1}
    assert robot.error("GET", "/db/", 401) == "unauthorized"


def test_unknown_routes_and_methods_answer_json(bit: Bit) -> None:
    assert bit.error("GET", "/nothing-here", 404) == "not_found"
    assert bit.error("PUT", "/db/", 405) == "method_not_allowed"


def test_read_only_and_environment_keys(
    bit: Bit, http: httpx.Client, user: tuple[str, str]
) -> None:
    owner = user[0]
    bit("POST", "/db/", 201, json={"name": "ro"})
    auth = {"Authorization": f"Bearer {user[1]}"}
    r = http.post("/v1/keys", json={"scope": "read"}, headers=auth)
    assert r.status_code == 201, r.text
    reader = bit.as_(bitio_spelling(r.json()["secret"]))
    assert reader("GET", f"/db/{owner}/ro", 200)["role"] == "read"
    assert reader.error("POST", "/db/", 403, json={"name": "no"}) == "read_only_key"
    assert reader.error("PATCH", f"/db/{owner}/ro", 403, json={"name": "x"}) == "read_only_key"
    assert reader.error("DELETE", f"/db/{owner}/ro", 403) == "read_only_key"
    assert reader.error("POST", "/api-key/", 403) == "read_only_key"
    assert reader.error("DELETE", "/api-key/", 403) == "read_only_key"
    write = {"database_name": f"{owner}/ro", "query_string": "CREATE TABLE t (a int)"}
    assert reader.error("POST", "/query", 400, json=write) == "sql_error"
    form = {"table_name": "t", "file_url": "https://example.invalid/x.csv"}
    assert reader.error("POST", f"/db/{owner}/ro/import/", 403, data=form) == "read_only_key"
    r = http.post("/v1/flags/environments", json={"name": "bitenv"}, headers=auth)
    assert r.status_code == 201, r.text
    r = http.post(f"/v1/flags/environments/{r.json()['id']}/keys", json={}, headers=auth)
    assert r.status_code == 201, r.text
    bound = bit.as_(bitio_spelling(r.json()["secret"]))
    assert bound.error("GET", "/db/", 403) == "environment_key"
    assert bound.error("POST", "/api-key/", 403) == "environment_key"
    listed = bit("GET", "/db/", 200)["databases"]
    assert [d["name"] for d in listed] == [f"{owner}/ro"]  # nothing changed


def test_an_admin_sees_private_databases(
    bit: Bit, user: tuple[str, str], server: ServerThread
) -> None:
    bit("POST", "/db/", 201, json={"name": "private"})
    admin = bit.as_(bitio_spelling(server.admin_key))
    assert admin("GET", f"/db/{user[0]}/private", 200)["role"] == "owner"
