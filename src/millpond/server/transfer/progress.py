"""What a running job shares with the task watching it: counters it moves, a flag to stop
it. Written by the job's thread, read by the heartbeat (plain attributes: a torn read
only shows a slightly old number)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import Interrupted


@dataclass
class Progress:
    bytes_done: int = 0
    rows_done: int = 0
    bytes_total: int | None = None
    cancelled: bool = False
    phase: str = "queued"

    def check(self) -> None:
        """Raise :class:`Interrupted` if the job was asked to stop."""
        if self.cancelled:
            raise Interrupted("the job was stopped")
