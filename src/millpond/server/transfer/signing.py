"""Signed download links: ``/v1/exports/{id}/download?expires=<unix>&signature=<hmac>``.

The signature is an HMAC-SHA256 of ``export:<id>:<expires>`` under a key derived from
the server secret (every replica shares it), so a link works without an API key until
it expires, on any replica, and cannot be altered to reach another export or to live
longer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def _key(secret: bytes) -> bytes:
    return hmac.new(secret, b"millpond export downloads", hashlib.sha256).digest()


def sign(secret: bytes, job_id: str, expires: int) -> str:
    mac = hmac.new(_key(secret), f"export:{job_id}:{expires}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def verify(
    secret: bytes, job_id: str, expires: int, signature: str, now: float | None = None
) -> str:
    """``"ok"``, ``"expired"`` or ``"invalid"`` (for any ``signature``: one that is not
    ASCII, which ``compare_digest`` cannot take, is invalid like any other)."""
    expected = sign(secret, job_id, expires).encode()
    if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
        return "invalid"
    if (time.time() if now is None else now) >= expires:
        return "expired"
    return "ok"
