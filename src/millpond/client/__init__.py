"""The millpond SDK: :class:`Millpond` (sync) and :class:`AsyncMillpond` (async), one
implementation.

- ``_base``: the sans-I/O core: configuration, the :class:`~._base.Call` a resource method
  describes, building each request, reading each answer into a model or an error, and
  the retry state machine (``Attempts``), deciding with :class:`RetryPolicy` (``_retry``).
- ``_async``: the async client and resources, written by hand; they only send and sleep.
- ``_sync``: the sync client and resources, generated from ``_async`` by
  ``scripts/async_to_sync.py`` (a test checks they are up to date).
- ``realtime``: the realtime client (``Realtime``, ``AsyncRealtime``) over a sans-I/O core
  (``_realtime_core``); the sync one wraps the async driver on a background thread.
- ``_events``: the buffer of identify/track events (sans-I/O), sent by ``_event_workers``
  (a thread for the sync client, a task for the async one); ``EventOptions`` sizes it.
- ``_flagcache``: caching of flag checks (``LocalCache``, any ``CacheProvider``);
  ``_flags_live*``: local evaluation on the live flags stream (``local_evaluation=True``);
  ``_local``: the ``LocalFlags`` seam they and ``millpond.flags.SqlAlchemyFlagStore`` share.
"""

from ._async.client import AsyncMillpond
from ._events import EventOptions, EventStats
from ._flagcache import CacheProvider, LocalCache
from ._retry import RetryPolicy
from ._sync.client import Millpond
from .realtime import AsyncRealtime, Realtime, RealtimeError, SubscriptionError

__all__ = [
    "AsyncMillpond",
    "AsyncRealtime",
    "CacheProvider",
    "EventOptions",
    "EventStats",
    "LocalCache",
    "Millpond",
    "Realtime",
    "RealtimeError",
    "RetryPolicy",
    "SubscriptionError",
]
