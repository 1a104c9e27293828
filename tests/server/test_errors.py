"""The one JSON error envelope ``{"error": {"code", "message", "details"}}``: every kind of
failure the HTTP layer itself produces (authentication, routing, validation, internal
errors) comes out in it with a stable code, and bad input changes nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ._helpers import assert_error, unique

Api = Callable[..., httpx.Response]


@pytest.fixture(scope="module")
def user(make_user: Callable[..., tuple[str, str]]) -> tuple[str, str]:
    return make_user()


# -- 401 -------------------------------------------------------------------------------


def test_health_needs_no_key(api: Api) -> None:
    assert api("GET", "/v1/health").status_code == 200
    live = api("GET", "/v1/health/live")
    assert live.status_code == 200 and live.json()["status"] == "ok"
    ready = api("GET", "/v1/health/ready")  # Postgres answers: ready
    assert ready.status_code == 200 and ready.json()["postgres"]["ok"] is True


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "bearer mp_" + "y" * 40},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Token mp_abc"},
        {"Authorization": "mp_abc"},
        {"Authorization": "Bearer mp_" + "x" * 40},
        {"Authorization": "Bearer not-a-millpond-key"},
    ],
    ids=[
        "missing",
        "empty",
        "scheme-only",
        "lowercase-scheme-unknown-key",
        "basic",
        "other-scheme",
        "no-scheme",
        "unknown-key",
        "foreign-token",
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/me"), ("GET", "/v1/databases"), ("POST", "/v1/query"), ("GET", "/v1/keys")],
)
def test_401_without_a_valid_key(
    base_url: str, headers: dict[str, str], method: str, path: str
) -> None:
    r = httpx.request(method, base_url + path, headers=headers, json={})
    err = assert_error(r, 401, "unauthorized")
    assert "Bearer" in err["message"] or "API key" in err["message"]
    presented = headers.get("Authorization", "").partition(" ")[2]
    assert not presented or presented not in r.text  # never echoed back


def test_401_comes_before_body_validation(base_url: str) -> None:
    # an anonymous caller learns nothing about what a body should look like
    r = httpx.post(f"{base_url}/v1/databases", json={"bogus": 1})
    assert_error(r, 401, "unauthorized")


def test_401_for_a_revoked_key(api: Api, user: tuple[str, str]) -> None:
    _, key = user
    created = api("POST", "/v1/keys", key, json={"name": "short-lived"}).json()
    assert api("GET", "/v1/me", created["secret"]).status_code == 200
    assert api("DELETE", f"/v1/keys/{created['id']}", key).status_code == 204
    assert_error(api("GET", "/v1/me", created["secret"]), 401, "unauthorized")
    assert_error(api("GET", "/v1/databases", created["secret"]), 401, "unauthorized")


def test_401_for_an_expired_key(api: Api, user: tuple[str, str]) -> None:
    _, key = user
    r = api("POST", "/v1/keys", key, json={"expires_in_seconds": 1})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["expires_at"] is not None
    assert api("GET", "/v1/me", created["secret"]).status_code == 200  # now cached
    time.sleep(1.5)
    assert_error(api("GET", "/v1/me", created["secret"]), 401, "unauthorized")
    assert_error(api("GET", "/v1/keys", created["secret"]), 401, "unauthorized")


def test_401_for_a_deleted_users_key(api: Api, admin_key: str, make_user: Any) -> None:
    name, key = make_user()
    assert api("GET", "/v1/me", key).status_code == 200
    assert api("DELETE", f"/v1/users/{name}", admin_key).status_code == 204
    assert_error(api("GET", "/v1/me", key), 401, "unauthorized")


# -- 404, 405 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nope"),
        ("GET", "/nope"),
        ("POST", "/v2/query"),
        ("GET", "/v1/databases/a/b/c/d"),
    ],
)
def test_404_unknown_route(api: Api, admin_key: str, method: str, path: str) -> None:
    assert_error(api(method, path, admin_key), 404, "not_found")
    assert_error(api(method, path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/health"),
        ("POST", "/v1/me"),
        ("PUT", "/v1/users"),
        ("PATCH", "/v1/keys"),
        ("GET", "/v1/query"),
        ("POST", "/v1/databases/a/b"),
    ],
)
def test_405_wrong_method(api: Api, admin_key: str, method: str, path: str) -> None:
    r = api(method, path, admin_key)
    assert_error(r, 405, "method_not_allowed")
    assert r.headers.get("allow")


# -- 422 -------------------------------------------------------------------------------


def _no_user(api: Api, admin_key: str, username: str) -> None:
    r = api("GET", f"/v1/users/{username}", admin_key)
    assert_error(r, 404, "user_not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"username": "{name}", "bogus": True},
        {"username": "{name}", "is_admin": "very"},
        {"username": "{name}", "is_admin": [True]},
        {"username": 12345},
        {"username": None},
        {"is_admin": False},
        {},
    ],
    ids=["unknown-field", "bad-bool", "list-bool", "int-name", "null-name", "no-name", "empty"],
)
def test_422_bad_user_bodies_create_nothing(api: Api, admin_key: str, body: dict[str, Any]) -> None:
    name = unique("v")
    body = {k: (name if v == "{name}" else v) for k, v in body.items()}
    err = assert_error(api("POST", "/v1/users", admin_key, json=body), 422, "validation_error")
    assert isinstance(err["details"], list) and err["details"]
    assert {"loc", "msg", "type"} <= set(err["details"][0])
    _no_user(api, admin_key, name)


def test_422_unknown_field_is_named(api: Api, admin_key: str) -> None:
    name = unique("v")
    r = api("POST", "/v1/users", admin_key, json={"username": name, "is_admn": True})
    err = assert_error(r, 422, "validation_error")
    assert "is_admn" in err["message"]
    assert err["details"][0]["loc"] == ["body", "is_admn"]
    _no_user(api, admin_key, name)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"[]", b'"a string"', b"null"],
    ids=["broken", "empty", "array", "string", "null"],
)
def test_422_body_that_is_not_an_object(base_url: str, admin_key: str, content: bytes) -> None:
    r = httpx.post(
        f"{base_url}/v1/databases",
        content=content,
        headers={"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
    )
    assert_error(r, 422, "validation_error")


@pytest.mark.parametrize("path", ["/v1/databases", "/v1/query"])  # a FastAPI and a plain route
@pytest.mark.parametrize(
    ("content_type", "sent"),
    [
        ("application/x-www-form-urlencoded", "as application/x-www-form-urlencoded"),
        ("text/plain; charset=utf-8", "as text/plain"),
        (None, "without a content type"),
    ],
)
def test_422_a_json_body_not_sent_as_json_says_so(
    base_url: str, admin_key: str, path: str, content_type: str | None, sent: str
) -> None:
    """curl's ``-d`` sends a form: the answer says to send JSON, with the header to add,
    and nothing is created."""
    name = unique("formdb")
    headers = {"Authorization": f"Bearer {admin_key}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    body = f'{{"name": "{name}", "database": "admin/{name}", "sql": "SELECT 1"}}'
    r = httpx.post(f"{base_url}{path}", content=body.encode(), headers=headers)
    error = assert_error(r, 422, "validation_error")
    assert error["message"] == (
        f"the body was sent {sent}: send it as JSON, with the header Content-Type: application/json"
    ), error
    listed = httpx.get(f"{base_url}/v1/databases", headers={"Authorization": f"Bearer {admin_key}"})
    assert name not in listed.text
    # sent as JSON but not an object: the message stays the validator's
    r = httpx.post(
        f"{base_url}{path}", content=b"[]", headers={**headers, "Content-Type": "application/json"}
    )
    assert "Content-Type" not in assert_error(r, 422, "validation_error")["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/databases", {"name": "x", "is_private": "maybe"}),
        ("POST", "/v1/databases", {"name": "x", "storage_limit_bytes": 0}),
        ("POST", "/v1/databases", {"name": "x", "storage_limit_bytes": -5}),
        ("POST", "/v1/databases", {"name": "x", "storage_limit_bytes": "lots"}),
        ("POST", "/v1/databases", {"name": ["x"]}),
        ("POST", "/v1/databases", {"name": "x", "owner": "someone"}),
        ("POST", "/v1/keys", {"scope": "admin"}),
        ("POST", "/v1/keys", {"expires_in_seconds": 0}),
        ("POST", "/v1/keys", {"expires_in_seconds": -1}),
        ("POST", "/v1/keys", {"expires_in_seconds": "soon"}),
        ("POST", "/v1/keys", {"name": "n" * 101}),
        ("POST", "/v1/keys", {"secret": "mp_chosen"}),
        ("POST", "/v1/keys/revoke", {"id": "key_x"}),
        ("POST", "/v1/service-accounts", {}),
        ("POST", "/v1/service-accounts", {"name": ""}),
        ("POST", "/v1/service-accounts", {"name": "n" * 101}),
        ("POST", "/v1/query", {"sql": "SELECT 1"}),
        ("POST", "/v1/query", {"database": "a/b"}),
        ("POST", "/v1/query", {"database": "a/b", "sql": ""}),
        ("POST", "/v1/query", {"database": "a/b", "sql": "SELECT 1", "data_format": "csv"}),
        ("POST", "/v1/query", {"database": "a/b", "sql": "SELECT 1", "timeout": 5}),
        ("GET", "/v1/service-accounts/abc", None),
        ("DELETE", "/v1/users/nobody?delete_databases=perhaps", None),
    ],
)
def test_422_wrong_types_and_unknown_fields(
    api: Api, user: tuple[str, str], method: str, path: str, body: dict[str, Any] | None
) -> None:
    _, key = user
    before = api("GET", "/v1/databases", key).json()
    keys_before = api("GET", "/v1/keys", key).json()
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    assert_error(api(method, path, key, **kwargs), 422, "validation_error")
    assert api("GET", "/v1/databases", key).json() == before
    assert len(api("GET", "/v1/keys", key).json()) == len(keys_before)


# -- bad input that used to reach Postgres and come back as a 500 -----------------------


def test_out_of_range_numbers_are_422_not_500(api: Api, user: tuple[str, str]) -> None:
    _, key = user
    name = unique("big")
    r = api("POST", "/v1/databases", key, json={"name": name, "storage_limit_bytes": 2**63})
    assert_error(r, 422, "validation_error")
    assert all(d["name"] != name for d in api("GET", "/v1/databases", key).json())
    for seconds in (10**12, 2**70):
        r = api("POST", "/v1/keys", key, json={"expires_in_seconds": seconds})
        assert_error(r, 422, "validation_error")


def test_nul_characters_are_4xx_not_500(api: Api, user: tuple[str, str], admin_key: str) -> None:
    username, key = user
    keys_before = len(api("GET", "/v1/keys", key).json())
    cases: list[tuple[str, str, str, dict[str, Any], int, str]] = [
        ("POST", "/v1/keys", key, {"json": {"name": "a\x00b"}}, 422, "validation_error"),
        (
            "POST",
            "/v1/service-accounts",
            key,
            {"json": {"name": "a\x00b"}},
            422,
            "validation_error",
        ),
        ("GET", "/v1/users/a%00b", admin_key, {}, 404, "user_not_found"),
        ("DELETE", "/v1/users/a%00b", admin_key, {}, 404, "user_not_found"),
        ("GET", f"/v1/databases/{username}/a%00b", key, {}, 404, "database_not_found"),
        ("GET", "/v1/databases/a%00b/c", key, {}, 404, "database_not_found"),
        ("DELETE", "/v1/keys/key_%00", key, {}, 404, "key_not_found"),
        ("POST", "/v1/keys/revoke", key, {"json": {"key_id": "k\x00"}}, 422, "validation_error"),
        (
            "POST",
            "/v1/query",
            key,
            {"json": {"database": f"{username}/x\x00", "sql": "SELECT 1"}},
            422,
            "validation_error",
        ),
    ]
    for method, path, who, kwargs, status, code in cases:
        assert_error(api(method, path, who, **kwargs), status, code)
    assert len(api("GET", "/v1/keys", key).json()) == keys_before
    assert api("GET", "/v1/service-accounts", key).json() == []


# -- 500 -------------------------------------------------------------------------------


def test_500_is_the_envelope_and_leaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """No honest input makes the running server fail any more (the ones that did are
    pinned above), so this drives the real app's catch-all handler in-process: a route
    that raises. The client gets the envelope with ``internal_error`` and nothing of the
    exception; the server log gets the traceback."""
    from millpond.server.app import create_app
    from millpond.server.config import Settings

    app = create_app(Settings())

    @app.get("/v1/_boom")
    async def boom() -> None:
        raise RuntimeError("SELECT secret_hash FROM api_keys -- /srv/millpond/app.py")

    async def get() -> httpx.Response:
        # ASGITransport does not run the lifespan (Postgres); the route needs none of it
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get("/v1/_boom")

    r = asyncio.run(get())
    err = assert_error(r, 500, "internal_error")
    assert err["details"] is None
    for leak in ("RuntimeError", "secret_hash", "SELECT", "app.py", "Traceback"):
        assert leak not in r.text
    assert any("RuntimeError" in rec.getMessage() for rec in caplog.records)


def test_error_messages_do_not_echo_secrets(api: Api, user: tuple[str, str]) -> None:
    # a key presented to the wrong place is not reflected back
    _, key = user
    r = api("POST", "/v1/keys/revoke", key, json={"api_key": "mp_" + "q" * 40})
    err = assert_error(r, 404, "key_not_found")
    assert "mp_" + "q" * 40 not in r.text
    assert err["details"] is None
