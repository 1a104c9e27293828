"""Connections over time: revoked keys and removed rights close open connections within
seconds, connection limits per database and per key, the idle timeout, and cancel
requests that reach the right backend (and only it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from _waiting import wait_until
from millpond.server.gateway import Gateway
from millpond.server.gateway import protocol as pq

from .conftest import Http, Tenant, Wire, new_key

MakeTenant = Callable[..., Tenant]
OpenWire = Callable[..., Wire]
Conn = psycopg.Connection[tuple[Any, ...]]


def _fatal_of(conn: Conn) -> psycopg.Error:
    """The error the next statement on a connection the gateway closed gets."""
    with pytest.raises(psycopg.OperationalError) as info:
        conn.execute("SELECT 1")
    return info.value


# -- revocation ---------------------------------------------------------------------------------


def test_revoked_key_closes_its_open_connections(
    tenant: Tenant, http: Http, port: int, wire: OpenWire
) -> None:
    """An idle connection gets the FATAL at once; a busy one has its statement cancelled
    (the gateway writes its error only at a message boundary), then the FATAL and EOF."""
    key_id, secret = new_key(http, tenant.key)
    idle = wire()
    assert idle.login(tenant.database, secret) is None
    with (
        psycopg.connect(tenant.dsn(port), autocommit=True) as kept,  # another key: stays
        psycopg.connect(tenant.dsn(port, key=secret), autocommit=True) as busy,
    ):
        outcome: list[BaseException] = []

        def sleep() -> None:
            try:
                busy.execute("SELECT pg_sleep(30)")
            except BaseException as exc:
                outcome.append(exc)

        sleeper = threading.Thread(target=sleep)
        sleeper.start()
        time.sleep(0.3)
        started = time.monotonic()
        http("DELETE", f"/v1/keys/{key_id}", tenant.key)
        error = idle.error()
        assert (error["S"], error["C"], error["M"]) == ("FATAL", "28000", "API key revoked")
        assert idle.closed()
        sleeper.join(timeout=10)
        assert not sleeper.is_alive(), "the busy connection's statement still runs"
        assert time.monotonic() - started < 5
        assert outcome and isinstance(outcome[0], psycopg.errors.QueryCanceled)
        _fatal_of(busy)  # then closed (libpq reports the FATAL as a closed connection)
        assert busy.closed
        assert kept.execute("SELECT 1").fetchone() == (1,)


def test_removed_collaborator_is_disconnected(
    tenant: Tenant, make_tenant: MakeTenant, http: Http, port: int
) -> None:
    guest = make_tenant()
    path = f"/v1/databases/{tenant.database}/collaborators/{guest.username}"
    http("PUT", path, tenant.key, json={"role": "write"})
    with psycopg.connect(tenant.dsn(port, key=guest.key), autocommit=True) as conn:
        http("PUT", path, tenant.key, json={"role": "read"})  # weaker than its rw role
        wait_until(lambda: conn.closed or _is_closed(conn), what="downgraded connection closed")
    with psycopg.connect(tenant.dsn(port, key=guest.key), autocommit=True) as conn:
        http("DELETE", path, tenant.key)
        wait_until(lambda: _is_closed(conn), what="removed collaborator's connection closed")


def _is_closed(conn: Conn) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        assert "28000" in str(exc) or "can no longer read" in str(exc) or "changed to" in str(exc)
        return True
    time.sleep(0.2)
    return False


# -- limits -------------------------------------------------------------------------------------


@pytest.fixture
def limits(gateway: Gateway) -> Iterator[Gateway]:
    yield gateway
    gateway.max_per_key = gateway.settings.gateway_max_connections_per_key
    gateway.max_per_database = gateway.settings.gateway_max_connections_per_database
    gateway.idle_timeout_s = gateway.settings.gateway_idle_timeout_s


def test_connection_limits(limits: Gateway, tenant: Tenant, http: Http, wire: OpenWire) -> None:
    limits.max_per_key, limits.max_per_database = 2, 3
    _, second_key = new_key(http, tenant.key)
    for _ in range(2):
        assert wire().login(tenant.database, tenant.key) is None
    error = wire().login(tenant.database, tenant.key)
    assert error is not None and error["C"] == "53300"
    assert error["M"] == "too many connections with this API key (at most 2)"
    assert wire().login(tenant.database, second_key) is None
    error = wire().login(tenant.database, second_key)
    assert error is not None and error["C"] == "53300"
    assert error["M"] == (
        f'too many connections to database "{tenant.database}" through the gateway (at most 3)'
    )


def test_closed_connections_free_their_slots(
    limits: Gateway, tenant: Tenant, port: int, wire: OpenWire
) -> None:
    limits.max_per_key = 1
    for _ in range(3):
        with psycopg.connect(tenant.dsn(port)) as conn:
            conn.execute("SELECT 1")

        def log_in_and_out() -> bool:
            w = wire()
            ok = w.login(tenant.database, tenant.key) is None
            w.close()
            return ok

        wait_until(log_in_and_out, what="the slot freed")


def test_idle_timeout(limits: Gateway, tenant: Tenant, port: int) -> None:
    limits.idle_timeout_s = 1.0
    with (
        psycopg.connect(tenant.dsn(port), autocommit=True) as idle,
        psycopg.connect(tenant.dsn(port), autocommit=True) as busy,
    ):
        idle.execute("SELECT 1")
        busy.execute("SELECT pg_sleep(2.2)")  # busy longer than the timeout: not idle
        assert busy.execute("SELECT 2").fetchone() == (2,)
        error = _fatal_of(idle)
        assert "terminating connection due to idle timeout" in str(error)


# -- cancel ---------------------------------------------------------------------------------------


def test_cancel_reaches_the_right_backend(tenant: Tenant, port: int, wire: OpenWire) -> None:
    with (
        psycopg.connect(tenant.dsn(port), autocommit=True) as victim,
        psycopg.connect(tenant.dsn(port), autocommit=True) as bystander,
    ):
        results: dict[str, object] = {}

        def run(name: str, conn: Conn, seconds: float) -> None:
            try:
                results[name] = conn.execute(f"SELECT pg_sleep({seconds}), 'done'").fetchone()
            except psycopg.Error as exc:
                results[name] = exc

        threads = [
            threading.Thread(target=run, args=("victim", victim, 20)),
            threading.Thread(target=run, args=("bystander", bystander, 1.5)),
        ]
        for t in threads:
            t.start()
        time.sleep(0.3)
        # a cancel request with a made-up key does nothing
        bogus = wire()
        bogus.send(pq.cancel_request(victim.info.backend_pid, 12345))
        assert bogus.closed()
        started = time.monotonic()
        victim.cancel_safe()
        threads[0].join(timeout=10)
        assert time.monotonic() - started < 5
        assert isinstance(results["victim"], psycopg.errors.QueryCanceled)
        threads[1].join(timeout=10)
        assert results["bystander"] == ("", "done")
        assert victim.execute("SELECT 'still usable'").fetchone() == ("still usable",)
