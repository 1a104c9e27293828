"""Retention of the flags tables that grow with traffic: events, the check log and the
usage counters of past periods.

Configuration, rules, companies, users and all-time counters are never purged. Events
older than ``flags_events_retention_days`` go (so an idempotency key is remembered that
long: a batch retried later than that would count again); recorded checks older than
``flags_checks_retention_days``; counters of day, week and month buckets that ended more
than ``flags_metrics_retention_days`` ago (checks read only the current bucket of each
period). A value of 0 keeps that table forever.

One replica purges at a time (a transaction-level advisory lock); each statement deletes
a bounded batch so a purge never holds locks long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from ..config import Settings
from ..store import Store

_log = logging.getLogger("millpond.flags")

LOCK_KEY = 0x666C6167_7265746E  # "flagretn"
BATCH = 10_000


@dataclass(frozen=True)
class Purged:
    events: int = 0
    checks: int = 0
    metrics: int = 0


_EVENTS = """
DELETE FROM flag_events WHERE id IN (
    SELECT id FROM flag_events WHERE received_at < now() - %s * interval '1 day'
    LIMIT %s)
"""
_CHECKS = """
DELETE FROM flag_checks WHERE id IN (
    SELECT id FROM flag_checks WHERE checked_at < now() - %s * interval '1 day'
    LIMIT %s)
"""
_METRICS = """
DELETE FROM flag_metrics WHERE ctid IN (
    SELECT ctid FROM flag_metrics
    WHERE period <> 'all_time' AND bucket_start < now() - %s * interval '1 day'
    LIMIT %s)
"""


async def purge(conn: AsyncConnection[DictRow], settings: Settings) -> Purged | None:
    """One pass (``conn`` in autocommit); None when another replica is purging."""
    counts = {}
    for name, statement, days in (
        ("events", _EVENTS, settings.flags_events_retention_days),
        ("checks", _CHECKS, settings.flags_checks_retention_days),
        # a month bucket ends at most 31 days after it starts
        ("metrics", _METRICS, settings.flags_metrics_retention_days + 31),
    ):
        total = 0
        if days > 0 and (name != "metrics" or settings.flags_metrics_retention_days > 0):
            while True:
                async with conn.transaction():
                    cur = await conn.execute(
                        "SELECT pg_try_advisory_xact_lock(%s) AS mine", (LOCK_KEY,)
                    )
                    row = await cur.fetchone()
                    if row is None or not row["mine"]:
                        return None
                    deleted = (await conn.execute(statement, (days, BATCH))).rowcount
                total += deleted
                if deleted < BATCH:
                    break
        counts[name] = total
    return Purged(**counts)


class Retention:
    """Purges every ``flags_retention_interval_s`` in the background."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="flags-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flags_retention_interval_s)
            try:
                async with self.store.pool.connection() as conn:
                    done = await purge(conn, self.settings)
                if done is not None and (done.events or done.checks or done.metrics):
                    _log.info(
                        "flags retention: purged %d events, %d checks, %d metric buckets",
                        done.events,
                        done.checks,
                        done.metrics,
                    )
            except Exception as exc:  # the next pass tries again
                _log.warning("flags retention failed: %s: %s", type(exc).__name__, exc)
