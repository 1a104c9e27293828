"""Listen to the control database's change channels (``LISTEN``/``NOTIFY``).

``Invalidation`` keeps a generation number that moves on every notification on a
channel, and is ``live`` only while its listening connection is up. Caches consult it:
they serve entries only while live and store an entry only if the generation did not
move while it was being read — so a change committed by any replica is never hidden by
a cache for longer than the notification takes to arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg
from psycopg import sql

from ...backoff import Backoff

_log = logging.getLogger("millpond.store")


class Invalidation:
    def __init__(self, conninfo: str, channel: str) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self.generation = 0
        self.live = False
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self, timeout: float = 10) -> None:
        self._task = asyncio.create_task(self._run(), name=f"listen-{self.channel}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.live = False

    def bump(self) -> None:
        self.generation += 1

    async def _run(self) -> None:
        backoff = Backoff(base=0.1, cap=5.0)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.bump()  # anything may have changed while we were not listening
                    self.live = True
                    self._ready.set()
                    backoff.reset()
                    async for _ in conn.notifies():
                        self.bump()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("lost LISTEN %s (%s); reconnecting", self.channel, type(exc).__name__)
            finally:
                self.live = False
                self.bump()
            await asyncio.sleep(backoff.next_delay())
