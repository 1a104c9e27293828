"""Percentage rollouts: pinned buckets (the hash is part of the wire contract: SDKs in other
languages must agree), stability across processes, monotonicity in the percentage,
distribution within tolerance, salting by flag key, and the rollout condition's edges."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from millpond.engine.flags import (
    BUCKETS,
    CompanyContext,
    EvalContext,
    UserContext,
    compile_flag,
    in_rollout,
    rollout_bucket,
    rollout_threshold,
)
from millpond.models.flags import Condition, Flag, Rule

PROPERTY = settings(max_examples=200, deadline=None, database=None)
ACTORS = [f"user-{i}" for i in range(10_000)]

PINNED = [
    ("new-checkout", "user-1", 2648),
    ("new-checkout", "user-2", 1359),
    ("dark-mode", "user-1", 4719),
    ("dark-mode", "alice@example.com", 4077),
    ("", "", 4368),
    ("ünïcode", "🦆", 4629),
]


@pytest.mark.parametrize(("flag", "actor", "bucket"), PINNED)
def test_pinned_buckets(flag: str, actor: str, bucket: int) -> None:
    assert rollout_bucket(flag, actor) == bucket
    # the definition, spelled out: first 8 bytes of sha256("flag:actor"), big-endian, mod 10000
    digest = hashlib.sha256(f"{flag}:{actor}".encode()).digest()
    assert int.from_bytes(digest[:8], "big") % 10_000 == bucket


def test_buckets_are_the_same_in_other_processes() -> None:
    code = (
        "import json, sys\n"
        "from millpond.engine.flags import rollout_bucket\n"
        "print(json.dumps([rollout_bucket(f, a) for f, a in json.load(sys.stdin)]))\n"
    )
    pairs = [(flag, actor) for flag, actor, _ in PINNED] + [("f", a) for a in ACTORS[:200]]
    expected = [rollout_bucket(flag, actor) for flag, actor in pairs]
    for seed in ("0", "12345"):
        result = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(pairs),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert json.loads(result.stdout) == expected


def test_surrogates_do_not_raise() -> None:
    assert 0 <= rollout_bucket("f", "\ud800") < BUCKETS


@pytest.mark.parametrize(
    ("percentage", "threshold"),
    [
        (0, 0),
        (-1, 0),
        (float("nan"), 0),
        (0.01, 1),
        (0.004, 0),
        (30, 3000),
        (33.33, 3333),
        (99.99, 9999),
        (100, BUCKETS),
        (250, BUCKETS),
        (float("inf"), BUCKETS),
    ],
)
def test_threshold(percentage: float, threshold: int) -> None:
    assert rollout_threshold(percentage) == threshold


@PROPERTY
@given(st.floats(0, 100), st.floats(0, 100), st.text(max_size=10), st.text(max_size=20))
def test_raising_the_percentage_never_turns_an_actor_off(
    low: float, high: float, flag: str, actor: str
) -> None:
    low, high = min(low, high), max(low, high)
    assert rollout_threshold(low) <= rollout_threshold(high)
    if in_rollout(flag, actor, low):
        assert in_rollout(flag, actor, high)


def rollout_rule(percentage: float, **condition: object) -> Rule:
    return Rule(
        id="rollout",
        value=True,
        conditions=[Condition(condition_type="rollout", percentage=percentage, **condition)],
    )


def enabled(key: str, percentage: float, actors: list[str]) -> set[str]:
    compiled = compile_flag(Flag(key=key), [rollout_rule(percentage)])
    return {
        actor for actor in actors if compiled.evaluate(EvalContext(user=UserContext(actor))).value
    }


@PROPERTY
@given(st.lists(st.floats(0, 100), min_size=2, max_size=5), st.sampled_from(["a", "b", "ü"]))
def test_the_compiled_rollout_is_monotone_too(percentages: list[float], key: str) -> None:
    previous: set[str] = set()
    for percentage in sorted(percentages):
        now = enabled(key, percentage, ACTORS[:300])
        assert previous <= now
        previous = now


@pytest.mark.parametrize("key", ["new-checkout", "dark-mode", "x"])
@pytest.mark.parametrize("percentage", [1, 10, 30, 50, 90])
def test_distribution_within_tolerance(key: str, percentage: float) -> None:
    share = len(enabled(key, percentage, ACTORS)) / len(ACTORS)
    assert abs(share - percentage / 100) <= 0.02


def test_buckets_are_uniform() -> None:
    counts = [0] * 10
    for actor in ACTORS:
        counts[rollout_bucket("uniform", actor) * 10 // BUCKETS] += 1
    # chi-square with 9 degrees of freedom: 27.9 is the 0.1% critical value
    expected = len(ACTORS) / 10
    assert sum((c - expected) ** 2 / expected for c in counts) < 27.9


def test_salting_by_flag_key_enables_different_actors() -> None:
    first = enabled("flag-one", 50, ACTORS)
    second = enabled("flag-two", 50, ACTORS)
    assert first != second
    # independent halves overlap on about a quarter of the actors (unsalted: a half)
    assert abs(len(first & second) / len(ACTORS) - 0.25) <= 0.02
    # at 10%, the first tenth of one flag is not the first tenth of another
    assert len(enabled("flag-one", 10, ACTORS) & enabled("flag-two", 10, ACTORS)) < 200


def test_edges() -> None:
    everyone = compile_flag(Flag(key="f"), [rollout_rule(100)])
    nobody = compile_flag(Flag(key="f"), [rollout_rule(0)])
    for actor in ACTORS[:100]:
        ctx = EvalContext(user=UserContext(actor))
        assert everyone.evaluate(ctx).value and not nobody.evaluate(ctx).value
    for ctx in (
        EvalContext(),
        EvalContext(user=UserContext(None)),
        EvalContext(user=UserContext("")),
    ):
        assert not everyone.evaluate(ctx).value


def test_actor_key_and_entity() -> None:
    by_email = compile_flag(Flag(key="f"), [rollout_rule(50, actor_key="email")])
    by_company = compile_flag(
        Flag(key="f"), [rollout_rule(50, actor_entity="company", actor_key="id")]
    )
    users = [UserContext("same-id", keys={"email": f"{i}@x.com"}) for i in range(400)]
    results = {by_email.evaluate(EvalContext(user=u)).value for u in users}
    assert results == {True, False}  # hashed by email, not by the shared id
    for user in users:
        want = in_rollout("f", user.keys["email"], 50)
        assert by_email.evaluate(EvalContext(user=user)).value is want
    assert not by_email.evaluate(EvalContext(user=UserContext("u"))).value  # no email key
    companies = [CompanyContext(keys={"id": str(i)}) for i in range(400)]
    for company in companies:
        want = in_rollout("f", company.keys["id"], 50)
        assert by_company.evaluate(EvalContext(company=company)).value is want
    assert not by_company.evaluate(EvalContext(user=users[0])).value
