"""The reducer call's route (``POST …/call/{reducer}``) is a plain Starlette route put
before every other (``router.call_route``, without FastAPI's per-request machinery):
it must read bodies, refuse bad ones and answer exactly as the documented FastAPI route
would, through the app's error handlers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from millpond.server.app import create_app
from millpond.server.config import Settings
from millpond.server.modules import router as modules_router
from millpond.server.query import router as query_router
from millpond.server.testing import ServerThread

from .test_service import CHAT, Db, published


@pytest.fixture(scope="module")
def chat(server: ServerThread, make_user: Callable[..., tuple[str, str]]) -> Db:
    username, key = make_user(prefix="route")
    return published(server.url, key, f"{username}/routed", CHAT)


def test_the_plain_routes_come_before_every_other() -> None:
    app = create_app(Settings())
    assert app.router.routes[:2] == [modules_router.call_route, query_router.query_route]
    paths = app.openapi()["paths"]
    for path in ("/v1/databases/{owner}/{name}/call/{reducer}", "/v1/query"):
        assert set(paths[path]) == {"post"}  # their FastAPI twins document them


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b'["hi"]', JSON, 200, None),
        (b'{"text": "hi"}', {"content-type": "application/json; charset=utf-8"}, 200, None),
        (b'["hi"]', {"content-type": "application/vnd.chat+json"}, 200, None),
        (b"", {}, 400, "invalid_arguments"),  # no body: no arguments, text is missing
        (b"[]", JSON, 400, "invalid_arguments"),
        (b"[5]", JSON, 400, "invalid_arguments"),
        (b'"hi"', JSON, 400, "invalid_arguments"),  # neither an array nor an object
        (b'["hi"]', {}, 400, "invalid_arguments"),  # no content type: not read as JSON
        (b'["hi"]', {"content-type": "text/plain"}, 400, "invalid_arguments"),
        (b"text=hi", {"content-type": "application/x-www-form-urlencoded"}, 400, None),
        (b"[1,", JSON, 422, "validation_error"),
        (b'["hi"] and more', JSON, 422, "validation_error"),
        (b"\xff\xfe", JSON, 422, "validation_error"),
        (b'[""]', JSON, 422, "reducer_failed"),
        (b"[" * 200 + b"]" * 200, JSON, 400, "json_too_deep"),
    ],
)
def test_bodies(chat: Db, body: bytes, headers: dict[str, str], status: int, code: Any) -> None:
    before = chat.sql("SELECT count(*) FROM message").json()["data"][0][0]
    r = httpx.post(
        f"{chat.url}/call/send_message",
        content=body,
        headers={"Authorization": f"Bearer {chat.key}", **headers},
        timeout=60,
    )
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    after = chat.sql("SELECT count(*) FROM message").json()["data"][0][0]
    if status == 200:
        assert set(r.json()) == {
            "status",
            "reducer",
            "request_id",
            "return",
            "retries",
            "duration_us",
            "xid",
        }
        assert r.json()["status"] == "committed" and after == before + 1
    else:
        assert after == before  # refused: nothing changed
        if code is not None:
            assert r.json()["error"]["code"] == code, r.text


def test_methods_paths_and_keys(chat: Db) -> None:
    r = chat("GET", "/call/send_message")
    assert (r.status_code, r.json()["error"]["code"]) == (405, "method_not_allowed")
    assert r.headers["allow"] == "POST"
    assert chat("POST", "/call/a/b", json=[]).status_code == 404
    r = httpx.post(f"{chat.url}/call/send_message", json=["hi"], timeout=60)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized")
    r = chat("POST", "/call/nope", json=[])
    assert (r.status_code, r.json()["error"]["code"]) == (404, "reducer_not_found")
    token = httpx.post(f"{chat.url}/identities", timeout=60).json()["token"]
    r = chat("POST", "/call/send_message", key=token, json=["from an identity"])
    assert r.status_code == 200, r.text  # an end user's token may call reducers
    r = chat("POST", "/call/wipe", key=token, json=[])
    assert (r.status_code, r.json()["error"]["code"]) == (403, "reducer_private")
    assert chat("GET", "/module/versions", key=token).status_code == 403  # nothing else


def test_answers_carry_the_request_id_and_are_counted_by_route(
    chat: Db, server: ServerThread
) -> None:
    r = httpx.post(
        f"{chat.url}/call/send_message",
        json=["traced"],
        headers={"Authorization": f"Bearer {chat.key}", "X-Request-Id": "abc-123"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "abc-123"
    assert r.json()["request_id"] == "abc-123"  # the call's id is the request's
    assert r.headers["x-content-type-options"] == "nosniff"
    metrics = httpx.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.admin_key}"}
    ).text
    assert 'route="/v1/databases/{owner}/{name}/call/{reducer}"' in metrics
