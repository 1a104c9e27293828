"""JSON Web Tokens, sans I/O: parse one, check its signature against a JSON Web Key Set,
check its claims against what an issuer's configuration requires.

Only asymmetric algorithms are accepted (RS256/384/512, PS256/384/512, ES256/384,
EdDSA): a database's owner trusts an issuer's public keys, never a shared secret, and
``none`` or ``HS*`` tokens are refused before any key is looked at.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

MAX_TOKEN_BYTES = 16 * 1024
LEEWAY_S = 30
"""Clock skew allowed on ``exp``, ``nbf`` and ``iat``."""

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}
)
_CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
}


class TokenError(Exception):
    """Why a token is refused: a stable ``code`` (``invalid_token``, ``token_expired``,
    ``token_not_yet_valid``, ``token_audience``, ``unknown_issuer``, ``claim_required``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Token:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def issuer(self) -> str:
        iss = self.claims.get("iss")
        if not isinstance(iss, str) or not iss:
            raise TokenError("invalid_token", "the token has no issuer (iss)")
        return iss


def looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2


def _b64(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("invalid_token", "the token is not base64url") from None


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise TokenError("invalid_token", f"the token's {what} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenError("invalid_token", f"the token's {what} is not a JSON object")
    return value


def parse(token: str) -> Token:
    """Split and decode a compact JWS (nothing is trusted yet)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError("invalid_token", f"the token is longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("invalid_token", "a JWT has three parts separated by dots")
    header = _json_object(_b64(parts[0]), "header")
    claims = _json_object(_b64(parts[1]), "payload")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise TokenError(
            "invalid_token",
            f"tokens signed with {alg!r} are not accepted (only {', '.join(sorted(ALGORITHMS))})",
        )
    return Token(header, claims, f"{parts[0]}.{parts[1]}".encode(), _b64(parts[2]))


def _int(jwk: Mapping[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"the key has no {name!r}")
    return int.from_bytes(_b64(value), "big")


def _bytes(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"the key has no {name!r}")
    return _b64(value)


def check_jwks(jwks: Any) -> list[dict[str, Any]]:
    """The usable keys of a JSON Web Key Set (``{"keys": [...]}``); ValueError naming the
    first problem."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError('a JSON Web Key Set is an object {"keys": [...]}')
    keys = [key for key in jwks["keys"] if isinstance(key, dict)]
    for key in keys:
        public_key(key)
    if not keys:
        raise ValueError("the key set has no keys")
    return keys


def public_key(jwk: Mapping[str, Any]) -> Any:
    """The public key a JWK describes (RSA, EC P-256/P-384, Ed25519); ValueError if it
    is none of those or holds a private part."""
    if "d" in jwk:
        raise ValueError("the key set holds a private key: give the public keys only")
    kty = jwk.get("kty")
    if kty == "RSA":
        return rsa.RSAPublicNumbers(_int(jwk, "e"), _int(jwk, "n")).public_key()
    if kty == "EC":
        curve = _CURVES.get(str(jwk.get("crv")))
        if curve is None:
            raise ValueError(f"unsupported curve {jwk.get('crv')!r} (P-256, P-384)")
        x, y = _int(jwk, "x"), _int(jwk, "y")
        return ec.EllipticCurvePublicNumbers(x, y, curve[0]).public_key()
    if kty == "OKP" and jwk.get("crv") == "Ed25519":
        return Ed25519PublicKey.from_public_bytes(_bytes(jwk, "x"))
    raise ValueError(f"unsupported key type {kty!r} (RSA, EC, OKP Ed25519)")


def find_key(token: Token, keys: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The key of the set that signed ``token``: by ``kid``, else the only one that fits."""
    kid = token.header.get("kid")
    fitting = [k for k in keys if k.get("alg") in (None, token.header["alg"])]
    if kid is not None:
        fitting = [k for k in fitting if k.get("kid") == kid]
    return fitting[0] if len(fitting) == 1 else None


def verify_signature(token: Token, jwk: Mapping[str, Any]) -> None:
    alg: str = token.header["alg"]
    try:
        key = public_key(jwk)
    except ValueError as exc:
        raise TokenError("invalid_token", f"the issuer's key is unusable: {exc}") from None
    try:
        if alg == "EdDSA" and isinstance(key, Ed25519PublicKey):
            key.verify(token.signature, token.signing_input)
            return
        digest = _HASHES[alg[2:]]()
        if alg.startswith("RS") and isinstance(key, rsa.RSAPublicKey):
            key.verify(token.signature, token.signing_input, padding.PKCS1v15(), digest)
            return
        if alg.startswith("PS") and isinstance(key, rsa.RSAPublicKey):
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            key.verify(token.signature, token.signing_input, pss, digest)
            return
        if alg.startswith("ES") and isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
            if len(token.signature) != 2 * size:
                raise InvalidSignature
            r = int.from_bytes(token.signature[:size], "big")
            s = int.from_bytes(token.signature[size:], "big")
            key.verify(encode_dss_signature(r, s), token.signing_input, ec.ECDSA(digest))
            return
    except InvalidSignature:
        raise TokenError("invalid_token", "the token's signature does not verify") from None
    raise TokenError("invalid_token", f"the key {jwk.get('kid')!r} cannot check {alg} tokens")


def check_claims(
    token: Token,
    audiences: Sequence[str],
    required: Mapping[str, Any],
    now: float,
) -> str:
    """The token's subject, if its claims hold: not expired (``exp`` is required), valid
    already, for one of ``audiences``, with every ``required`` claim equal."""
    claims = token.claims
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise TokenError("invalid_token", "the token has no expiry (exp)")
    if now > exp + LEEWAY_S:
        raise TokenError("token_expired", "the token has expired: get a new one from the issuer")
    for name in ("nbf", "iat"):
        value = claims.get(name)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and value > now + LEEWAY_S:  # type: ignore[operator]
            raise TokenError("token_not_yet_valid", f"the token's {name} is in the future")
    aud = claims.get("aud")
    given = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not set(audiences) & {a for a in given if isinstance(a, str)}:
        raise TokenError(
            "token_audience",
            f"the token is for {given or 'no audience'}, not for {list(audiences)}",
        )
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise TokenError("invalid_token", "the token has no subject (sub)")
    for name, value in required.items():
        if claims.get(name) != value:
            raise TokenError(
                "claim_required", f"the token's claim {name!r} must be {json.dumps(value)}"
            )
    return sub
