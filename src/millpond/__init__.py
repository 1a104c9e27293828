"""millpond: a self-hosted backend platform on PostgreSQL. This is its Python SDK::

    from millpond import Millpond

    with Millpond() as mp:  # reads MILLPOND_API_KEY and MILLPOND_URL
        db = mp.databases.create("my-db")
        print(mp.query(db.full_name, "SELECT 1 AS one").data)

``AsyncMillpond`` has the same surface with ``await``. ``mp.realtime("owner/db")`` opens
a realtime connection (``Realtime`` / ``AsyncRealtime``): subscriptions, a client cache
and callbacks. Errors are ``MillpondError`` subclasses (``ApiError`` and its per-status
subclasses, ``TransportError``, ``RealtimeError``…); results are pydantic models from
``millpond.models``.

Importing ``millpond`` never imports the server (``millpond.server``) or its dependencies,
and imports the client only when it is first used (so ``millpond.module``, which module
workers import, stays light).
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    ApiError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    ConnectError,
    ForbiddenError,
    MillpondError,
    NotFoundError,
    RateLimitError,
    ReducerError,
    ServerError,
    TimeoutError,
    TransportError,
    UnauthorizedError,
    UnprocessableEntityError,
)

if TYPE_CHECKING:
    from . import models
    from .client import (
        AsyncMillpond,
        AsyncRealtime,
        CacheProvider,
        EventOptions,
        LocalCache,
        Millpond,
        Realtime,
        RealtimeError,
        RetryPolicy,
        SubscriptionError,
    )

_FROM_CLIENT = frozenset(
    {
        "AsyncMillpond",
        "AsyncRealtime",
        "CacheProvider",
        "EventOptions",
        "LocalCache",
        "Millpond",
        "Realtime",
        "RealtimeError",
        "RetryPolicy",
        "SubscriptionError",
    }
)


def __getattr__(name: str) -> Any:
    if name == "models":
        value: Any = importlib.import_module(".models", __name__)
    elif name in _FROM_CLIENT:
        value = getattr(importlib.import_module(".client", __name__), name)
    else:
        raise AttributeError(f"module 'millpond' has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = [
    "ApiError",
    "AsyncMillpond",
    "AsyncRealtime",
    "BadRequestError",
    "CacheProvider",
    "ConfigurationError",
    "ConflictError",
    "ConnectError",
    "EventOptions",
    "ForbiddenError",
    "LocalCache",
    "Millpond",
    "MillpondError",
    "NotFoundError",
    "RateLimitError",
    "Realtime",
    "RealtimeError",
    "ReducerError",
    "RetryPolicy",
    "ServerError",
    "SubscriptionError",
    "TimeoutError",
    "TransportError",
    "UnauthorizedError",
    "UnprocessableEntityError",
    "__version__",
    "models",
]
