"""Every example of the Schematic seed document (``schematichq`` 1.0.4's README), run with
the original, unmodified package against millpond's ``/compat/schematic``. Each test is
named after the seed's section; where the seed's text cannot run as written (its defects,
listed in docs/compat.md), the test first shows the defect, then runs the workaround.

The only change to each example: ``SchematicConfig(base_url=…)`` (and a real key)."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schematic
import schematic.core
from schematic import EventBodyIdentifyCompany
from schematic.client import (
    AsyncSchematic,
    AsyncSchematicConfig,
    LocalCache,
    Schematic,
    SchematicConfig,
)
from schematic.errors import NotFoundError

from _waiting import wait_until
from conftest import FlagsEnv
from millpond.server.testing import free_port

COMPANY = {"id": "your-company-id"}
USER = {"user_id": "your-user-id"}


@pytest.fixture
def key(flags_env: FlagsEnv) -> str:
    return flags_env.bound_key()


@pytest.fixture
def url(base_url: str) -> str:
    return f"{base_url}/compat/schematic"


@pytest.fixture
def make(key: str, url: str) -> Iterator[Callable[..., Schematic]]:
    """``make(**config)``: a client of the environment with the seed's config options."""
    made: list[Schematic] = []

    def build(**config: Any) -> Schematic:
        client = Schematic(key, SchematicConfig(base_url=url, **config))
        made.append(client)
        return client

    yield build
    for client in made:
        _close(client)


def _close(client: Schematic) -> None:
    """Stop the client's event buffer and close the httpx client it made (the package's
    ``shutdown`` leaves it open)."""
    client.shutdown()
    client._client_wrapper.httpx_client.httpx_client.close()


@pytest.fixture
def client(make: Callable[..., Schematic]) -> Schematic:
    return make()


@pytest.fixture
def stalled() -> Iterator[str]:
    """The URL of a server that accepts connections and never answers (a stalled network)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/compat/schematic"


def _closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/compat/schematic"  # nobody listens there


# -- Installation and Setup ----------------------------------------------------------------


def test_installation_and_setup(key: str, url: str, flags_env: FlagsEnv) -> None:
    flags_env("POST", "/flags", 201, json={"key": "on", "default_value": True})
    client = Schematic(key, SchematicConfig(base_url=url))
    try:
        assert client.check_flag("on") is True
    finally:
        _close(client)


# -- Async Client ---------------------------------------------------------------------------


# the client made outside a loop leaves its flush coroutine never awaited (the package's)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_async_client(key: str, url: str, client: Schematic) -> None:
    company_id = client.companies.upsert_company(keys={"id": "async-co"}, name="A").data.id
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # the seed makes the client outside any event loop: its event buffer needs one
    with pytest.raises(RuntimeError, match="no running event loop"):
        AsyncSchematic(key, AsyncSchematicConfig(base_url=url))

    async def main() -> str:
        aclient = AsyncSchematic(key, AsyncSchematicConfig(base_url=url))  # inside the loop
        try:
            response = await aclient.companies.get_company(company_id=company_id)
            return response.data.name
        finally:
            await aclient.shutdown()
            # the package never closes the httpx client it made
            await aclient._client_wrapper.httpx_client.httpx_client.aclose()

    try:
        assert asyncio.run(main()) == "A"
    finally:  # AsyncSchematic takes over SIGINT and SIGTERM: give them back
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


# -- Exception Handling ---------------------------------------------------------------------


def test_exception_handling(client: Schematic) -> None:
    caught: schematic.core.ApiError | None = None
    try:
        client.companies.get_company(
            company_id="company_id",
        )
    except schematic.core.ApiError as e:  # Handle all errors
        caught = e
    assert isinstance(caught, NotFoundError)
    assert caught.status_code == 404
    assert "company_id" in caught.body.error and caught.body.code == "company_not_found"


# -- Usage examples: Sending identify events ------------------------------------------------


def test_sending_identify_events(client: Schematic) -> None:
    client.identify(
        keys={
            "email": "wcoyote@acme.net",
            "user_id": "your-user-id",
        },
        company=EventBodyIdentifyCompany(
            keys={"id": "your-company-id"},
            name="Acme Widgets, Inc.",
            traits={
                "city": "Atlanta",
            },
        ),
        name="Wile E. Coyote",
        traits={
            "login_count": 24,
            "is_staff": False,  # the seed writes false (a NameError in Python)
        },
    )
    client.event_buffer._flush()  # the SDK's own flush, as its 5 s timer would
    user = client.companies.lookup_user(keys={"email": "wcoyote@acme.net"}).data
    assert user.name == "Wile E. Coyote"
    assert user.traits == {"login_count": 24, "is_staff": False}
    assert {k.key: k.value for k in user.keys} == {
        "email": "wcoyote@acme.net",
        "user_id": "your-user-id",
    }
    (member,) = user.company_memberships
    assert member.company is not None and member.company.name == "Acme Widgets, Inc."
    company = client.companies.lookup_company(keys=COMPANY).data
    assert company.traits == {"city": "Atlanta"} and company.user_count == 1


# -- Sending track events -------------------------------------------------------------------


def test_sending_track_events(client: Schematic, flags_env: FlagsEnv) -> None:
    client.track(
        event="some-action",
        user={"user_id": "your-user-id"},
        company={"id": "your-company-id"},
    )
    client.event_buffer._flush()
    company = flags_env("POST", "/companies/lookup", json={"keys": COMPANY})
    metrics = flags_env("GET", f"/companies/{company['id']}/metrics")
    counts = {
        m["period"]: m["value"]
        for m in metrics
        if m["event"] == "some-action" and m["aggregation"] == "count"
    }
    assert counts["all_time"] == 1
    assert client.companies.lookup_user(keys=USER).data.id


def test_sending_track_events_lost_at_shutdown(
    make: Callable[..., Schematic], flags_env: FlagsEnv
) -> None:
    """The package's shutdown stops its flush thread without a last flush: events still in
    the buffer are dropped (flush first, as docs/compat.md says)."""
    client = make()
    # once its flush thread waits out its first period (threading.Event's waiters)
    wait_until(lambda: len(client.event_buffer.shutdown._cond._waiters) == 1)  # type: ignore[attr-defined]
    client.track(event="dropped", company=COMPANY)
    client.shutdown()
    assert flags_env("GET", "/events") == []  # never sent
    flushed = make()
    flushed.track(event="kept", company=COMPANY)
    flushed.event_buffer._flush()
    flushed.shutdown()
    assert [e["event"] for e in flags_env("GET", "/events")] == ["kept"]


# -- Creating and updating companies --------------------------------------------------------


def test_creating_and_updating_companies(client: Schematic) -> None:
    response = client.companies.upsert_company(
        keys={"id": "your-company-id"},
        name="Acme Widgets, Inc.",
        traits={
            "city": "Atlanta",
            "high_score": 25,
            "is_active": True,  # the seed writes true
        },
    )
    company = response.data
    assert company.name == "Acme Widgets, Inc." and company.user_count == 0
    assert company.traits == {"city": "Atlanta", "high_score": 25, "is_active": True}
    assert [(k.key, k.value) for k in company.keys] == [("id", "your-company-id")]
    traits = {t.definition.display_name: t.value for t in company.entity_traits if t.definition}
    assert traits == {"city": "Atlanta", "high_score": "25", "is_active": "true"}
    # the same keys again: the same company, updated
    again = client.companies.upsert_company(keys=COMPANY, traits={"high_score": 30}).data
    assert again.id == company.id and again.name == "Acme Widgets, Inc."
    assert again.traits == {"city": "Atlanta", "high_score": 30, "is_active": True}
    assert client.companies.get_company(company.id).data.traits == again.traits


# -- Creating and updating users ------------------------------------------------------------


def test_creating_and_updating_users(client: Schematic) -> None:
    response = client.companies.upsert_user(
        keys={
            "email": "wcoyote@acme.net",
            "user_id": "your-user-id",
        },
        name="Wile E. Coyote",
        traits={
            "city": "Atlanta",
            "high_score": 25,
            "is_active": True,
        },
        company={"id": "your-company-id"},
    )
    user = response.data
    assert user.name == "Wile E. Coyote"
    assert user.traits == {"city": "Atlanta", "high_score": 25, "is_active": True}
    (member,) = user.company_memberships
    company = client.companies.lookup_company(keys=COMPANY).data
    assert member.company_id == company.id and company.user_count == 1
    again = client.companies.upsert_user(keys=USER, company={}, name="Wile").data
    assert again.id == user.id and again.name == "Wile" and again.traits == user.traits
    assert client.companies.get_user(user.id).data.name == "Wile"


# -- Checking flags -------------------------------------------------------------------------


def test_checking_flags(client: Schematic, flags_env: FlagsEnv) -> None:
    rule = {
        "value": True,
        "conditions": [
            {
                "condition_type": "trait",
                "trait_entity": "user",
                "trait_key": "role",
                "operator": "eq",
                "trait_value": "admin",
            }
        ],
    }
    flags_env("POST", "/flags", 201, json={"key": "some-flag-key", "rules": [rule]})
    client.companies.upsert_user(keys=USER, company=COMPANY, traits={"role": "admin"})
    assert (
        client.check_flag(
            "some-flag-key",
            company={"id": "your-company-id"},
            user={"user_id": "your-user-id"},
        )
        is True
    )
    assert client.check_flag("some-flag-key", company=COMPANY) is False  # no user: no match
    assert client.check_flag("some-flag-key") is False  # no keys: the flag's default


# -- Advanced: Flag Check Options -----------------------------------------------------------


def _flag(flags_env: FlagsEnv, value: bool) -> None:
    flags_env("PATCH", "/flags/some-flag-key", json={"default_value": value})


def test_flag_check_options_cache_size_and_ttl(
    make: Callable[..., Schematic], flags_env: FlagsEnv
) -> None:
    flags_env("POST", "/flags", 201, json={"key": "some-flag-key", "default_value": True})
    cache_size = 100
    cache_ttl = 1000  # in milliseconds
    client = make(cache_providers=[LocalCache[bool](cache_size, cache_ttl)])
    started = time.monotonic()
    assert client.check_flag("some-flag-key") is True
    _flag(flags_env, False)
    if time.monotonic() - started < 0.9:  # (a loaded machine may take longer to get here)
        assert client.check_flag("some-flag-key") is True  # cached
    wait_until(lambda: client.check_flag("some-flag-key") is False)
    assert time.monotonic() - started >= 1.0  # only once the entry expired


def test_flag_check_options_disable_caching(
    make: Callable[..., Schematic], flags_env: FlagsEnv
) -> None:
    flags_env("POST", "/flags", 201, json={"key": "some-flag-key", "default_value": True})
    # as the seed says: cache_providers=[] ... but the package replaces an empty list with its
    # default cache (1000 entries, 5 s): checks are still cached
    client = make(cache_providers=[])
    assert client.check_flag("some-flag-key") is True
    _flag(flags_env, False)
    assert client.check_flag("some-flag-key") is True  # still the cached value
    # the workaround: a cache that keeps nothing
    uncached = make(cache_providers=[LocalCache[bool](0, 0)])
    assert uncached.check_flag("some-flag-key") is False
    _flag(flags_env, True)
    assert uncached.check_flag("some-flag-key") is True  # every check asks the server


def test_flag_check_options_flag_defaults(
    make: Callable[..., Schematic], url: str, flags_env: FlagsEnv
) -> None:
    # a service interruption: nobody answers at the address
    config = SchematicConfig(
        base_url=_closed_port_url(), flag_defaults={"some-flag-key": True}, cache_providers=[]
    )
    down = Schematic("mp_" + "x" * 40, config)
    try:
        assert down.check_flag("some-flag-key") is True
        assert down.check_flag("another-flag") is False  # no default: False
    finally:
        _close(down)
    # the server refuses the key: the default too
    refused = Schematic("mp_" + "x" * 40, SchematicConfig(base_url=url, flag_defaults={"x": True}))
    try:
        assert refused.check_flag("x") is True
    finally:
        _close(refused)
    # while the server answers, its value wins over the default
    flags_env("POST", "/flags", 201, json={"key": "some-flag-key", "default_value": False})
    assert make(flag_defaults={"some-flag-key": True}).check_flag("some-flag-key") is False


# -- Offline Mode ---------------------------------------------------------------------------


def test_offline_mode() -> None:
    config = SchematicConfig(offline=True, base_url=_closed_port_url())
    client = Schematic("", config)
    try:
        assert client.check_flag("some-flag-key") is False
        client.identify(keys={"user_id": "u"})  # nothing is sent
        client.track(event="e", company={"id": "c"})
        assert client.event_buffer.events == []
    finally:
        _close(client)


def test_offline_mode_with_flag_defaults() -> None:
    config = SchematicConfig(
        flag_defaults={"some-flag-key": True},
        offline=True,
    )
    client = Schematic("", config)
    try:
        assert client.check_flag("some-flag-key") is True  # Returns True
    finally:
        _close(client)


# -- Timeouts -------------------------------------------------------------------------------


def test_timeouts_client_level(key: str, url: str, stalled: str) -> None:
    with pytest.raises(TypeError):  # the seed's Schematic(timeout=20.0): no such argument
        Schematic(timeout=20.0)  # type: ignore[call-arg]
    client = Schematic(key, SchematicConfig(base_url=url, timeout=20.0))  # All timeouts 20 s
    slow = Schematic(key, SchematicConfig(base_url=stalled, timeout=0.3, cache_providers=[]))
    try:
        assert client._client_wrapper.get_timeout() == 20.0
        assert client.companies.count_companies().data.count == 0
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            slow.companies.get_company("comp_x")
        assert slow.check_flag("x") is False  # a check that times out: its default
        assert time.monotonic() - started < 5
    finally:
        _close(client)
        _close(slow)


def test_timeouts_per_request(client: Schematic, key: str, stalled: str) -> None:
    company_id = client.companies.upsert_company(keys=COMPANY).data.id
    # Override timeout for a specific method (the seed's "{timeout_in_seconds=20.0}" is no
    # Python: request_options is a dict)
    found = client.companies.get_company(company_id, request_options={"timeout_in_seconds": 20})
    assert found.data.id == company_id
    slow = Schematic(key, SchematicConfig(base_url=stalled))  # the default: 60 s
    try:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            slow.companies.get_company(company_id, request_options={"timeout_in_seconds": 0.3})
        assert time.monotonic() - started < 5
    finally:
        _close(slow)


# -- Retries --------------------------------------------------------------------------------


class _Interrupted(httpx.HTTPTransport):
    """A network path that answers 503 to the first ``failures`` requests, then lets
    requests through to the server (a service interruption, seen from the client)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.sent: list[str] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.sent.append(request.url.path)
            failing = len(self.sent) <= self.failures
        if failing:
            return httpx.Response(503, json={"error": "unavailable"}, request=request)
        return super().handle_request(request)


def test_retries(key: str, url: str) -> None:
    transport = _Interrupted(failures=0)
    http = httpx.Client(transport=transport, timeout=30)
    client = Schematic(key, SchematicConfig(base_url=url, httpx_client=http))
    try:
        company_id = client.companies.upsert_company(keys=COMPANY).data.id
        transport.failures, transport.sent = 1, []
        # Override retries for a specific method (the seed's "{max_retries=1}" is no Python)
        found = client.companies.get_company(company_id, request_options={"max_retries": 1})
        assert found.data.id == company_id and len(transport.sent) == 2  # retried once
        transport.failures, transport.sent = 2, []
        with pytest.raises(schematic.core.ApiError) as failed:
            client.companies.get_company(company_id, request_options={"max_retries": 1})
        assert failed.value.status_code == 503 and len(transport.sent) == 2
        transport.failures, transport.sent = 1, []
        with pytest.raises(TypeError):  # the package's: request_options without max_retries
            client.companies.get_company(company_id, request_options={"timeout_in_seconds": 9})
        transport.failures, transport.sent = 0, []
        with pytest.raises(NotFoundError):  # a 404 is not retried
            client.companies.get_company("comp_none", request_options={"max_retries": 2})
        assert len(transport.sent) == 1
    finally:
        _close(client)
        http.close()


# -- Custom HTTP client ---------------------------------------------------------------------


def test_custom_http_client(key: str, url: str) -> None:
    with pytest.raises(TypeError):  # the seed's Schematic(http_client=…): no such argument
        Schematic(http_client=httpx.Client())  # type: ignore[call-arg]
    with pytest.raises(TypeError):  # httpx 0.28 removed ``proxies`` (``proxy`` replaces it)
        httpx.Client(proxies="http://my.test.proxy.example.com")  # type: ignore[call-arg]
    http = httpx.Client(transport=httpx.HTTPTransport(local_address="0.0.0.0"), timeout=30)
    client = Schematic(key, SchematicConfig(base_url=url, httpx_client=http))
    try:
        company = client.companies.upsert_company(keys=COMPANY, name="Acme").data
        assert client.companies.get_company(company.id).data.name == "Acme"
    finally:
        _close(client)
        http.close()
