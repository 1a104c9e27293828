"""The seam between the client's flag calls and local flag evaluation.

A :class:`LocalFlags` answers checks in-process: the SDK's live stream of an environment's
rules (``live_flags=True``) and :class:`millpond.flags.SqlAlchemyFlagStore` (flags kept in
the application's own database) both implement it. ``check_flag`` and friends ask it
first; when it answers ``None`` (nothing loaded yet, or a company/user it has not seen),
the client falls back to the server (or to defaults when offline).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from ..models.flags import FlagCheck


class LocalFlags(Protocol):
    def evaluate(
        self,
        keys: Sequence[str] | None,
        company: Mapping[str, str] | None,
        user: Mapping[str, str] | None,
    ) -> list[FlagCheck] | None:
        """Check the flags ``keys`` (every live flag when None), in that order, for the
        company and user given by their keys; ``None`` when this source cannot answer."""
        ...

    def note_track(
        self,
        event: str,
        company: Mapping[str, str] | None,
        user: Mapping[str, str] | None,
        quantity: int,
    ) -> None:
        """A track event was just queued: count it locally so usage limits bite before the
        server's metrics catch up (sources without metrics ignore it)."""
        ...
