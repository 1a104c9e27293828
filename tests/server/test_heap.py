"""``millpond up`` freezes its heap once started (``server/app.py: settle_heap``): the
garbage collector's full collections otherwise walk every module and service object, a
pause of every request."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from millpond.cli import app as cli_app
from millpond.server import app as server_app
from millpond.server.app import settle_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_settle_heap_collects_garbage_then_freezes_what_is_alive() -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    dead = weakref.ref(a)
    del a, b
    alive = _Node()
    try:
        settle_heap()
        assert dead() is None  # collected before the freeze, not kept for good
        assert gc.get_freeze_count() > 0
        assert not any(obj is alive for obj in gc.get_objects())  # frozen: not tracked
    finally:
        gc.unfreeze()  # this process goes on starting servers


def test_millpond_up_asks_for_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked: dict[str, Any] = {}

    def create_app(*args: Any, **kwargs: Any) -> object:
        asked.update(kwargs)
        return object()

    monkeypatch.setattr(server_app, "create_app", create_app)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    monkeypatch.setenv("MILLPOND_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli_app, ["up", "--port", "0"])
    assert result.exit_code == 0, result.output
    assert asked.get("freeze_heap") is True
