"""One backoff policy for everything that waits before trying again: SDK request
retries, realtime reconnects, the server's LISTEN reconnects.

Exponential growth from ``base``, capped at ``cap`` (a lesson from clients whose backoff
never capped), with full jitter: each delay is uniform in ``[0, min(cap, base * 2**n)]``,
drawn from a generator of its own: a library that draws from the ``random`` module's
shared one changes the sequence of an application that seeded it (and, from a background
thread, makes Hypothesis tests running meanwhile fail as flaky).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float = 0.5
    cap: float = 8.0
    jitter: bool = True
    attempt: int = field(default=0, init=False)
    _random: random.Random = field(
        default_factory=random.Random, init=False, repr=False, compare=False
    )

    def delay(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (0-based), without state."""
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 62)))
        return self._random.uniform(0, ceiling) if self.jitter else ceiling

    def next_delay(self) -> float:
        """Delay before the next try, advancing the attempt count."""
        value = self.delay(self.attempt)
        self.attempt += 1
        return value

    def reset(self) -> None:
        self.attempt = 0
