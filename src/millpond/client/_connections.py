"""Direct Postgres connections through the gateway: what the sync and async clients
share without I/O — the connection string, the check that psycopg is installed, and
forgetting pools after ``fork()``.

The gateway takes the API key as the password and ``owner/name`` as the database name
(docs/gateway.md). Its host is the API's host; its port is the client's ``gateway_port``,
else ``$MILLPOND_GATEWAY_PORT``, else 5433. TLS: ``sslmode=require`` unless the host is a
loopback address (``prefer`` there, as the gateway may allow plain loopback).
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import weakref
from types import ModuleType
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from ._base import ClientConfig, split_database

DEFAULT_GATEWAY_PORT = 5433
GATEWAY_PORT_ENV = "MILLPOND_GATEWAY_PORT"
INSTALL_HINT = 'pip install "millpond[postgres]"'


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def gateway_port(port: int | None) -> int:
    if port is not None:
        return port
    value = os.environ.get(GATEWAY_PORT_ENV)
    if not value:
        return DEFAULT_GATEWAY_PORT
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(
            f"{GATEWAY_PORT_ENV} must be a port number, not {value!r}"
        ) from None


def gateway_params(
    config: ClientConfig,
    db: str,
    port: int | None,
    *,
    host: str | None = None,
    sslmode: str | None = None,
    user: str = "millpond",
) -> dict[str, str]:
    """libpq parameters for ``db`` through the gateway, without the password."""
    split_database(db)
    where = host or urlsplit(config.base_url).hostname or "127.0.0.1"
    mode = sslmode or ("prefer" if is_loopback(where) else "require")
    return {
        "host": where,
        "port": str(gateway_port(port)),
        "dbname": db,
        "user": user,
        "sslmode": mode,
    }


def conninfo(**params: str) -> str:
    """A libpq keyword/value connection string, values quoted as libpq reads them."""

    def quoted(value: str) -> str:
        if value and not any(c in value for c in " '\\\t\n"):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{k}={quoted(v)}" for k, v in params.items())


def require(module: str) -> ModuleType:
    """Import psycopg or psycopg_pool, or say what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigurationError(
            f"direct connections need psycopg 3 and psycopg_pool: {INSTALL_HINT}"
        ) from None


class ForkAware(Protocol):
    def _forget_pools(self) -> None: ...


_owners: weakref.WeakSet[Any] = weakref.WeakSet()


def watch_forks(owner: ForkAware) -> None:
    """After ``fork()`` the child forgets ``owner``'s pools (without closing the
    parent's connections) and builds its own at first use."""
    _owners.add(owner)


def _after_fork_in_child() -> None:
    for owner in list(_owners):
        owner._forget_pools()


os.register_at_fork(after_in_child=_after_fork_in_child)
