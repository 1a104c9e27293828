"""Identities from your own login provider, against a real server: the owner trusts an
issuer (keys inline, at a jwks_uri, or discovered through its openid-configuration, all
served by a local HTTP server with keys the tests generate); its end users call reducers
and subscribe as sha256(issuer, subject) with their claims as ``ctx.sender_auth``;
expired, badly signed, wrong-audience, unknown-issuer, not-yet-valid, unsigned and
HMAC tokens and missing claims are refused with their own codes; a removed issuer's
sockets close; the keys are fetched again when the issuer rotates them; and without
``module_issuer_allow_insecure`` the server fetches from public https addresses only."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import json
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from millpond import Millpond
from millpond.server.config import Settings
from millpond.server.modules.issuers import FetchError, Issuers, oidc_identity, public_host
from millpond.server.testing import ServerThread

from .test_service import Db

MakeUser = Callable[..., tuple[str, str]]

MODULE = textwrap.dedent(
    """
    from millpond.module import ReducerContext, Identity, table, reducer, primary_key

    @table(public=True)
    class Member:
        identity: Identity = primary_key()
        email: str | None = None
        issuer: str | None = None

    @reducer
    def join(ctx: ReducerContext) -> None:
        auth = ctx.sender_auth or {}
        if ctx.db.member.find(ctx.sender) is not None:
            return
        ctx.db.member.insert(
            Member(identity=ctx.sender, email=auth.get("email"), issuer=auth.get("iss"))
        )
    """
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _int(n: int) -> str:
    return _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Signer:
    """A login provider's key: its public JWK, and tokens it signs."""

    def __init__(self, alg: str, kid: str) -> None:
        self.alg, self.kid = alg, kid
        if alg.startswith(("RS", "PS")):
            self.key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            numbers = self.key.public_key().public_numbers()
            self.jwk = {"kty": "RSA", "n": _int(numbers.n), "e": _int(numbers.e)}
        elif alg == "ES256":
            self.key = ec.generate_private_key(ec.SECP256R1())
            numbers = self.key.public_key().public_numbers()
            x, y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
            self.jwk = {"kty": "EC", "crv": "P-256", "x": _b64(x), "y": _b64(y)}
        else:
            self.key = Ed25519PrivateKey.generate()
            raw = self.key.public_key().public_bytes_raw()
            self.jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}
        self.jwk |= {"kid": kid, "alg": alg, "use": "sig"}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        head = {"alg": self.alg, "typ": "JWT", "kid": self.kid} | header
        signing_input = f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(claims).encode())}"
        data = signing_input.encode()
        if self.alg.startswith("RS"):
            signature = self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        elif self.alg.startswith("PS"):
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            signature = self.key.sign(data, pss, hashes.SHA256())
        elif self.alg == "ES256":
            r, s = decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            signature = self.key.sign(data)
        return f"{signing_input}.{_b64(signature)}"


class Provider:
    """A login provider on a free local port: its openid-configuration and key set."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": provider.issuer, "jwks_uri": provider.issuer + "/jwks"}
                elif self.path == "/jwks":
                    provider.fetches += 1
                    body = {"keys": provider.keys}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    found = Provider()
    yield found
    found.close()


@pytest.fixture(scope="module")
def app(server: ServerThread, make_user: MakeUser) -> Db:
    username, key = make_user(prefix="oidc")
    r = httpx.post(
        f"{server.url}/v1/databases",
        json={"name": "app", "is_private": True},  # an issuer's users reach a private one
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    db = Db(server, key, f"{username}/app")
    r = db("POST", "/module", json={"files": {"app.py": MODULE}})
    assert r.status_code == 201, r.text
    return db


def _claims(issuer: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": issuer, "sub": "user-1", "aud": "my-app", "iat": now, "exp": now + 600} | extra


def _call(db: Db, token: str) -> httpx.Response:
    return httpx.post(
        f"{db.url}/call/join",
        json=[],
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )


def _error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, error
    return str(error["message"])


def test_an_issuers_users_call_reducers_with_their_claims(app: Db) -> None:
    signers = [Signer(alg, f"k-{alg}") for alg in ("RS256", "PS256", "ES256", "EdDSA")]
    issuer = "https://login.example.test"
    r = app(
        "PUT",
        "/module/issuers",
        json={
            "issuer": issuer,
            "audiences": ["my-app", "other-app"],
            "jwks": {"keys": [s.jwk for s in signers]},
            "required_claims": {"email_verified": True},
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["issuer"] == issuer and r.json()["jwks"] is not None
    for number, signer in enumerate(signers):
        claims = _claims(
            issuer, sub=f"user-{number}", email=f"u{number}@example.test", email_verified=True
        )
        r = _call(app, signer.sign(claims))
        assert r.status_code == 200, (signer.alg, r.text)
    rows = app.sql("SELECT identity, email, issuer FROM member ORDER BY email").json()["data"]
    assert rows == [
        [oidc_identity(issuer, f"user-{n}"), f"u{n}@example.test", issuer] for n in range(4)
    ]
    assert (
        oidc_identity(issuer, "user-0")
        == hashlib.sha256(f"millpond identity: oidc {issuer} user-0".encode()).hexdigest()
    )
    # the SDK and the realtime socket take the same token
    token = signers[0].sign(_claims(issuer, email_verified=True, sub="sdk-user"))
    with Millpond(token, app.base) as mp:
        mp.call(app.full_name, "join")
        with mp.realtime(app.full_name) as rt:
            assert rt.identity == oidc_identity(issuer, "sdk-user")
            rt.subscribe(["SELECT * FROM member"])
            assert rt.table("member").find(rt.identity) is not None
    listed = app("GET", "/module/issuers").json()
    assert [i["issuer"] for i in listed] == [issuer]


def test_bad_tokens_are_refused_with_clear_errors(app: Db) -> None:
    signer, stranger = Signer("RS256", "good"), Signer("RS256", "good")
    issuer = "https://strict.example.test"
    r = app(
        "PUT",
        "/module/issuers",
        json={
            "issuer": issuer,
            "audiences": ["my-app"],
            "jwks": {"keys": [signer.jwk]},
            "required_claims": {"role": "member"},
        },
    )
    assert r.status_code == 200, r.text
    good = _claims(issuer, role="member")
    assert _call(app, signer.sign(good)).status_code == 200
    now = int(time.time())
    body, _, signature = signer.sign(good).rpartition(".")
    unsigned = f"{_b64(json.dumps({'alg': 'none'}).encode())}.{body.split('.')[1]}."
    hmac_head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    cases = [
        (stranger.sign(good), 401, "invalid_token"),  # another key, same kid
        (f"{body}.{signature[::-1]}", 401, "invalid_token"),
        (signer.sign(good | {"exp": now - 3600}), 401, "token_expired"),
        (signer.sign(good | {"nbf": now + 3600}), 401, "token_not_yet_valid"),
        (signer.sign(good | {"aud": "someone-else"}), 401, "token_audience"),
        (signer.sign(good | {"iss": "https://evil.example.test"}), 401, "unknown_issuer"),
        (signer.sign(good | {"role": "admin"}), 403, "claim_required"),
        (signer.sign({k: v for k, v in good.items() if k != "exp"}), 401, "invalid_token"),
        (signer.sign({k: v for k, v in good.items() if k != "sub"}), 401, "invalid_token"),
        (signer.sign(good, kid="unknown"), 401, "invalid_token"),
        (unsigned, 401, "invalid_token"),
        (f"{hmac_head}.{body.split('.')[1]}.{signature}", 401, "invalid_token"),
        ("eyJhbGciOiJSUzI1NiJ9.not-json.sig", 401, "invalid_token"),
    ]
    for token, status, code in cases:
        message = _error(_call(app, token), status, code)
        assert message  # says what is wrong
    assert "millpond module issuers add" in _error(
        _call(app, signer.sign(good | {"iss": "https://evil.example.test"})), 401, "unknown_issuer"
    )
    # refused on the socket too, with the same reason
    url = app.base.replace("http://", "ws://") + f"/v1/realtime/{app.full_name}"
    for token, code in (
        (signer.sign(good | {"exp": now - 3600}), "token_expired"),
        (signer.sign(good | {"role": "x"}), "claim_required"),
    ):
        with (
            connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws,
            pytest.raises(ConnectionClosed) as info,
        ):
            ws.recv(timeout=30)
        assert info.value.rcvd is not None and info.value.rcvd.reason == code
    # a token reaches nothing but calls, the schema and the socket
    r = httpx.post(
        f"{app.base}/v1/query",
        json={"database": app.full_name, "sql": "SELECT 1"},
        headers={"Authorization": f"Bearer {signer.sign(good)}"},
        timeout=60,
    )
    _error(r, 403, "anonymous_identity")


def test_keys_from_the_issuers_discovery_and_rotation(app: Db, provider: Provider) -> None:
    first, second = Signer("ES256", "one"), Signer("ES256", "two")
    provider.keys = [first.jwk]
    r = app("PUT", "/module/issuers", json={"issuer": provider.issuer, "audiences": ["my-app"]})
    assert r.status_code == 200, r.text
    claims = _claims(provider.issuer, sub="rotating")
    assert _call(app, first.sign(claims)).status_code == 200
    fetched = provider.fetches
    assert _call(app, first.sign(claims)).status_code == 200
    assert provider.fetches == fetched  # kept, not fetched per call
    provider.keys = [first.jwk, second.jwk]  # the provider rotates in a new key
    assert _call(app, second.sign(claims)).status_code == 200
    assert provider.fetches == fetched + 1
    # a key no set holds: refused, and not fetched again at once
    _error(_call(app, Signer("ES256", "three").sign(claims)), 401, "invalid_token")
    assert provider.fetches == fetched + 1


def test_an_explicit_jwks_uri_and_a_removed_issuer(app: Db, provider: Provider) -> None:
    signer = Signer("RS256", "uri")
    provider.keys = [signer.jwk]
    issuer = "https://uri.example.test"
    r = app(
        "PUT",
        "/module/issuers",
        json={
            "issuer": issuer,
            "audiences": ["my-app"],
            "jwks_uri": provider.issuer + "/jwks",
        },
    )
    assert r.status_code == 200, r.text
    token = signer.sign(_claims(issuer, sub="leaving"))
    assert _call(app, token).status_code == 200
    url = app.base.replace("http://", "ws://") + f"/v1/realtime/{app.full_name}"
    with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        hello = json.loads(ws.recv(timeout=30))
        assert hello["identity"] == oidc_identity(issuer, "leaving")
        assert hello["issuer"] == issuer and hello["anonymous"] is False
        r = app("DELETE", "/module/issuers", params={"issuer": issuer})
        assert r.status_code == 204, r.text
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as info:
            while True:
                ws.recv(timeout=30)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4001
        assert time.monotonic() - started < 5
    _error(_call(app, token), 401, "unknown_issuer")
    _error(app("DELETE", "/module/issuers", params={"issuer": issuer}), 404, "issuer_not_found")


def test_issuer_configuration_errors(app: Db, make_user: MakeUser) -> None:
    good = {"issuer": "https://x.example.test", "audiences": ["a"]}
    bad = [
        (good | {"audiences": []}, "validation_error"),
        (good | {"audiences": [""]}, "invalid_issuer"),
        (good | {"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}, "invalid_jwks"),
        (good | {"jwks": {"keys": [Signer("RS256", "p").jwk | {"d": "AQAB"}]}}, "invalid_jwks"),
        (good | {"jwks": {"nope": 1}}, "invalid_jwks"),
        (
            good | {"jwks": {"keys": [Signer("ES256", "e").jwk]}, "jwks_uri": "https://x/j"},
            "invalid_issuer",
        ),
        ({"issuer": "not a url", "audiences": ["a"]}, "invalid_issuer"),
        (good | {"jwks_uri": "file:///etc/passwd"}, "invalid_issuer"),
        (good | {"unknown": True}, "validation_error"),
    ]
    for payload, code in bad:
        _error(app("PUT", "/module/issuers", json=payload), 422, code)
    _, writer_key = make_user(prefix="oidc-writer")
    _error(app("GET", "/module/issuers", writer_key), 404, "database_not_found")  # private
    _error(app("DELETE", "/module/issuers"), 422, "validation_error")  # no ?issuer=


def test_only_public_https_hosts_are_fetched_by_default() -> None:
    issuers = Issuers(None, Settings())  # type: ignore[arg-type]

    async def refused(url: str) -> str:
        with pytest.raises(FetchError) as info:
            await issuers._check_url(url)
        return str(info.value)

    async def main() -> None:
        assert "https" in await refused("http://login.example.test/jwks")
        assert "not a public address" in await refused("https://127.0.0.1/jwks")
        assert "not a public address" in await refused("https://localhost/jwks")
        assert "not a public address" in await refused("https://[::1]/jwks")
        for address in ("10.0.0.1", "169.254.169.254", "192.168.1.1", "0.0.0.0"):
            with pytest.raises(FetchError):
                await public_host(address, 443)

    asyncio.run(main())
