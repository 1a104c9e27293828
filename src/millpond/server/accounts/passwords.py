"""Password hashes: scrypt (memory-hard, from the standard library), self-describing.

A hash is ``scrypt$n=16384,r=8,p=1$<salt>$<key>``: the parameters, a random 16-byte salt
and the 32-byte derived key, both base64 (standard alphabet, padded). n=2^14, r=8, p=1
needs 16 MiB and takes ~40 ms on one core. :func:`verify` parses a stored string
strictly and refuses parameters beyond :data:`MAX_MEMORY` and :data:`MAX_P`, so no stored
string can make one verification cost more than a few times the default; anything
malformed does not verify. No I/O here: callers run these in a thread (the work is
``hashlib.scrypt``, which releases the GIL).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

N, R, P = 2**14, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32
MAX_MEMORY = 32 * 1024 * 1024
"""Most memory (128 * r * n bytes) a stored hash may ask for."""
MAX_P = 2
_MAXMEM = 64 * 1024 * 1024
"""OpenSSL's ceiling for one derivation (it needs a little more than 128 * r * n)."""
_FORMAT = re.compile(
    r"scrypt\$n=([1-9][0-9]{0,8}),r=([1-9][0-9]?),p=([1-9])"
    r"\$([A-Za-z0-9+/]{22}==)\$([A-Za-z0-9+/]{43}=)"
)


@dataclass(frozen=True)
class Params:
    n: int
    r: int
    p: int

    def allowed(self) -> bool:
        power_of_two = self.n >= 2 and self.n & (self.n - 1) == 0
        return power_of_two and 128 * self.r * self.n <= MAX_MEMORY and self.p <= MAX_P


DEFAULT = Params(N, R, P)


def _derive(password: str, salt: bytes, params: Params) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),  # never fails: any str has bytes
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=_MAXMEM,
        dklen=KEY_BYTES,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str, params: Params = DEFAULT) -> str:
    """A new self-describing hash of ``password`` with a random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _derive(password, salt, params)
    return f"scrypt$n={params.n},r={params.r},p={params.p}${_b64(salt)}${_b64(key)}"


def parse(stored: str) -> tuple[Params, bytes, bytes] | None:
    """The parameters, salt and key of a well-formed hash within the caps, else None."""
    found = _FORMAT.fullmatch(stored)
    if found is None:
        return None
    params = Params(int(found[1]), int(found[2]), int(found[3]))
    if not params.allowed():
        return None
    try:
        salt = base64.b64decode(found[4], validate=True)
        key = base64.b64decode(found[5], validate=True)
    except binascii.Error:  # pragma: no cover - the pattern admits only valid base64
        return None
    if _b64(salt) != found[4] or _b64(key) != found[5]:  # non-canonical trailing bits
        return None
    return params, salt, key


def verify(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from (False if malformed)."""
    parsed = parse(stored)
    if parsed is None:
        return False
    params, salt, key = parsed
    return hmac.compare_digest(_derive(password, salt, params), key)


@functools.cache
def dummy_hash() -> str:
    """A hash no password is known for: verified against when the user does not exist or
    has no password, so a login takes the same time either way."""
    return hash_password(secrets.token_urlsafe(32))
