"""Identities: who calls a reducer, as its ``ctx.sender`` sees it.

An identity is 32 bytes, shown as 64 lowercase hex digits (as SpacetimeDB shows one).
A millpond user's identity is derived from the server secret and the user's id, so it
is the same for all of the user's keys, on every replica, and no one can compute another
user's identity without the secret (it is not secret itself: subscribers see it in
reducer events).
"""

from __future__ import annotations

import hashlib
import hmac


def user_identity(secret: bytes, user_id: int) -> str:
    return hmac.new(
        secret, f"millpond identity: user {user_id}".encode(), hashlib.sha256
    ).hexdigest()
