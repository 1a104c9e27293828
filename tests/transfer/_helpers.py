"""Helpers for the transfer tests: an HTTP caller that runs jobs to their end."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx

TERMINAL = ("DONE", "FAILED")


class Api:
    """``api.post(path, key, **httpx_kwargs)`` etc. against the test server."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def request(self, method: str, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return self.client.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, key, **kwargs)

    def post(self, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, key, **kwargs)

    def make_db(self, key: str, **fields: Any) -> str:
        """Create a database; return its ``owner/name``."""
        r = self.post("/v1/databases", key, json={"name": unique("db"), **fields})
        assert r.status_code == 201, r.text
        return str(r.json()["full_name"])

    def query(self, key: str, db: str, sql: str) -> Any:
        r = self.post("/v1/query", key, json={"database": db, "sql": sql})
        assert r.status_code == 200, r.text
        return r.json()["data"]

    def query_error(self, key: str, db: str, sql: str) -> dict[str, Any]:
        r = self.post("/v1/query", key, json={"database": db, "sql": sql})
        assert r.status_code == 400, r.text
        return dict(r.json()["error"])

    def table_exists(self, key: str, db: str, table: str) -> bool:
        rows = self.query(key, db, f"SELECT to_regclass('public.{table}') IS NOT NULL")
        return bool(rows[0][0])

    def wait(self, kind: str, job_id: str, key: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(f"/v1/{kind}/{job_id}", key)
            assert r.status_code == 200, r.text
            job = dict(r.json())
            if job["state"] in TERMINAL:
                return job
            assert time.monotonic() < deadline, f"{kind} {job_id} still {job['state']}"
            time.sleep(0.03)

    def start_import(
        self,
        key: str,
        db: str,
        table: str,
        content: bytes,
        filename: str = "data.csv",
        **fields: Any,
    ) -> httpx.Response:
        data = {"db_name": db, "table_name": table}
        for name, value in fields.items():
            if value is not None:
                data[name] = value if isinstance(value, str) else _json(value)
        return self.post(
            "/v1/imports", key, data=data, files={"file": (filename, content, "text/plain")}
        )

    def run_import(
        self,
        key: str,
        db: str,
        table: str,
        content: bytes,
        filename: str = "data.csv",
        **fields: Any,
    ) -> dict[str, Any]:
        r = self.start_import(key, db, table, content, filename, **fields)
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["state"] in ("RECEIVED", "PROCESSING", "DONE", "FAILED")
        return self.wait("imports", job["id"], key)

    def run_export(self, key: str, db: str, **fields: Any) -> dict[str, Any]:
        r = self.post("/v1/exports", key, json={"db_name": db, **fields})
        assert r.status_code == 202, r.text
        return self.wait("exports", r.json()["id"], key)

    def download(self, job: dict[str, Any]) -> bytes:
        assert job["state"] == "DONE", job
        r = self.client.get(job["download_url"])  # no key: the link is signed
        assert r.status_code == 200, r.text
        return r.content


def _json(value: Any) -> str:
    return json.dumps(value)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def error(job: dict[str, Any], error_type: str) -> dict[str, Any]:
    """Assert the job FAILED with ``error_type``; return its details."""
    assert job["state"] == "FAILED", job
    assert job["error_type"] == error_type, job
    assert job["error_id"], job
    details = job["error_details"]
    assert isinstance(details, dict) and details["message"], job
    return dict(details)
