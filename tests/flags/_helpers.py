"""Plain helpers shared by the flags API tests."""

from __future__ import annotations

import itertools
import time
from typing import Any

import httpx

_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_counter)}x{int(time.time() * 1000) % 100000}"


def ok(r: httpx.Response, status: int = 200) -> Any:
    """Assert the status; return the JSON body (None for 204)."""
    assert r.status_code == status, (r.status_code, r.text)
    return r.json() if status != 204 else None


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
