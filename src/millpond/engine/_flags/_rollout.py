"""Percentage rollouts: a stable bucket per (flag, actor), salted by the flag key so that
different flags enable different actors first; and flypper's own hashing (unsalted md5), so
flags made through flypper enable the same actors as flypper does."""

from __future__ import annotations

import math
from hashlib import md5, sha256

BUCKETS = 10_000
"""Buckets 0…9999: a percentage with two decimals maps to a whole number of buckets."""


def rollout_bucket(flag_key: str, actor: str) -> int:
    """The actor's bucket for this flag, in ``[0, BUCKETS)``: the first 8 bytes of
    ``sha256(utf8(flag_key + ":" + actor))`` as a big-endian unsigned integer, modulo
    ``BUCKETS``. Stable across processes, machines and languages."""
    digest = sha256(f"{flag_key}:{actor}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def rollout_threshold(percentage: float) -> int:
    """How many buckets a percentage enables: ``round(percentage * 100)`` clamped to
    ``[0, BUCKETS]`` (NaN enables none). Non-decreasing in ``percentage``."""
    if not percentage > 0.0:
        return 0
    if percentage >= 100.0 or math.isinf(percentage):
        return BUCKETS
    return min(BUCKETS, max(0, round(percentage * 100)))


def in_rollout(flag_key: str, actor: str, percentage: float) -> bool:
    """Whether the actor is in the flag's rollout at this percentage: its bucket is below the
    threshold, so raising the percentage never removes an actor."""
    return rollout_bucket(flag_key, actor) < rollout_threshold(percentage)


def flypper_bucket(actor: str) -> int:
    """flypper's bucket of an actor, in ``[0, BUCKETS)``: the whole 16-byte
    ``md5(utf8(actor))`` as a big-endian unsigned integer, modulo ``BUCKETS`` (no salt: the
    same for every flag)."""
    digest = md5(actor.encode("utf-8", "surrogatepass"), usedforsecurity=False).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def in_flypper_rollout(actor: str | None, percentage: float) -> bool:
    """Whether flypper 0.1.7 enables the actor at this percentage: 100 enables everyone
    (even without an actor); otherwise ``flypper_bucket(actor) / 100 <= percentage``, the
    same float arithmetic as flypper's (so 0 still enables the actors of bucket 0)."""
    if percentage == 100.0:
        return True
    if actor is None:
        return False
    return flypper_bucket(actor) / 100.0 <= percentage
