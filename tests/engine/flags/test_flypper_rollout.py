"""The ``flypper_rollout`` condition: flypper 0.1.7's percentage gate, bit for bit (pinned
buckets, the ``<=`` edge, 100 for everyone, 0 for bucket 0, entry names naming the user or
the company). Agreement with the original flypper package itself is tested in
``tests/compat/test_flypper.py``."""

from __future__ import annotations

import hashlib

import pytest

from millpond.engine.flags import (
    CompanyContext,
    EvalContext,
    UserContext,
    compile_flag,
    flypper_bucket,
    in_flypper_rollout,
)
from millpond.models.flags import Condition, Flag, Rule

PINNED = [("42", 5174), ("7", 5555), ("user-1", 8820), ("alice@example.com", 6624), ("", 8366)]


@pytest.mark.parametrize(("actor", "bucket"), PINNED)
def test_pinned_buckets(actor: str, bucket: int) -> None:
    assert flypper_bucket(actor) == bucket
    # the definition, spelled out: the whole md5 digest, big-endian, mod 10000 (no salt)
    assert int.from_bytes(hashlib.md5(actor.encode()).digest(), "big") % 10_000 == bucket


def check(
    percentage: float, actor_key: str | None, *, user: dict[str, str] | None = None, **company: str
) -> bool:
    condition = Condition(
        condition_type="flypper_rollout", actor_key=actor_key, percentage=percentage
    )
    flag = compile_flag(Flag(key="f"), [Rule(id="r", value=True, conditions=[condition])])
    ctx = EvalContext(
        CompanyContext("c", keys=company) if company else None,
        UserContext("u", keys=user) if user is not None else None,
    )
    result = flag.evaluate(ctx)
    assert result.error is None
    return result.value


def test_the_edge_is_inclusive() -> None:
    # user-8827 is in bucket 1250: enabled at 12.5 %, not at 12.49 %
    assert flypper_bucket("user-8827") == 1250
    assert check(12.5, "user_id", user={"id": "user-8827"}) is True
    assert check(12.49, "user_id", user={"id": "user-8827"}) is False


def test_zero_percent_still_enables_bucket_zero() -> None:
    assert flypper_bucket("user-753") == 0
    assert check(0.0, "user_id", user={"id": "user-753"}) is True
    assert check(0.0, "user_id", user={"id": "42"}) is False
    assert flypper_bucket("user-5911") == 9999
    assert check(99.99, "user_id", user={"id": "user-5911"}) is True
    assert check(99.98, "user_id", user={"id": "user-5911"}) is False


def test_one_hundred_percent_is_everyone_even_nobody() -> None:
    assert check(100.0, "user_id") is True
    assert check(100.0, None) is True
    assert in_flypper_rollout(None, 100.0) is True
    assert in_flypper_rollout(None, 99.0) is False


def test_missing_actor_or_key_is_false() -> None:
    assert check(99.0, "user_id") is False
    assert check(99.0, "user_id", user={"email": "a@b.c"}) is False
    assert check(99.0, None, user={"id": "42"}) is False
    assert check(99.0, "", user={"id": "42"}) is False


@pytest.mark.parametrize(
    ("actor_key", "user", "company", "expected"),
    [
        ("user_id", {"id": "42"}, {}, True),  # bucket 5174 <= 60
        ("id", {"id": "42"}, {}, True),  # a bare name is a user key
        ("email", {"email": "alice@example.com"}, {}, False),  # bucket 6624 > 60
        ("company_id", {"id": "zzz"}, {"id": "42"}, True),
        ("company_id", {"id": "42"}, {}, False),  # the company, not the user
        ("user_", {"user_": "42"}, {}, True),  # no key after the prefix: a bare name
    ],
)
def test_entry_names(
    actor_key: str, user: dict[str, str], company: dict[str, str], expected: bool
) -> None:
    assert check(60.0, actor_key, user=user, **company) is expected


def test_not_salted_by_the_flag() -> None:
    condition = Condition(condition_type="flypper_rollout", actor_key="user_id", percentage=50)
    ctx = EvalContext(None, UserContext("u", keys={"id": "7"}))  # bucket 5555: off at 50 %
    for key in ("a", "b", "new-checkout"):
        flag = compile_flag(Flag(key=key), [Rule(id="r", value=True, conditions=[condition])])
        assert flag.evaluate(ctx).value is False
