"""Waiting on conditions, never on sleeps: the tests' one poll loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(
    check: Callable[[], object],
    timeout: float = 15,
    what: str = "the condition",
    *,
    step: Callable[[], object] | None = None,
) -> float:
    """Poll ``check`` until it is true (calling ``step`` between tries, else sleeping
    50 ms); the seconds it took. AssertionError naming ``what`` after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        if step is not None:
            step()
        else:
            time.sleep(0.05)
    return time.monotonic() - started


def eventually(probe: Callable[[], Any], timeout: float = 20) -> Any:
    """The first truthy answer of ``probe`` polled for up to ``timeout`` seconds, else
    its last answer (for the caller's assertion to show)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)
