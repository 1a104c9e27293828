"""The realtime client: subscribe to SQL queries, keep their rows in a client cache,
get callbacks for every change (protocol: ``docs/realtime-protocol.md``; guide:
``docs/sdk.md``).

- ``_realtime_core``: the sans-I/O core: the protocol state machine (``Session``) and
  the cache with its callbacks (``Cache``), shared by both clients.
- ``_realtime_async``: :class:`AsyncRealtime`, the asyncio driver (``websockets``).
- ``_realtime_sync``: :class:`Realtime`, the same driver on a background thread, with
  callbacks queued for ``update()`` on the caller's thread or run on that thread.

Get one from a client: ``mp.realtime("owner/db")`` or ``await amp.realtime("owner/db")``.
"""

from ._realtime_async import AsyncRealtime, CallbackMode, realtime_url
from ._realtime_core import (
    CLOSE_CODES,
    FATAL_CLOSE_CODES,
    CallbackHandle,
    ConnectInfo,
    DisconnectInfo,
    Event,
    RealtimeError,
    ReducerEvent,
    Row,
    RowChange,
    ScheduledCall,
    SubscriptionError,
    Tables,
    TableView,
    parse_lsn,
)
from ._realtime_sync import Realtime

__all__ = [
    "CLOSE_CODES",
    "FATAL_CLOSE_CODES",
    "AsyncRealtime",
    "CallbackHandle",
    "CallbackMode",
    "ConnectInfo",
    "DisconnectInfo",
    "Event",
    "Realtime",
    "RealtimeError",
    "ReducerEvent",
    "Row",
    "RowChange",
    "ScheduledCall",
    "SubscriptionError",
    "TableView",
    "Tables",
    "parse_lsn",
    "realtime_url",
]
