"""The façade: exactly the public names, nothing of the server imported, and the sync and
async clients with one surface."""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import get_type_hints

import millpond
from millpond import AsyncMillpond, Millpond, errors


def test_public_names() -> None:
    assert millpond.__all__ == [
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
    for name in millpond.__all__:
        assert hasattr(millpond, name), name


def test_every_error_is_exported_and_is_the_same_class() -> None:
    exported = set(millpond.__all__)
    for name in errors.__all__:
        if name != "error_for_status":
            assert name in exported
            assert getattr(millpond, name) is getattr(errors, name)


def test_version_and_models() -> None:
    from millpond._version import __version__

    assert millpond.__version__ == __version__
    assert millpond.models.Database.__name__ == "Database"


def test_import_millpond_leaves_the_server_alone() -> None:
    code = (
        "import sys, millpond\n"
        "mp = millpond.Millpond('mp_x')\n"
        "mp.close()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'psycopg', 'psycopg_pool', 'uvicorn', 'starlette', 'pgserver', 'typer')"
        " or m.split('.')[:2] in (['millpond', 'server'], ['millpond', 'cli']))\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == ""


def _surface(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(value)
        for name, value in vars(cls).items()
        if callable(value) and (not name.startswith("_") or name == "__init__")
    }


def _normalise(sig: inspect.Signature) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def test_sync_and_async_have_one_surface() -> None:
    pairs = [(Millpond, AsyncMillpond)]
    sync_hints, async_hints = get_type_hints(Millpond), get_type_hints(AsyncMillpond)
    assert (
        sync_hints.keys()
        == async_hints.keys()
        == {
            "clusters",
            "companies",
            "databases",
            "exports",
            "flags",
            "imports",
            "keys",
            "modules",
            "service_accounts",
            "users",
        }
    )
    pairs += [(sync_hints[name], async_hints[name]) for name in sync_hints]
    for sync_cls, async_cls in pairs:
        sync, async_ = _surface(sync_cls), _surface(async_cls)
        assert set(sync) - {"close"} == set(async_) - {"aclose"}, sync_cls
        for name, sig in async_.items():
            if name == "aclose":
                continue
            assert _normalise(sig) == _normalise(sync[name]), (sync_cls, name)
            if name.startswith("iter"):  # lists to the end: `async for` / `for`, page by page
                assert inspect.isasyncgenfunction(getattr(async_cls, name)), (async_cls, name)
                assert inspect.isgeneratorfunction(getattr(sync_cls, name)), (sync_cls, name)
                continue
            is_coroutine = inspect.iscoroutinefunction(getattr(async_cls, name))
            assert is_coroutine == (name not in NOT_COROUTINES), (async_cls, name)
            assert not inspect.iscoroutinefunction(getattr(sync_cls, name))


NOT_COROUTINES = {
    "__init__",
    "flag_context",
    "pooled_connection",
    "pooled_cursor",
    "connection_string",
}
"""Methods that are plain functions on the async client too: they return an async context
manager (``async with amp.flag_context(...)``), or a string."""

NOT_HTTP = {
    "identify",
    "track",
    "flush",
    "flag_context",
    "get_connection",
    "pooled_connection",
    "pooled_cursor",
    "connection_string",
}
"""Client methods that make no request of their own: events are buffered (``flush`` takes a
``timeout`` of its own, for waiting)."""


def test_every_api_method_takes_timeout_and_max_retries() -> None:
    classes = [Millpond, AsyncMillpond, *get_type_hints(Millpond).values()]
    classes += get_type_hints(AsyncMillpond).values()
    for cls in classes:
        for name, sig in _surface(cls).items():
            if name in ("__init__", "close", "aclose") or name in NOT_HTTP:
                continue
            for param in ("timeout", "max_retries"):
                assert sig.parameters[param].kind is inspect.Parameter.KEYWORD_ONLY, (cls, name)
                assert sig.parameters[param].default is None
