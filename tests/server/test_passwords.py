"""Users' passwords over the API: set by the user (``PUT /v1/me/password``), reset by an
admin (``PUT /v1/users/{username}/password``), checked by the console's login (with its
throttle). Every refusal has a stable code and changes nothing; no answer holds a hash."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from console._helpers import password_login
from millpond.server.accounts import logins

from ._helpers import assert_error, unique
from .conftest import Call

MakeUser = Callable[..., tuple[str, str]]
Login = Callable[[str, str], httpx.Response]

FIRST = "first password 1"
SECOND = "second password 2"


@pytest.fixture
def login(base_url: str) -> Iterator[Login]:
    """``login(username, password)``: a console password login in a fresh browser (the
    answer: 303 when it worked)."""
    clients: list[httpx.Client] = []

    def attempt(username: str, password: str) -> httpx.Response:
        http = httpx.Client(base_url=base_url, timeout=30)
        clients.append(http)
        return password_login(http, username, password)

    yield attempt
    for http in clients:
        http.close()


def _has_password(call: Call, key: str) -> bool:
    r = call("GET", "/v1/me", key)
    assert r.status_code == 200, r.text
    assert "password_hash" not in r.text and "scrypt" not in r.text
    return bool(r.json()["has_password"])


def _set_own(call: Call, key: str, body: object) -> httpx.Response:
    return call("PUT", "/v1/me/password", key, json=body)


def test_a_user_sets_a_first_password_then_changes_it(
    call: Call, make_user: MakeUser, login: Login
) -> None:
    name, key = make_user(prefix="pw")
    assert _has_password(call, key) is False
    assert login(name, FIRST).status_code == 401  # no password yet: no password login

    r = _set_own(call, key, {"password": FIRST})
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert _has_password(call, key) is True
    assert login(name, FIRST).status_code == 303
    assert login(name.upper(), FIRST).status_code == 303  # usernames are case-insensitive

    # changing it needs the current one
    assert_error(_set_own(call, key, {"password": SECOND}), 422, "current_password_required")
    wrong = _set_own(call, key, {"password": SECOND, "current_password": "not it at all"})
    assert_error(wrong, 403, "wrong_password")
    assert login(name, FIRST).status_code == 303  # nothing changed
    assert login(name, SECOND).status_code == 401

    r = _set_own(call, key, {"password": SECOND, "current_password": FIRST})
    assert r.status_code == 204, r.text
    assert login(name, FIRST).status_code == 401
    assert login(name, SECOND).status_code == 303


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"password": "x" * 9}, 422, "invalid_password"),
        ({"password": "x" * 1025}, 422, "invalid_password"),
        ({"password": ""}, 422, "invalid_password"),
        ({}, 422, "validation_error"),
        ({"password": 1234567890123}, 422, "validation_error"),
        ({"password": "long enough\x00really"}, 422, "validation_error"),
        ({"password": FIRST, "extra": 1}, 422, "validation_error"),
        ({"new_password": FIRST}, 422, "validation_error"),
    ],
)
def test_bad_passwords_are_refused_and_change_nothing(
    call: Call, make_user: MakeUser, body: object, status: int, code: str
) -> None:
    _, key = make_user(prefix="pwbad")
    assert_error(_set_own(call, key, body), status, code)
    assert _has_password(call, key) is False


def test_a_lone_surrogate_is_refused(call: Call, make_user: MakeUser, base_url: str) -> None:
    _, key = make_user(prefix="pwsur")
    r = httpx.put(
        f"{base_url}/v1/me/password",
        content=b'{"password": "abcdefghij\\ud800"}',
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    assert_error(r, 400, "invalid_text")
    assert _has_password(call, key) is False


def test_the_shortest_and_longest_passwords(call: Call, make_user: MakeUser, login: Login) -> None:
    for password in ("x" * 10, "é" * 1024):
        name, key = make_user(prefix="pwlen")
        assert _set_own(call, key, {"password": password}).status_code == 204
        assert login(name, password).status_code == 303


def test_only_a_users_own_write_key_sets_their_password(call: Call, make_user: MakeUser) -> None:
    name, key = make_user(prefix="pwwho")
    read_only = call("POST", "/v1/keys", key, json={"scope": "read"}).json()["secret"]
    assert_error(_set_own(call, read_only, {"password": FIRST}), 403, "read_only_key")

    sa = call("POST", "/v1/service-accounts", key, json={"name": "bot"}).json()
    sa_key = call("POST", f"/v1/service-accounts/{sa['id']}/keys", key, json={}).json()
    assert_error(_set_own(call, sa_key["secret"], {"password": FIRST}), 403, "forbidden")

    env = call("POST", "/v1/flags/environments", key, json={"name": "prod"}).json()
    bound = call("POST", f"/v1/flags/environments/{env['id']}/keys", key, json={}).json()
    assert_error(_set_own(call, bound["secret"], {"password": FIRST}), 403, "environment_key")
    reset = call("PUT", f"/v1/users/{name}/password", bound["secret"], json={"password": FIRST})
    assert_error(reset, 403, "environment_key")

    assert_error(
        call("PUT", "/v1/me/password", None, json={"password": FIRST}), 401, "unauthorized"
    )
    assert _has_password(call, key) is False


def test_an_admin_resets_a_users_password(call: Call, make_user: MakeUser, login: Login) -> None:
    _, admin = make_user(is_admin=True, prefix="pwadmin")
    name, key = make_user(prefix="pwreset")
    assert _set_own(call, key, {"password": FIRST}).status_code == 204

    r = call("PUT", f"/v1/users/{name.upper()}/password", admin, json={"password": SECOND})
    assert r.status_code == 204, r.text
    assert login(name, FIRST).status_code == 401
    assert login(name, SECOND).status_code == 303
    # the user can change it on with the one the admin set
    again = _set_own(call, key, {"password": FIRST, "current_password": SECOND})
    assert again.status_code == 204


def test_who_may_reset_and_bad_resets_change_nothing(
    call: Call, make_user: MakeUser, login: Login
) -> None:
    _, admin = make_user(is_admin=True, prefix="pwadm")
    name, key = make_user(prefix="pwvictim")
    other, other_key = make_user(prefix="pwother")
    assert _set_own(call, key, {"password": FIRST}).status_code == 204
    path = f"/v1/users/{name}/password"

    assert_error(call("PUT", path, other_key, json={"password": SECOND}), 403, "admin_required")
    own_path = f"/v1/users/{other}/password"
    assert_error(call("PUT", own_path, other_key, json={"password": SECOND}), 403, "admin_required")
    read_admin = call("POST", "/v1/keys", admin, json={"scope": "read"}).json()["secret"]
    assert_error(call("PUT", path, read_admin, json={"password": SECOND}), 403, "read_only_key")
    sa = call("POST", "/v1/service-accounts", admin, json={"name": "ops"}).json()
    sa_key = call("POST", f"/v1/service-accounts/{sa['id']}/keys", admin, json={}).json()
    refused = call("PUT", path, sa_key["secret"], json={"password": SECOND})
    assert_error(refused, 403, "admin_required")
    assert_error(call("PUT", path, None, json={"password": SECOND}), 401, "unauthorized")

    assert_error(call("PUT", path, admin, json={"password": "short"}), 422, "invalid_password")
    extra = {"password": SECOND, "current_password": FIRST}
    assert_error(call("PUT", path, admin, json=extra), 422, "validation_error")
    missing = f"/v1/users/{unique('nobody')}/password"
    assert_error(call("PUT", missing, admin, json={"password": SECOND}), 404, "user_not_found")
    bad_name = "/v1/users/no%20such%20user/password"
    assert_error(call("PUT", bad_name, admin, json={"password": SECOND}), 404, "user_not_found")

    assert login(name, FIRST).status_code == 303  # nothing changed
    assert _has_password(call, other_key) is False


def test_the_login_throttle(call: Call, make_user: MakeUser, login: Login) -> None:
    _, admin = make_user(is_admin=True, prefix="pwthr")
    name, key = make_user(prefix="pwlocked")
    assert _set_own(call, key, {"password": FIRST}).status_code == 204
    for _ in range(logins.MAX_FAILURES):
        assert login(name, "wrong password").status_code == 401
    locked = login(name, FIRST)  # even the right password, for a while
    assert locked.status_code == 429
    assert "too many wrong passwords for this user" in locked.text
    assert login(name.upper(), FIRST).status_code == 429
    # the API's check of the current password is throttled with it
    change = _set_own(call, key, {"password": SECOND, "current_password": FIRST})
    assert_error(change, 429, "too_many_attempts")
    # an API key still logs in; an admin's reset lifts the throttle
    r = call("PUT", f"/v1/users/{name}/password", admin, json={"password": SECOND})
    assert r.status_code == 204
    assert login(name, SECOND).status_code == 303


def test_the_throttle_counts_wrong_current_passwords(call: Call, make_user: MakeUser) -> None:
    _, key = make_user(prefix="pwcur")
    assert _set_own(call, key, {"password": FIRST}).status_code == 204
    wrong = {"password": SECOND, "current_password": "not the password"}
    for _ in range(logins.MAX_FAILURES):
        assert_error(_set_own(call, key, wrong), 403, "wrong_password")
    right = {"password": SECOND, "current_password": FIRST}
    assert_error(_set_own(call, key, right), 429, "too_many_attempts")


def test_unknown_users_are_throttled_alike(login: Login) -> None:
    """No user enumeration: an unknown username answers as a wrong password does, and is
    throttled after as many failures."""
    nobody = unique("nobody")
    answers = [login(nobody, "whatever it is") for _ in range(logins.MAX_FAILURES)]
    assert {a.status_code for a in answers} == {401}
    assert login(nobody, "whatever it is").status_code == 429


def test_every_login_verifies_a_hash(
    login: Login, call: Call, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No user enumeration by timing: an unknown user, a user without a password and a
    wrong password each cost one scrypt verification (against a dummy hash if need be)."""
    verified: list[str] = []
    real = logins.passwords.verify

    def counting(password: str, stored: str) -> bool:
        verified.append(stored)
        return real(password, stored)

    monkeypatch.setattr(logins.passwords, "verify", counting)
    user, _ = make_user(prefix="nopassword")
    for username in (unique("nobody"), user):
        verified.clear()
        assert login(username, "whatever it is").status_code == 401
        assert verified == [logins.passwords.dummy_hash()], username


def test_password_checks_take_turns(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """However many logins arrive at once, the server runs at most VERIFYING_AT_ONCE
    password checks at a time (each is ~40 ms of a core)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    running, most = 0, 0
    lock = threading.Lock()
    real = logins.passwords.verify

    def counting(password: str, stored: str) -> bool:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return real(password, stored)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(logins.passwords, "verify", counting)

    def attempt(n: int) -> int:
        with httpx.Client(base_url=base_url, timeout=60) as http:
            return password_login(http, unique(f"flood{n}"), "whatever it is").status_code

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(attempt, range(12)))
    assert answers == [401] * 12
    assert 1 <= most <= 2, most
