"""SCRAM-SHA-256 verifiers for the login roles millpond makes (RFC 5802, RFC 7677), in
the form Postgres keeps in ``pg_authid``.

The server hands Postgres a verifier, not a password: no role password ever crosses
the wire or can reach a statement log, and Postgres does not spend a PBKDF2 on each
``CREATE ROLE``.

Its iteration count is low, on purpose: PBKDF2's iterations slow down guessing a
password a person chose; these passwords are HMAC-SHA-256 outputs (256 bits, see
``provision.role_password``), which no number of iterations makes any harder or easier
to guess. What iterations would cost is real: libpq runs them on every login, in the
server's own process, for every pooled, gateway, realtime and worker connection (4,096 —
Postgres' default — take a few milliseconds of CPU each).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

ITERATIONS = 32


def verifier(password: str, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` of ``password``
    (ASCII: SASLprep leaves it as it is)."""
    if not password.isascii():
        raise ValueError("only ASCII passwords (SASLprep is not implemented)")
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
