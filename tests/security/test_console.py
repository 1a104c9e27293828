"""Attacks on the web console, as a hostile site or tenant would make them: cross-site
login and form POSTs, forged notices, framing, stolen or stale cookies, markup in flag
names, descriptions and audit entries. Over plain HTTP (httpx) and in Debian's chromium,
with a hostile page served from another origin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, Page

from _waiting import wait_until
from conftest import FlagsEnv, RunningServer
from console._helpers import COOKIE, browser_login, console_client, form_token, login

EVIL = "http://evil.test"
MakeUser = Callable[..., tuple[str, str]]


def _logged_in(http: httpx.Client) -> bool:
    """Whether the client's console session still opens the flags page."""
    return http.get("/console/flags").status_code == 200


def _replay(base_url: str, session_id: str) -> httpx.Response:
    """The flags page asked for with a bare session cookie (no client-side expiry)."""
    with httpx.Client(base_url=base_url, cookies={COOKIE: session_id}) as http:
        return http.get("/console/flags")


def _session_id(http: httpx.Client) -> str:
    value = http.cookies.get(COOKIE, path="/console")
    assert value
    return value


# -- login CSRF ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1.evil.test"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": EVIL, "Sec-Fetch-Site": "same-origin"},
    ],
)
def test_cross_site_login_posts_are_refused(
    base_url: str, flags_env: FlagsEnv, headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=base_url) as http:
        token = form_token(http.get("/console/login").text)  # even with a valid token
        r = http.post(
            "/console/login", data={"api_key": flags_env.key, "csrf": token}, headers=headers
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_site_request"
        assert COOKIE not in r.headers.get("set-cookie", "")
        assert not _logged_in(http)


def test_login_without_its_form_token_is_refused(base_url: str, flags_env: FlagsEnv) -> None:
    key = flags_env.key
    with httpx.Client(base_url=base_url) as http:  # never saw the form: no token cookie
        r = http.post("/console/login", data={"api_key": key})
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
        r = http.post("/console/login", data={"api_key": key, "csrf": "x" * 43})
        assert r.status_code == 403
        token = form_token(http.get("/console/login").text)
        for forged in ("", "x" * 43, token[:-1], "é" * 43):
            r = http.post("/console/login", data={"api_key": key, "csrf": forged})
            assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
        assert not _logged_in(http)
        assert login(http, key).status_code == 303  # the real form works
        assert _logged_in(http)


def test_login_csrf_from_a_hostile_page(
    browser: Browser, base_url: str, flags_env: FlagsEnv
) -> None:
    """A page on another origin auto-submits a login form with the attacker's key (so the
    victim would work in the attacker's account): refused, the victim stays logged out."""
    attacker_key = flags_env.bound_key()  # any valid key: the attacker's own
    context, page = _evil_page(
        browser,
        f"""<form id="f" method="post" action="{base_url}/console/login">
        <input name="api_key" value="{attacker_key}"><input name="csrf" value="guess">
        </form><script>document.getElementById("f").submit()</script>""",
    )
    try:
        with page.expect_response(f"{base_url}/console/login") as answer:
            page.goto(f"{EVIL}/")
        assert answer.value.status == 403
        page.goto(f"{base_url}/console/flags")
        assert page.url.endswith("/console/login")
        assert not [c for c in context.cookies() if c["name"] == COOKIE]
    finally:
        context.close()


def test_form_csrf_from_a_hostile_page(
    browser: Browser, base_url: str, flags_env: FlagsEnv
) -> None:
    """The victim is logged in; another site posts the toggle form: nothing changes."""
    flags_env("POST", "/flags", 201, json={"key": "beta"})
    action = f"{base_url}/console/flags/beta/toggle?env={flags_env.id}"
    context, page = _evil_page(
        browser,
        f"""<form id="f" method="post" action="{action}"><input name="csrf" value="guess">
        </form><script>document.getElementById("f").submit()</script>""",
    )
    try:
        browser_login(page, base_url, flags_env.key)
        page.goto(f"{base_url}/console/flags")
        with page.expect_response(action) as answer:
            page.goto(f"{EVIL}/")
        assert answer.value.status == 403
        assert flags_env("GET", "/flags/beta")["default_value"] is False
    finally:
        context.close()


# -- logged-in CSRF tokens are bound to the session ------------------------------------------


def test_csrf_tokens_are_bound_to_the_session(base_url: str, flags_env: FlagsEnv) -> None:
    flags_env("POST", "/flags", 201, json={"key": "beta"})
    url = f"/console/flags/beta/toggle?env={flags_env.id}"
    with (
        console_client(base_url, flags_env.key) as first,
        console_client(base_url, flags_env.key) as second,
    ):
        theirs = form_token(first.get("/console/flags").text)
        mine = form_token(second.get("/console/flags").text)
        assert theirs != mine
        r = second.post(url, data={"csrf": theirs})
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
        assert flags_env("GET", "/flags/beta")["default_value"] is False
        r = second.post(url, data={"csrf": mine}, headers={"Origin": EVIL})
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_site_request"
        assert flags_env("GET", "/flags/beta")["default_value"] is False
        r = second.post(url, data={"csrf": mine}, headers={"Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 303
        assert flags_env("GET", "/flags/beta")["default_value"] is True


# -- notices -----------------------------------------------------------------------------------


FORGED = "Your account is locked: call +1 555 0100"


@pytest.mark.parametrize(
    "path",
    [
        "/console/flags?flash={text}",
        "/console/flags?flash={text}&flash_kind=ok",
        "/console/flags?notice={text}",
        "/console/flags/beta?env={env}&flash={text}&saved=1",
        "/console/audit?env={env}&flash={text}",
    ],
)
def test_the_query_string_never_becomes_a_notice(
    base_url: str, flags_env: FlagsEnv, path: str
) -> None:
    flags_env("POST", "/flags", 201, json={"key": "beta"})
    with console_client(base_url, flags_env.key) as http:
        page = http.get(path.format(text=FORGED, env=flags_env.id))
        assert page.status_code == 200
        assert "call +1 555" not in page.text and 'class="flash' not in page.text


@pytest.mark.parametrize("notice", [FORGED, "expired=1", "<b>hi</b>", "__class__"])
def test_the_login_page_shows_only_its_own_notices(base_url: str, notice: str) -> None:
    with httpx.Client(base_url=base_url) as http:
        page = http.get("/console/login", params={"notice": notice, "flash": notice})
        assert 'class="flash' not in page.text and "call +1 555" not in page.text
        ended = http.get("/console/login", params={"notice": "expired"})
        assert "Your session ended: log in again." in ended.text


def test_notices_belong_to_their_session_and_show_once(base_url: str, flags_env: FlagsEnv) -> None:
    flags_env("POST", "/flags", 201, json={"key": "beta"})
    with (
        console_client(base_url, flags_env.key) as actor,
        console_client(base_url, flags_env.key) as onlooker,
    ):
        csrf = form_token(actor.get(f"/console/flags?env={flags_env.id}").text)
        r = actor.post(f"/console/flags/beta/toggle?env={flags_env.id}", data={"csrf": csrf})
        assert r.status_code == 303 and "flash" not in r.headers["location"]
        assert "Toggled beta." not in onlooker.get(f"/console/flags?env={flags_env.id}").text
        assert "Toggled beta." in actor.get(r.headers["location"]).text
        assert "Toggled beta." not in actor.get(r.headers["location"]).text


# -- the cookie and the server-side session -----------------------------------------------------


def test_the_cookie_holds_a_session_id_not_the_key(base_url: str, flags_env: FlagsEnv) -> None:
    key = flags_env.key
    with httpx.Client(base_url=base_url) as http:
        answer = login(http, key)
        cookie = next(
            c for c in answer.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}=")
        )
        session_id = _session_id(http)
        assert key not in cookie and key[3:] not in session_id and session_id != key
        lowered = cookie.lower()
        for part in ("httponly", "samesite=strict", "path=/console", "max-age=43200"):
            assert part in lowered
        assert "secure" not in lowered  # plain http here; https adds it
        # the session id is no API key, and the key is no session cookie
        me = http.get("/v1/me", headers={"Authorization": f"Bearer {session_id}"})
        assert me.status_code == 401
    assert _replay(base_url, key).headers.get("location") == "/console/login?notice=expired"
    assert _replay(base_url, session_id).status_code == 200


def test_a_planted_session_id_is_replaced_at_login(base_url: str, flags_env: FlagsEnv) -> None:
    """Session fixation: an id the attacker knows (their own session's) is never kept."""
    with console_client(base_url, flags_env.bound_key(scope="read")) as attacker:
        planted = _session_id(attacker)
        with httpx.Client(base_url=base_url) as victim:
            victim.cookies.set(COOKIE, planted, domain="127.0.0.1", path="/console")
            assert login(victim, flags_env.key).status_code == 303
            assert _session_id(victim) != planted
        assert not _logged_in(attacker)  # the planted session ended


def test_sessions_expire(
    base_url: str, server: RunningServer, flags_env: FlagsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server.settings, "console_session_ttl_s", 1.0)
    with console_client(base_url, flags_env.key) as http:
        session_id = _session_id(http)
        assert _replay(base_url, session_id).status_code == 200
    wait_until(lambda: _replay(base_url, session_id).status_code == 303)


def test_a_session_ends_with_its_key(base_url: str, flags_env: FlagsEnv) -> None:
    made = flags_env.http.post(
        "/v1/keys",
        # long enough to log in with it on a loaded machine, short enough to wait for
        json={"scope": "write", "expires_in_seconds": 6},
        headers={"Authorization": f"Bearer {flags_env.key}"},
    )
    assert made.status_code == 201, made.text
    with console_client(base_url, made.json()["secret"]) as expiring:
        assert _logged_in(expiring)
        wait_until(lambda: not _logged_in(expiring))
    owner_auth = {"Authorization": f"Bearer {flags_env.key}"}
    bound = flags_env("POST", "/keys", 201, json={"scope": "write"})["secret"]
    mine = flags_env.http.post("/v1/keys", json={}, headers=owner_auth).json()["secret"]
    for secret in (bound, mine):
        with (
            console_client(base_url, secret) as http,
            console_client(base_url, flags_env.key) as owner,
        ):
            assert _logged_in(http)
            if secret == bound:  # the environment's owner revokes the bound key
                flags_env("DELETE", f"/keys/{_key_id(flags_env, secret)}", 204)
            else:  # a key revokes itself
                r = http.post(
                    "/v1/keys/revoke",
                    json={"api_key": secret},
                    headers={"Authorization": f"Bearer {secret}"},
                )
                assert r.status_code == 200 and r.json()["count"] == 1, r.text
            assert not _logged_in(http)
            assert _logged_in(owner)  # nobody else's session ended


def _key_id(flags_env: FlagsEnv, secret: str) -> str:
    r = flags_env.http.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 200, r.text
    return str(r.json()["key"]["id"])


def test_a_session_ends_with_its_user(
    base_url: str, admin_key: str, make_user: MakeUser, flags_env: FlagsEnv
) -> None:
    name, key = make_user(prefix="doomed")
    with console_client(base_url, key) as http, console_client(base_url, flags_env.key) as other:
        session_id = _session_id(http)
        r = http.delete(f"/v1/users/{name}", headers={"Authorization": f"Bearer {admin_key}"})
        assert r.status_code == 204, r.text
        assert not _logged_in(http)
        assert _replay(base_url, session_id).status_code == 303
        assert _logged_in(other)


def test_logout_ends_the_session_on_the_server(base_url: str, flags_env: FlagsEnv) -> None:
    with (
        console_client(base_url, flags_env.key) as http,
        console_client(base_url, flags_env.key) as other,
    ):
        session_id = _session_id(http)
        csrf = form_token(http.get("/console/flags").text)
        r = http.post("/console/logout", data={"csrf": "nope"})
        assert r.status_code == 403 and _logged_in(http)
        r = http.post("/console/logout", data={"csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/console/login?notice=signed_out"
        assert _replay(base_url, session_id).status_code == 303  # a kept copy is dead too
        assert _logged_in(other)


def test_sign_out_everywhere(base_url: str, flags_env: FlagsEnv, make_user: MakeUser) -> None:
    _, stranger = make_user(prefix="bystander")
    bound = flags_env.bound_key()
    with (
        console_client(base_url, flags_env.key) as laptop,
        console_client(base_url, flags_env.key) as phone,
        console_client(base_url, bound) as helper,
        console_client(base_url, stranger) as bystander,
    ):
        # a key bound to an environment signs out only its own sessions
        csrf = form_token(helper.get("/console/flags").text)
        r = helper.post("/console/logout", data={"csrf": csrf, "everywhere": "1"})
        assert r.status_code == 303
        assert not _logged_in(helper) and _logged_in(laptop) and _logged_in(phone)
        with console_client(base_url, bound) as helper_again:
            csrf = form_token(laptop.get("/console/flags").text)
            r = laptop.post("/console/logout", data={"csrf": csrf, "everywhere": "1"})
            assert r.headers["location"] == "/console/login?notice=signed_out_everywhere"
            assert not _logged_in(laptop) and not _logged_in(phone)
            assert not _logged_in(helper_again)  # the owner's keys' sessions all end
        assert _logged_in(bystander)


def test_no_redirect_leaves_the_console(base_url: str, flags_env: FlagsEnv) -> None:
    with httpx.Client(base_url=base_url) as http:
        token = form_token(http.get("/console/login", params={"next": EVIL}).text)
        r = http.post(
            "/console/login?next=" + EVIL,
            data={"api_key": flags_env.key, "csrf": token, "next": EVIL},
        )
        assert r.status_code == 303 and r.headers["location"] == "/console/databases"
        for path in (f"/console/flags?next={EVIL}", "/console", "/console/login?next=//evil.test"):
            location = http.get(path).headers.get("location")
            assert location is None or location.startswith("/console/")


# -- headers -------------------------------------------------------------------------------------


def _assert_hardened(r: httpx.Response) -> None:
    h = r.headers
    assert h["x-content-type-options"] == "nosniff", r.url
    assert h["x-frame-options"] == "DENY"
    expected = "same-origin" if r.url.path.startswith("/console") else "no-referrer"
    assert h["referrer-policy"] == expected
    assert h["cross-origin-opener-policy"] == "same-origin"
    assert "frame-ancestors 'none'" in h["content-security-policy"]


def test_security_headers_on_every_response(base_url: str, flags_env: FlagsEnv) -> None:
    with console_client(base_url, flags_env.key) as http:
        console_pages = [
            http.get("/console/login"),
            http.get("/console/flags"),
            http.get(f"/console/audit?env={flags_env.id}"),
            http.post("/console/logout", data={}),  # a refused POST (JSON error) too
        ]
        for r in console_pages:
            _assert_hardened(r)
            assert r.headers["cache-control"] == "no-store"
            csp = r.headers["content-security-policy"]
            for part in ("default-src 'self'", "base-uri 'none'", "form-action 'self'"):
                assert part in csp
            assert "object-src 'none'" in csp and "unsafe-inline" not in csp
        static = http.get("/console/static/console.js")
        assert static.status_code == 200 and static.headers["content-type"].startswith(
            "text/javascript"
        )
        _assert_hardened(static)
        assert http.get("/console/static/../router.py").status_code == 404
        assert http.get("/console/static/sessions.py").status_code == 404
        for r in (
            http.get("/v1/health"),
            http.get("/v1/me", headers={"Authorization": f"Bearer {flags_env.key}"}),
            http.get("/v1/me"),  # 401
            http.get("/v1/nothing-here"),  # 404
            http.get("/docs"),
            http.get("/openapi.json"),
        ):
            _assert_hardened(r)
            if r.url.path.startswith("/v1/"):
                assert r.headers["cache-control"] == "no-store"
                assert r.headers["content-security-policy"].startswith("default-src 'none'")


def test_pages_cannot_be_framed(browser: Browser, base_url: str, flags_env: FlagsEnv) -> None:
    """Clickjacking: a hostile page frames the console, the API docs and the API; the
    browser loads none of them (each frame shows chromium's error page)."""
    paths = ("/console/login", "/console/flags", "/docs", "/v1/health")
    context, page = _evil_page(
        browser, "".join(f'<iframe src="{base_url}{path}"></iframe>' for path in paths)
    )
    try:
        page.goto(f"{EVIL}/")
        page.wait_for_load_state("load")
        framed = [f for f in page.frames if f != page.main_frame]
        assert len(framed) == len(paths)
        for frame in framed:
            assert frame.url == "chrome-error://chromewebdata/"
            assert "api_key" not in frame.content() and "swagger" not in frame.content()
    finally:
        context.close()


# -- markup in tenant data -----------------------------------------------------------------------


MARKUP = '"><img src=x onerror=alert(1)><script>alert(2)</script>'


def test_markup_in_flags_and_audit_entries_stays_text(
    browser: Browser, base_url: str, flags_env: FlagsEnv
) -> None:
    flags_env("POST", "/flags", 201, json={"key": "x-s.s:1", "name": MARKUP, "description": MARKUP})
    flags_env("PATCH", "/flags/x-s.s:1", json={"name": MARKUP + "2"})
    with console_client(base_url, flags_env.key) as http:
        for path in (
            f"/console/flags?env={flags_env.id}&q=<script>",
            f"/console/flags/x-s.s:1?env={flags_env.id}",
            f"/console/audit?env={flags_env.id}",
        ):
            page = http.get(path).text
            assert "<img src=x" not in page and "<script>alert" not in page
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        alerts: list[str] = []

        def record(dialog: Dialog) -> None:
            alerts.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", record)
        browser_login(page, base_url, flags_env.key)
        page.goto(f"{base_url}/console/flags")
        page.goto(f"{base_url}/console/flags?env={flags_env.id}")
        assert MARKUP + "2" in page.inner_text("tr[data-flag='x-s.s:1']")
        page.goto(f"{base_url}/console/flags/x-s.s:1?env={flags_env.id}")
        assert page.input_value("input[name=description]") == MARKUP
        page.goto(f"{base_url}/console/audit?env={flags_env.id}")
        assert "alert(2)" in page.inner_text("tr.audit-entry >> nth=0")  # as JSON text
        assert alerts == []
    finally:
        context.close()


# -- browser plumbing ------------------------------------------------------------------------------


def _evil_page(browser: Browser, body: str) -> tuple[BrowserContext, Page]:
    """A context where ``http://evil.test/`` serves ``body`` (another origin)."""
    context = browser.new_context()
    html = f"<!doctype html><html><body>{body}</body></html>"

    def serve(route: Any) -> None:
        route.fulfill(status=200, content_type="text/html", body=html)

    context.route(f"{EVIL}/**", serve)
    page = context.new_page()
    page.set_default_timeout(15_000)
    return context, page
