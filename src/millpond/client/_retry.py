"""When the SDK tries a request again, and how long it waits first: one small object.

The policy is pure (no I/O, no state), so the sync and async clients share it and it is
tested on its own. Backoff is exponential from ``base``, capped at ``cap``, with full
jitter (each delay uniform in ``[0, min(cap, base * 2**attempt)]``); a server's
``Retry-After`` (seconds or an HTTP-date) replaces it, capped at ``max_retry_after``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from ..backoff import Backoff

__all__ = ["RetryPolicy"]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
"""Methods that can be sent twice with the effect of once (RFC 9110 §9.2.2)."""

RETRY_STATUSES = frozenset({408, 429})
"""Statuses retried besides every 5xx."""


@dataclass(frozen=True)
class RetryPolicy:
    """How the SDK retries: which failures, and how long it waits before each retry.

    ``Millpond(retry_policy=RetryPolicy(base=0.1, cap=2.0))`` changes the waits; the number
    of retries is the client's ``max_retries`` (or a request's ``max_retries=``).

    Retried, whatever the method: connection failures and timeouts that happen before the
    request was sent (connect, pool), and answers 408, 429 and 5xx. Retried only for
    idempotent requests: read/write timeouts and connections dropped mid-request, since
    the server may have acted on them. Other 4xx answers are never retried.
    """

    base: float = 0.5
    """Delay ceiling before the first retry, in seconds; doubles on each retry."""
    cap: float = 8.0
    """Largest backoff delay, in seconds."""
    max_retry_after: float = 60.0
    """Largest wait a server's ``Retry-After`` can impose, in seconds."""
    jitter: bool = True
    """Full jitter (uniform in ``[0, ceiling]``); without it, the ceiling itself."""

    _backoff: Backoff = field(init=False, repr=False, compare=False, hash=False)
    """Its delays: one generator for the policy's life (seeding one costs ~24 µs)."""

    def __post_init__(self) -> None:
        if not (self.base >= 0 and self.cap >= 0 and self.max_retry_after >= 0):
            raise ValueError("RetryPolicy delays must be non-negative")
        backoff = Backoff(base=self.base, cap=self.cap, jitter=self.jitter)
        object.__setattr__(self, "_backoff", backoff)  # frozen: set once, here

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry).

        ``retry_after`` is what the server asked for (see :meth:`parse_retry_after`); when
        given it is used instead of the backoff, capped at ``max_retry_after``.
        """
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return self._backoff.delay(max(attempt, 0))

    def should_retry(
        self,
        *,
        method: str,
        status_code: int | None = None,
        error: BaseException | None = None,
        idempotent: bool | None = None,
    ) -> bool:
        """Whether a request that got ``status_code`` (or failed with ``error``) may be
        sent again. ``idempotent`` overrides the guess made from ``method``."""
        if status_code is not None:
            return status_code in RETRY_STATUSES or status_code >= 500
        if error is None:
            return False
        if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return True  # the request never reached the server
        if isinstance(
            error, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError
        ):
            if idempotent is None:
                idempotent = method.upper() in IDEMPOTENT_METHODS
            return idempotent
        return False  # e.g. an unsupported URL scheme: trying again cannot help

    @staticmethod
    def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
        """Seconds from a ``Retry-After`` header: delay-seconds or an HTTP-date.

        ``None`` when absent or unreadable; never negative (a date in the past is 0).
        """
        if value is None:
            return None
        value = value.strip()
        if not value:
            return None
        try:
            seconds = float(value)
        except ValueError:
            pass
        else:
            return max(seconds, 0.0) if math.isfinite(seconds) else None
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        now = now or datetime.now(UTC)
        return max((when - now).total_seconds(), 0.0)
