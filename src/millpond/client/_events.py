"""Identify and track events in the SDK, sans-I/O: the buffer, the batches, the retries.

``mp.identify(...)`` and ``mp.track(...)`` build an event (validated at once, so bad
arguments raise in the caller), give it an idempotency key and a ``sent_at``, and push it
into an :class:`EventQueue`; a worker (``_event_workers``: a thread for ``Millpond``, a
task for ``AsyncMillpond``) asks the queue what to do next (:meth:`EventQueue.next_action`:
send this batch, or wait so long) and tells it how the send went. The queue:

* is bounded (``EventOptions.max_buffer`` events waiting): when full, the oldest event is
  dropped, counted, and a warning logged (the first drop, then every ``warn_every``-th);
* sends a batch when ``batch_size`` events wait, when the oldest has waited
  ``flush_interval`` seconds, or at once when a flush asks for it;
* keeps a batch that failed for a passing reason (connection, timeout, 408, 429, 5xx, a
  batch conflict) and sends the *same* events, with the same idempotency keys, again after
  the client's backoff (:class:`~millpond.client.RetryPolicy`), for as long as the client is
  open — the server stores a key once, so a retry never counts twice;
* drops a batch the server refuses (another 4xx) or that cannot be sent (no flags
  environment), with a logged error, counting its events as ``failed``.

Nothing here blocks, sleeps or touches the network; callers hold a lock around it.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

import httpx

from ..errors import ApiError, MillpondError, TransportError
from ..models.flags import (
    EventsAccepted,
    IdentifyCompany,
    IdentifyEvent,
    TrackEvent,
    TraitValue,
)
from ._retry import RetryPolicy

__all__ = [
    "EventOptions",
    "EventQueue",
    "EventStats",
    "Send",
    "Wait",
    "identify_event",
    "track_event",
    "with_keys",
]

_log = logging.getLogger("millpond.events")

Event: TypeAlias = IdentifyEvent | TrackEvent

MAX_BATCH = 1000
"""The server's largest batch."""


@dataclass(frozen=True)
class EventOptions:
    """How a client buffers and sends identify/track events:
    ``Millpond(event_options=EventOptions(flush_interval=5.0))``."""

    max_buffer: int = 10_000
    """Events waiting to be sent, at most; beyond it the oldest is dropped."""
    batch_size: int = 100
    """Events per request, at most (the server takes up to 1,000)."""
    flush_interval: float = 1.0
    """Seconds an event waits, at most, for others to share its request."""
    close_timeout: float = 10.0
    """Seconds ``close()`` (and the interpreter's exit) waits for the buffer to be sent."""
    warn_every: int = 1000
    """A full buffer logs a warning at its first drop, then once per this many drops."""

    def __post_init__(self) -> None:
        if self.max_buffer < 1:
            raise ValueError(f"max_buffer must be >= 1, not {self.max_buffer}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be 1 to {MAX_BATCH}, not {self.batch_size}")
        if not (self.flush_interval >= 0 and self.close_timeout >= 0):
            raise ValueError("flush_interval and close_timeout must be >= 0")
        if self.warn_every < 1:
            raise ValueError(f"warn_every must be >= 1, not {self.warn_every}")


@dataclass(frozen=True)
class EventStats:
    """A client's event counters (``mp.event_stats``), since it was made (in a forked child:
    since the fork). ``queued == sent + dropped + failed + pending``."""

    queued: int = 0
    """Events taken by ``identify``/``track``."""
    sent: int = 0
    """Events the server acknowledged (stored now, or stored before: ``duplicates``)."""
    duplicates: int = 0
    """Of the sent events, those the server already had (a batch sent again after an
    answer was lost): stored once, counted once."""
    dropped: int = 0
    """Events never sent: the buffer was full (the oldest go first), the client is offline,
    or they were still waiting when the client closed."""
    failed: int = 0
    """Events in batches the server refused (4xx other than 408, 429) or that could not be
    sent at all (no flags environment): logged as errors, not retried."""
    retries: int = 0
    """Batches sent again after a failure."""
    pending: int = 0
    """Events waiting or being sent now."""


# -- events --------------------------------------------------------------------------------


def _key() -> str:
    return f"evt_{uuid.uuid4().hex}"


def _now() -> datetime:
    return datetime.now(UTC)


def identify_event(
    keys: Mapping[str, str],
    company: IdentifyCompany | Mapping[str, Any] | None = None,
    name: str | None = None,
    traits: Mapping[str, TraitValue] | None = None,
) -> IdentifyEvent:
    """A validated identify event with a fresh idempotency key (``ValueError`` if bad)."""
    if company is not None and not isinstance(company, IdentifyCompany):
        company = IdentifyCompany.model_validate(dict(company))
    return IdentifyEvent(
        keys=dict(keys),
        company=company,
        name=name,
        traits=None if traits is None else dict(traits),
        idempotency_key=_key(),
        sent_at=_now(),
    )


def track_event(
    event: str,
    company: Mapping[str, str] | None = None,
    user: Mapping[str, str] | None = None,
    quantity: int = 1,
    traits: Mapping[str, TraitValue] | None = None,
) -> TrackEvent:
    """A validated track event with a fresh idempotency key (``ValueError`` if bad)."""
    return TrackEvent(
        event=event,
        company=None if company is None else dict(company),
        user=None if user is None else dict(user),
        quantity=quantity,
        traits=None if traits is None else dict(traits),
        idempotency_key=_key(),
        sent_at=_now(),
    )


def with_keys(events: Sequence[Event]) -> list[Event]:
    """``events`` where each one lacking an idempotency key has a fresh one (copies; the
    originals are left alone), so sending the list again never counts twice."""
    return [
        e if e.idempotency_key else e.model_copy(update={"idempotency_key": _key()}) for e in events
    ]


# -- the queue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send these events in one batch, then report with ``sent`` or ``failed``."""

    events: list[Event]


@dataclass(frozen=True)
class Wait:
    """Nothing to send for ``seconds`` (``None``: until an event or a flush arrives)."""

    seconds: float | None


@dataclass
class _Entry:
    seq: int
    at: float
    event: Event


@dataclass
class _Batch:
    entries: list[_Entry]
    attempts: int = 0
    retry_at: float = 0.0
    events: list[Event] = field(init=False)

    def __post_init__(self) -> None:
        self.events = [e.event for e in self.entries]


def retryable(error: BaseException, policy: RetryPolicy) -> bool:
    """Whether a batch that failed with ``error`` is worth sending again. A batch carries
    idempotency keys, so even a request the server may have acted on is safe to repeat."""
    if isinstance(error, ApiError):
        if error.status_code == 409 and error.code == "event_conflict":
            return True  # concurrent batches kept conflicting: the server says send it again
        return policy.should_retry(method="POST", status_code=error.status_code)
    if isinstance(error, TransportError):
        cause = error.__cause__
        if isinstance(cause, httpx.TransportError):
            return policy.should_retry(method="POST", error=cause, idempotent=True)
        return True
    if isinstance(error, httpx.TransportError):
        return policy.should_retry(method="POST", error=error, idempotent=True)
    return False  # ConfigurationError, an unreadable answer, a bug: trying again cannot help


class EventQueue:
    """The buffer and the send/retry state machine of one client (not thread-safe: the
    workers call it under their lock). Times are ``time.monotonic()`` seconds."""

    def __init__(
        self, options: EventOptions, policy: RetryPolicy, *, offline: bool = False
    ) -> None:
        self.options = options
        self.policy = policy
        self.offline = offline
        self.closed = False
        self._waiting: deque[_Entry] = deque()
        self._batch: _Batch | None = None
        self._sending = False
        self._seq = 0
        self._flush_upto = 0
        self._queued = self._sent = self._duplicates = self._dropped = 0
        self._failed = self._retries = 0
        self._full_drops = 0

    def fresh(self) -> EventQueue:
        """An empty queue with the same settings (a forked child's)."""
        return EventQueue(self.options, self.policy, offline=self.offline)

    # -- the caller's side ---------------------------------------------------------------------

    def push(self, event: Event, now: float) -> bool:
        """Buffer ``event``; False when it was dropped at once (offline, or closed)."""
        self._queued += 1
        if self.offline or self.closed:
            self._dropped += 1
            if self.closed and not self.offline:
                _log.warning("event %r dropped: the client is closed", _name(event))
            return False
        if len(self._waiting) >= self.options.max_buffer:
            self._waiting.popleft()
            self._dropped += 1
            self._full_drops += 1
            if (self._full_drops - 1) % self.options.warn_every == 0:
                _log.warning(
                    "event buffer full (%d events waiting): dropped the oldest; %d dropped"
                    " so far (is the server reachable? see mp.event_stats)",
                    self.options.max_buffer,
                    self._full_drops,
                )
        self._seq += 1
        self._waiting.append(_Entry(self._seq, now, event))
        return True

    def request_flush(self) -> int:
        """Send everything buffered now without waiting for the interval; returns the mark
        to pass to :meth:`settled`."""
        self._flush_upto = self._seq
        return self._seq

    def settled(self, mark: int) -> bool:
        """Whether every event pushed up to ``mark`` has left the queue (sent, dropped or
        failed)."""
        if self._batch is not None and self._batch.entries[0].seq <= mark:
            return False
        return not self._waiting or self._waiting[0].seq > mark

    @property
    def idle(self) -> bool:
        return not self._waiting and self._batch is None

    def stats(self) -> EventStats:
        pending = len(self._waiting) + (len(self._batch.entries) if self._batch else 0)
        return EventStats(
            queued=self._queued,
            sent=self._sent,
            duplicates=self._duplicates,
            dropped=self._dropped,
            failed=self._failed,
            retries=self._retries,
            pending=pending,
        )

    def close(self) -> int:
        """No more events: those still here are dropped (counted, logged); how many."""
        self.closed = True
        left = list(self._waiting)
        self._waiting.clear()
        if self._batch is not None and not self._sending:
            left += self._batch.entries
            self._batch = None
        if left:
            self._dropped += len(left)
            _log.warning("%d events not sent before the client closed: dropped", len(left))
        return len(left)

    # -- the worker's side ---------------------------------------------------------------------

    def next_action(self, now: float) -> Send | Wait:
        """What the worker does next. After a :class:`Send` it must call :meth:`sent` or
        :meth:`failed` before asking again."""
        if self._sending:
            return Wait(None)
        batch = self._batch
        if batch is not None:
            if now < batch.retry_at:
                return Wait(batch.retry_at - now)
            self._sending = True
            return Send(batch.events)
        if not self._waiting:
            return Wait(None)
        oldest = self._waiting[0]
        due = oldest.at + self.options.flush_interval
        if (
            len(self._waiting) >= self.options.batch_size
            or oldest.seq <= self._flush_upto
            or now >= due
            or self.closed
        ):
            size = min(self.options.batch_size, len(self._waiting))
            self._batch = _Batch([self._waiting.popleft() for _ in range(size)])
            self._sending = True
            return Send(self._batch.events)
        return Wait(due - now)

    def sent(self, answer: EventsAccepted) -> None:
        """The batch of the last :class:`Send` was acknowledged."""
        batch = self._take()
        self._sent += len(batch.entries)
        self._duplicates += answer.duplicates

    def failed(self, error: BaseException, now: float) -> float | None:
        """The batch of the last :class:`Send` failed with ``error``: it is kept and sent
        again after the returned delay, or dropped (``None``) when retrying cannot help."""
        batch = self._batch
        if batch is None or not self._sending:
            raise RuntimeError("failed() without a batch being sent")
        self._sending = False
        count = len(batch.entries)
        if self.closed:
            self._take()
            self._dropped += count
            _log.warning("%d events not sent before the client closed: %s", count, error)
            return None
        if not retryable(error, self.policy):
            self._take()
            self._failed += count
            if isinstance(error, MillpondError):
                _log.error("%d events dropped, not retried: %s", count, error)
            else:
                _log.error("%d events dropped, not retried", count, exc_info=error)
            return None
        delay = self.policy.delay(batch.attempts)
        batch.attempts += 1
        batch.retry_at = now + delay
        self._retries += 1
        log = _log.warning if batch.attempts == 1 or batch.attempts % 10 == 0 else _log.info
        log(
            "sending %d events failed (attempt %d): %s; trying again in %.1f s",
            count,
            batch.attempts,
            error,
            delay,
        )
        return delay

    def _take(self) -> _Batch:
        batch = self._batch
        if batch is None:
            raise RuntimeError("no batch being sent")
        self._batch = None
        self._sending = False
        return batch


def _name(event: Event) -> str:
    return event.event if isinstance(event, TrackEvent) else "identify"
