"""The client against a real HTTP server: retries, timeouts, error mapping, headers,
configuration — sync and async (the ``run`` fixture runs each test both ways)."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from typing import Any

import httpx
import pytest

import millpond
from millpond import (
    ApiError,
    AsyncMillpond,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    ConnectError,
    ForbiddenError,
    Millpond,
    MillpondError,
    NotFoundError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TimeoutError,
    UnauthorizedError,
    UnprocessableEntityError,
)
from millpond.models import Health

from .conftest import FAST, KEY, FakeServer, Reply, Run

HEALTH = {"status": "ok", "version": "0.1.0", "postgres": {"ok": True, "mode": "embedded"}}
QUERY = {"columns": [], "data": [], "row_count": 0, "elapsed_ms": 0.1}


def envelope(code: str, message: str = "nope", details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


# -- retries -----------------------------------------------------------------------------


def test_503_then_200_succeeds_after_exactly_two_requests(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(503, envelope("postgres_unavailable")), Reply(200, HEALTH))
    health = run(lambda mp: mp.health())
    assert isinstance(health, Health)
    assert health.postgres.mode == "embedded"
    assert len(fake.requests) == 2


def test_post_retried_on_5xx_and_408(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(502), Reply(408), Reply(200, QUERY))
    result = run(lambda mp: mp.query("a/b", "SELECT 1"))
    assert result.row_count == 0
    assert [r.method for r in fake.requests] == ["POST"] * 3
    assert fake.requests[0].json == fake.requests[2].json == {"database": "a/b", "sql": "SELECT 1"}


def test_429_retry_after_seconds_is_honoured(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(429, envelope("rate_limited"), {"Retry-After": "1"}), Reply(200, HEALTH))
    started = time.monotonic()
    run(lambda mp: mp.health())  # the policy's own backoff would wait ~1 ms
    assert time.monotonic() - started >= 0.95
    assert len(fake.requests) == 2


def test_429_retry_after_http_date_is_honoured(fake: FakeServer) -> None:
    fake.reply(
        Reply(429, None, {"Retry-After": formatdate(time.time() + 2, usegmt=True)}),
        Reply(200, HEALTH),
    )
    started = time.monotonic()
    with Millpond(KEY, fake.url, retry_policy=FAST) as mp:
        mp.health()
    assert time.monotonic() - started >= 0.9  # the date has a one-second resolution
    assert len(fake.requests) == 2


def test_retry_after_is_capped_by_the_policy(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(503, None, {"Retry-After": "3600"}), Reply(200, HEALTH))
    policy = RetryPolicy(base=0.001, cap=0.01, max_retry_after=0.05)
    started = time.monotonic()
    run(lambda mp: mp.health(), retry_policy=policy)
    assert time.monotonic() - started < 2
    assert len(fake.requests) == 2


def test_persistent_5xx_raises_server_error_after_max_retries(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(500, envelope("internal_error", "boom")))
    with pytest.raises(ServerError) as err:
        run(lambda mp: mp.health())
    assert err.value.status_code == 500
    assert err.value.code == "internal_error"
    assert len(fake.requests) == 3  # max_retries=2 by default


def test_persistent_429_raises_rate_limit_error(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(429, envelope("rate_limited"), {"Retry-After": "0"}))
    with pytest.raises(RateLimitError):
        run(lambda mp: mp.health(), max_retries=1)
    assert len(fake.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_4xx_never_retried(run: Run, fake: FakeServer, status: int) -> None:
    fake.reply(Reply(status, envelope("some_code")), Reply(200, HEALTH))
    with pytest.raises(ApiError) as err:
        run(lambda mp: mp.health())
    assert err.value.status_code == status
    assert len(fake.requests) == 1


def test_max_retries_zero_per_request(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(503), Reply(200, HEALTH))
    with pytest.raises(ServerError):
        run(lambda mp: mp.health(max_retries=0))
    assert len(fake.requests) == 1


def test_max_retries_per_request_raises_the_client_setting(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(503), Reply(503), Reply(503), Reply(503), Reply(200, HEALTH))
    run(lambda mp: mp.health(max_retries=4))
    assert len(fake.requests) == 5


def test_max_retries_zero_on_the_client(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(503), Reply(200, HEALTH))
    with pytest.raises(ServerError):
        run(lambda mp: mp.health(), max_retries=0)
    assert len(fake.requests) == 1


def test_negative_max_retries_refused(run: Run) -> None:
    with pytest.raises(ValueError):
        run(lambda mp: None, max_retries=-1)
    with pytest.raises(ValueError):
        run(lambda mp: mp.health(max_retries=-1))


# -- transport failures --------------------------------------------------------------------


def test_connect_error_after_retries_sync(closed_port: int) -> None:
    sent: list[httpx.Request] = []
    with httpx.Client(event_hooks={"request": [sent.append]}) as http:
        mp = Millpond(KEY, f"http://127.0.0.1:{closed_port}", retry_policy=FAST, http_client=http)
        with mp, pytest.raises(ConnectError) as err:
            mp.health()
        assert len(sent) == 3
        assert not http.is_closed  # ours to close, not the SDK's
        assert isinstance(err.value.__cause__, httpx.ConnectError)
        assert "after 3 attempts" in str(err.value)


def test_connect_error_after_retries_async(closed_port: int) -> None:
    sent: list[httpx.Request] = []

    async def hook(request: httpx.Request) -> None:
        sent.append(request)

    async def main() -> None:
        async with httpx.AsyncClient(event_hooks={"request": [hook]}) as http:
            url = f"http://127.0.0.1:{closed_port}"
            async with AsyncMillpond(KEY, url, retry_policy=FAST, http_client=http) as mp:
                with pytest.raises(ConnectError):
                    await mp.databases.create("x", max_retries=4)
            assert not http.is_closed
        assert len(sent) == 5  # connect errors are retried even for POST

    asyncio.run(main())


def test_connect_error_is_a_transport_error(run: Run, closed_port: int) -> None:
    with pytest.raises(millpond.TransportError):
        run(lambda mp: mp.health(max_retries=0), base_url=f"http://127.0.0.1:{closed_port}")


def test_read_timeout_retried_for_get(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(200, HEALTH, delay=0.5))
    with pytest.raises(TimeoutError) as err:
        run(lambda mp: mp.health(), timeout=0.1)
    assert fake.count_requests(3) == 3
    assert isinstance(err.value.__cause__, httpx.ReadTimeout)


def test_read_timeout_not_retried_for_post(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(200, QUERY, delay=0.5))
    with pytest.raises(TimeoutError):
        run(lambda mp: mp.query("a/b", "INSERT INTO t VALUES (1)", timeout=0.1))
    time.sleep(0.2)  # a wrong retry would arrive by now
    assert fake.count_requests(1) == 1  # it may have run: never twice


def test_timeout_per_request_overrides_the_client(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(200, HEALTH, delay=0.3))
    assert run(lambda mp: mp.health(timeout=5), timeout=0.05).status == "ok"
    assert len(fake.requests) == 1
    fake.requests.clear()
    with pytest.raises(TimeoutError):
        run(lambda mp: mp.health(timeout=httpx.Timeout(0.05), max_retries=0))
    assert len(fake.requests) == 1


# -- error mapping -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls", "code"),
    [
        (400, BadRequestError, "sql_error"),
        (401, UnauthorizedError, "unauthorized"),
        (403, ForbiddenError, "read_only_key"),
        (404, NotFoundError, "database_not_found"),
        (405, ApiError, "method_not_allowed"),
        (409, ConflictError, "database_exists"),
        (422, UnprocessableEntityError, "validation_error"),
        (429, RateLimitError, "rate_limited"),
        (500, ServerError, "internal_error"),
        (503, ServerError, "postgres_unavailable"),
    ],
)
def test_errors_map_to_subclasses(
    run: Run, fake: FakeServer, status: int, cls: type[ApiError], code: str
) -> None:
    details = {"sqlstate": "42P01", "position": 15}
    body = envelope(code, "it went wrong", details)
    fake.reply(Reply(status, body))
    with pytest.raises(cls) as err:
        run(lambda mp: mp.query("a/b", "SELECT * FROM nope", max_retries=0))
    e = err.value
    assert type(e) is cls
    assert isinstance(e, MillpondError)
    assert (e.status_code, e.code, e.message) == (status, code, "it went wrong")
    assert e.details == details
    assert e.body == body
    assert str(e) == f"{status} {code}: it went wrong"


def test_error_without_envelope(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"}))
    with pytest.raises(ServerError) as err:
        run(lambda mp: mp.health(max_retries=0))
    assert err.value.code == "http_error"
    assert err.value.body == "<html>Bad Gateway</html>"


def test_error_without_body(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(418))
    with pytest.raises(ApiError) as err:
        run(lambda mp: mp.health())
    assert type(err.value) is ApiError
    assert (err.value.status_code, err.value.body) == (418, None)


@pytest.mark.parametrize("body", [b"not json", {"status": "weird"}, [1, 2]])
def test_unreadable_success_is_a_millpond_error(run: Run, fake: FakeServer, body: Any) -> None:
    fake.reply(Reply(200, body))
    with pytest.raises(MillpondError, match="unexpected answer to GET /v1/health") as err:
        run(lambda mp: mp.health())
    assert not isinstance(err.value, ApiError)
    assert len(fake.requests) == 1


# -- headers and configuration -------------------------------------------------------------


def test_sends_bearer_key_user_agent_and_accept(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(200, HEALTH))
    run(lambda mp: mp.health())
    headers = fake.last.headers
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["user-agent"] == f"millpond-python/{millpond.__version__}"
    assert headers["accept"] == "application/json"


def test_key_and_url_from_the_environment(
    run: Run, fake: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MILLPOND_API_KEY", "mp_from_env")
    monkeypatch.setenv("MILLPOND_URL", fake.url + "/")
    fake.reply(Reply(200, HEALTH))
    run(lambda mp: mp.health(), api_key=None, base_url=None)
    assert fake.last.headers["authorization"] == "Bearer mp_from_env"
    assert fake.last.path == "/v1/health"


def test_arguments_beat_the_environment(
    run: Run, fake: FakeServer, monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    monkeypatch.setenv("MILLPOND_API_KEY", "mp_from_env")
    monkeypatch.setenv("MILLPOND_URL", f"http://127.0.0.1:{closed_port}")
    fake.reply(Reply(200, HEALTH))
    run(lambda mp: mp.health(), api_key="mp_explicit")
    assert fake.last.headers["authorization"] == "Bearer mp_explicit"


def test_base_url_with_a_path_prefix(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(200, HEALTH))
    run(lambda mp: mp.health(), base_url=fake.url + "/millpond/")
    assert fake.last.path == "/millpond/v1/health"


@pytest.mark.parametrize("cls", [Millpond, AsyncMillpond])
def test_default_base_url(cls: type[Millpond], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MILLPOND_URL", raising=False)
    client = cls("mp_x")
    assert client.base_url == "http://127.0.0.1:8000"
    assert repr(client) == f"{cls.__name__}(base_url='http://127.0.0.1:8000')"
    assert "mp_x" not in repr(client)
    if isinstance(client, Millpond):
        client.close()
    else:
        asyncio.run(client.aclose())


@pytest.mark.parametrize("cls", [Millpond, AsyncMillpond])
@pytest.mark.parametrize("env", [None, ""])
def test_missing_key_is_a_configuration_error(
    cls: type[Millpond], env: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if env is None:
        monkeypatch.delenv("MILLPOND_API_KEY", raising=False)
    else:
        monkeypatch.setenv("MILLPOND_API_KEY", env)
    with pytest.raises(ConfigurationError, match="MILLPOND_API_KEY") as err:
        cls()
    assert "api_key=" in str(err.value)


@pytest.mark.parametrize("url", ["ftp://example.com", "127.0.0.1:8000", "localhost"])
def test_bad_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="http://"):
        Millpond("mp_x", url)


def test_sync_context_manager_closes_its_own_client(fake: FakeServer) -> None:
    fake.reply(Reply(200, HEALTH))
    with Millpond(KEY, fake.url) as mp:
        mp.health()
    with pytest.raises(RuntimeError, match="closed"):
        mp.health()


def test_async_context_manager_closes_its_own_client(fake: FakeServer) -> None:
    fake.reply(Reply(200, HEALTH))

    async def main() -> None:
        async with AsyncMillpond(KEY, fake.url) as mp:
            await mp.health()
        with pytest.raises(RuntimeError, match="closed"):
            await mp.health()

    asyncio.run(main())


def test_passed_in_clients_are_used_and_left_open(fake: FakeServer) -> None:
    fake.reply(Reply(200, HEALTH))
    with httpx.Client(headers={"X-Trace": "abc"}) as http:
        with Millpond(KEY, fake.url, http_client=http) as mp:
            mp.health()
        assert not http.is_closed
        assert fake.last.headers["x-trace"] == "abc"
        assert fake.last.headers["authorization"] == f"Bearer {KEY}"

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            async with AsyncMillpond(KEY, fake.url, http_client=http) as mp:
                await mp.health()
            assert not http.is_closed
            mp2 = AsyncMillpond(KEY, fake.url, http_client=http)
            await mp2.aclose()
            assert not http.is_closed

    asyncio.run(main())
    assert len(fake.requests) == 2
