"""Plain helpers shared by the server API tests."""

from __future__ import annotations

import itertools
import time
from typing import Any

import httpx

_db_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_db_names)}x{int(time.time() * 1000) % 100000}"


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert ``r`` is the one error envelope with ``status`` and ``code``; return its body."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return dict(body["error"])


def pg_name(db: dict[str, Any]) -> str:
    return f"mp_db_{db['id']}"


# A read-only caller's write is refused by Postgres: the ``ro`` role's sessions are
# read-only transactions (25006) and, underneath, it has no write privilege (42501).
READ_ONLY_SQLSTATES = ("25006", "42501")


def assert_write_refused(r: httpx.Response) -> None:
    err = assert_error(r, 400, "sql_error")
    assert err["details"]["sqlstate"] in READ_ONLY_SQLSTATES, err


def assert_permission_denied(r: httpx.Response) -> None:
    err = assert_error(r, 400, "sql_error")
    assert err["details"]["sqlstate"] == "42501", err
