"""RetryPolicy on its own: capped exponential backoff, full jitter, Retry-After, and
which failures are retried."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from millpond import RetryPolicy


def test_backoff_doubles_then_is_capped() -> None:
    policy = RetryPolicy(base=0.5, cap=8.0, jitter=False)
    assert [policy.delay(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_cap_holds_for_huge_attempt_numbers() -> None:
    policy = RetryPolicy(base=0.5, cap=3.0)
    for attempt in (10, 64, 1000, 10**9):
        assert 0 <= policy.delay(attempt) <= 3.0
    assert RetryPolicy(base=0.5, cap=3.0, jitter=False).delay(10**9) == 3.0


def test_full_jitter_stays_within_bounds_and_varies() -> None:
    random.seed(1234)
    policy = RetryPolicy(base=0.1, cap=1.0)
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0)]:
        samples = [policy.delay(attempt) for _ in range(500)]
        assert all(0 <= s <= ceiling for s in samples)
        assert len(set(samples)) > 400  # really random, not a constant
        assert max(samples) > ceiling * 0.9  # and spread over the whole range
        assert min(samples) < ceiling * 0.1


def test_retry_after_replaces_backoff_and_is_capped() -> None:
    policy = RetryPolicy(base=0.001, cap=0.01, max_retry_after=30.0)
    assert policy.delay(0, retry_after=5.0) == 5.0
    assert policy.delay(3, retry_after=0.0) == 0.0
    assert policy.delay(0, retry_after=3600.0) == 30.0
    assert policy.delay(0, retry_after=-4.0) == 0.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), (" 120 ", 120.0), ("0", 0.0), ("1.5", 1.5), ("-5", 0.0)],
)
def test_parse_retry_after_seconds(header: str, seconds: float) -> None:
    assert RetryPolicy.parse_retry_after(header) == seconds


def test_parse_retry_after_http_date() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=42), usegmt=True)
    assert later == "Wed, 01 May 2024 12:00:42 GMT"
    assert RetryPolicy.parse_retry_after(later, now=now) == 42.0
    earlier = format_datetime(now - timedelta(minutes=5), usegmt=True)
    assert RetryPolicy.parse_retry_after(earlier, now=now) == 0.0
    # the obsolete RFC 850 form is an HTTP-date too
    assert RetryPolicy.parse_retry_after("Wednesday, 01-May-24 12:01:00 GMT", now=now) == 60.0


def test_parse_retry_after_http_date_against_the_clock() -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
    assert 8.0 <= (RetryPolicy.parse_retry_after(soon) or 0) <= 10.0


@pytest.mark.parametrize("header", [None, "", "   ", "soon", "nan", "inf", "12 apples"])
def test_parse_retry_after_unreadable(header: str | None) -> None:
    assert RetryPolicy.parse_retry_after(header) is None


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_retried_statuses(method: str, status: int) -> None:
    assert RetryPolicy().should_retry(method=method, status_code=status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 410, 422])
def test_other_4xx_never_retried(status: int) -> None:
    assert not RetryPolicy().should_retry(method="GET", status_code=status)


REQ = httpx.Request("GET", "http://x")


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("refused", request=REQ),
        httpx.ConnectTimeout("slow", request=REQ),
        httpx.PoolTimeout("pool", request=REQ),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST", "PATCH"])
def test_unsent_requests_always_retried(method: str, error: Exception) -> None:
    assert RetryPolicy().should_retry(method=method, error=error)


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadTimeout("slow", request=REQ),
        httpx.WriteTimeout("slow", request=REQ),
        httpx.ReadError("reset", request=REQ),
        httpx.RemoteProtocolError("hung up", request=REQ),
    ],
)
def test_maybe_sent_requests_retried_only_when_idempotent(error: Exception) -> None:
    policy = RetryPolicy()
    for method in ("GET", "PUT", "DELETE", "get"):
        assert policy.should_retry(method=method, error=error)
    for method in ("POST", "PATCH"):
        assert not policy.should_retry(method=method, error=error)
    assert policy.should_retry(method="POST", error=error, idempotent=True)
    assert not policy.should_retry(method="GET", error=error, idempotent=False)


def test_hopeless_errors_not_retried() -> None:
    policy = RetryPolicy()
    assert not policy.should_retry(method="GET", error=httpx.UnsupportedProtocol("ftp"))
    assert not policy.should_retry(method="GET")


def test_negative_delays_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(base=-1)
    with pytest.raises(ValueError):
        RetryPolicy(cap=-1)


def test_jitter_leaves_the_random_modules_sequence_alone() -> None:
    """An application that seeded ``random`` gets the same numbers with the SDK retrying
    (or reconnecting, in another thread) in between."""
    from millpond.backoff import Backoff

    random.seed(99)
    expected = [random.random() for _ in range(3)]
    random.seed(99)
    policy, backoff = RetryPolicy(base=0.1, cap=1.0), Backoff(base=0.1, cap=1.0)
    got = []
    for _ in range(3):
        policy.delay(3)
        backoff.next_delay()
        got.append(random.random())
    assert got == expected
