"""Identities from your own login provider: tokens (OpenID Connect ID tokens, or any JWT)
of issuers a database's owner trusts.

The owner configures issuers per database (``PUT …/module/issuers``): the issuer (the
tokens' ``iss``), the audiences a token must be for, the public keys (a JSON Web Key Set
given inline, a ``jwks_uri``, or neither: the issuer's
``/.well-known/openid-configuration`` names it) and claims a token must carry. An end
user who sends such a token (``Authorization: Bearer eyJ…``) is the identity
``sha256("millpond identity: oidc <iss> <sub>")`` — stable, the same on every database,
computable by the app — with the token's claims as ``ctx.sender_auth``; like an anonymous
identity it reaches only reducer calls, the module's schema and the realtime socket of
that database, as a reader. Its socket closes when the token expires or the issuer is
removed.

Keys are fetched with no redirects, a 5 s timeout and 64 KiB at most, kept 5 minutes,
and fetched again (at most every 30 s) for a token signed by a key not in the set (key
rotation). Unless ``module_issuer_allow_insecure``, only ``https`` URLs whose host
resolves to public addresses are fetched: a tenant cannot point the server at its own
network.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from ...models.modules import TokenIssuer, TokenIssuerPut
from ..accounts.service import Principal
from ..config import Settings
from ..databases.service import Access, resolve
from ..errors import ServiceError, invalid, not_found
from ..recheck import Verdict
from ..store import Store
from . import jwt

_KEYS_TTL_S = 300.0
_REFETCH_S = 30.0
_FETCH_TIMEOUT_S = 5.0
_MAX_KEYS_BYTES = 64 * 1024
_MAX_ISSUERS = 10


_ISSUED = Principal(
    user_id=0, username="", is_admin=False, key_id="", scope="read", identity="", issuer="?"
)
"""Who an issuer's token is while it is checked: it may name a private database."""


def oidc_identity(issuer: str, subject: str) -> str:
    return hashlib.sha256(f"millpond identity: oidc {issuer} {subject}".encode()).hexdigest()


class FetchError(Exception):
    pass


@dataclass
class _Keys:
    keys: list[dict[str, Any]]
    fetched: float
    refetched: float = float("-inf")
    """When a token with a key not in the set last made us fetch it again."""


@dataclass
class Issuers:
    store: Store
    settings: Settings
    _keys: dict[str, _Keys] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # -- the owner's configuration -----------------------------------------------------------

    async def configured(self, principal: Principal, full_name: str) -> list[TokenIssuer]:
        access = await resolve(self.store, principal, full_name, need="admin")
        return [TokenIssuer.model_validate(row) for row in await self._rows(access.id)]

    async def put(self, principal: Principal, full_name: str, body: TokenIssuerPut) -> TokenIssuer:
        access = await resolve(self.store, principal, full_name, need="admin")
        self._check(body)
        rows = await self._rows(access.id)
        if len(rows) >= _MAX_ISSUERS and body.issuer not in {r["issuer"] for r in rows}:
            raise invalid("too_many_issuers", f"a database trusts at most {_MAX_ISSUERS} issuers")
        row = await self.store.fetchone(
            "INSERT INTO module_token_issuers"
            " (database_id, issuer, audiences, jwks_uri, jwks, required_claims)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (database_id, issuer) DO UPDATE SET audiences = EXCLUDED.audiences,"
            " jwks_uri = EXCLUDED.jwks_uri, jwks = EXCLUDED.jwks,"
            " required_claims = EXCLUDED.required_claims"
            " RETURNING issuer, audiences, jwks_uri, jwks, required_claims, created_at",
            (
                access.id,
                body.issuer,
                body.audiences,
                body.jwks_uri,
                None if body.jwks is None else json.dumps(body.jwks),
                json.dumps(body.required_claims),
            ),
        )
        self.store.changed()
        self._keys.pop(body.issuer, None)
        return TokenIssuer.model_validate(row)

    async def remove(self, principal: Principal, full_name: str, issuer: str) -> None:
        access = await resolve(self.store, principal, full_name, need="admin")
        done = await self.store.execute(
            "DELETE FROM module_token_issuers WHERE database_id = %s AND issuer = %s",
            (access.id, issuer),
        )
        if not done:
            raise not_found(
                "issuer_not_found",
                f"{access.full_name} trusts no issuer {issuer!r}"
                f" (see: millpond module issuers list {access.full_name})",
            )
        self.store.changed()

    @staticmethod
    def _check(body: TokenIssuerPut) -> None:
        if not all(a.strip() for a in body.audiences):
            raise invalid("invalid_issuer", "an audience cannot be empty")
        if body.jwks is not None and body.jwks_uri is not None:
            raise invalid("invalid_issuer", "give jwks or jwks_uri, not both")
        if body.jwks is not None:
            try:
                jwt.check_jwks(body.jwks)
            except ValueError as exc:
                raise invalid("invalid_jwks", f"the key set is unusable: {exc}") from None
        fetched = body.jwks_uri or (body.issuer if body.jwks is None else None)
        if fetched is not None and urlsplit(fetched).scheme not in ("http", "https"):
            raise invalid(
                "invalid_issuer",
                f"{fetched!r} is not an http(s) URL to fetch the keys from (or give jwks)",
            )

    async def _rows(self, database_id: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self.store.cache.get_or_load(
            ("issuers", database_id),
            lambda: self.store.fetchall(
                "SELECT issuer, audiences, jwks_uri, jwks, required_claims, created_at"
                " FROM module_token_issuers WHERE database_id = %s ORDER BY issuer",
                (database_id,),
            ),
        )
        return rows

    # -- end users' tokens ---------------------------------------------------------------------

    async def authenticate(self, token: str, full_name: str) -> Principal:
        """The end user a token of one of ``full_name``'s issuers stands for; a 401 (403
        for a missing claim) naming what is wrong otherwise."""
        access = await resolve(self.store, _ISSUED, full_name)
        try:
            parsed = jwt.parse(token)
            row = await self._issuer(access, parsed.issuer)
            key = await self._key(row, parsed)
            jwt.verify_signature(parsed, key)
            subject = jwt.check_claims(
                parsed, row["audiences"], row["required_claims"] or {}, time.time()
            )
        except jwt.TokenError as exc:
            status = 403 if exc.code == "claim_required" else 401
            raise ServiceError(status, exc.code, exc.message) from None
        exp = float(parsed.claims["exp"])
        return Principal(
            user_id=0,
            username="",
            is_admin=False,
            key_id="",
            scope="write",
            identity=oidc_identity(parsed.issuer, subject),
            database_id=access.id,
            issuer=parsed.issuer,
            claims=parsed.claims,
            expires_at=datetime.fromtimestamp(exp + jwt.LEEWAY_S, UTC),
        )

    async def verdict(self, token: str, full_name: str) -> Verdict | None:
        """None while an issuer's token still works on ``full_name`` (for live sockets)."""
        try:
            await self.authenticate(token, full_name)
        except ServiceError as exc:
            if exc.status >= 500:
                raise
            if exc.status == 404:
                return Verdict("database_not_found", exc.message)
            return Verdict("key_revoked", exc.message)
        return None

    async def _issuer(self, access: Access, issuer: str) -> dict[str, Any]:
        for row in await self._rows(access.id):
            if row["issuer"] == issuer:
                return row
        raise jwt.TokenError(
            "unknown_issuer",
            f"{access.full_name} does not accept tokens of {issuer!r} (its owner adds"
            f" issuers with `millpond module issuers add {access.full_name} ISSUER`)",
        )

    async def _key(self, row: dict[str, Any], token: jwt.Token) -> dict[str, Any]:
        if row["jwks"] is not None:
            keys = jwt.check_jwks(row["jwks"])
            found = jwt.find_key(token, keys)
        else:
            found = await self._fetched_key(row, token)
        if found is None:
            raise jwt.TokenError(
                "invalid_token", f"no key of {row['issuer']!r} matches the token's kid"
            )
        return dict(found)

    async def _fetched_key(self, row: dict[str, Any], token: jwt.Token) -> Any:
        issuer = row["issuer"]
        now = time.monotonic()
        cached = self._keys.get(issuer)
        if cached is not None and now - cached.fetched < _KEYS_TTL_S:
            found = jwt.find_key(token, cached.keys)
            if found is not None or now - cached.refetched < _REFETCH_S:
                return found
            cached.refetched = now  # an unknown key: perhaps rotated in; look once
        async with self._lock:
            try:
                keys = await self._fetch_keys(issuer, row["jwks_uri"])
            except FetchError as exc:
                if cached is not None:
                    return jwt.find_key(token, cached.keys)
                raise jwt.TokenError(
                    "invalid_token", f"the keys of {issuer!r} cannot be fetched: {exc}"
                ) from None
            refetched = cached.refetched if cached is not None else float("-inf")
            self._keys[issuer] = _Keys(keys, now, refetched)
        return jwt.find_key(token, keys)

    async def _fetch_keys(self, issuer: str, jwks_uri: str | None) -> list[dict[str, Any]]:
        if jwks_uri is None:
            config = await self._get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
            found = config.get("jwks_uri")
            if not isinstance(found, str):
                raise FetchError("its openid-configuration names no jwks_uri")
            jwks_uri = found
        try:
            return jwt.check_jwks(await self._get_json(jwks_uri))
        except ValueError as exc:
            raise FetchError(str(exc)) from None

    async def _get_json(self, url: str) -> dict[str, Any]:
        await self._check_url(url)
        try:
            async with (
                httpx.AsyncClient(timeout=_FETCH_TIMEOUT_S, follow_redirects=False) as http,
                http.stream("GET", url, headers={"Accept": "application/json"}) as response,
            ):
                if response.status_code != 200:
                    raise FetchError(f"{url} answered {response.status_code}")
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_KEYS_BYTES:
                        raise FetchError(f"{url} sent more than {_MAX_KEYS_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise FetchError(f"{url}: {exc}") from None
        try:
            data = json.loads(body)
        except ValueError:
            raise FetchError(f"{url} did not send JSON") from None
        if not isinstance(data, dict):
            raise FetchError(f"{url} did not send a JSON object")
        return data

    async def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if self.settings.module_issuer_allow_insecure:
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise FetchError(f"{url!r} is not an http(s) URL")
            return
        if parts.scheme != "https" or not parts.hostname:
            raise FetchError(f"{url!r} is not an https URL")
        await public_host(parts.hostname, parts.port or 443)


async def public_host(host: str, port: int) -> None:
    """FetchError unless every address ``host`` resolves to is a public one."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FetchError(f"{host}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise FetchError(f"{host} resolves to {address}, which is not a public address")
