"""The README's examples run, in order, against the real test server, as a new user."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from millpond import Millpond

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples() -> None:
    assert len(python_blocks()) >= 5


def test_readme_python_examples_run(
    base_url: str, make_user: Callable[..., tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = make_user(prefix="readme")
    monkeypatch.setenv("MILLPOND_URL", base_url)
    monkeypatch.setenv("MILLPOND_API_KEY", key)
    namespace: dict[str, object] = {"__name__": "readme"}
    try:
        for number, block in enumerate(python_blocks(), 1):
            code = compile(block, f"README.md python block {number}", "exec")
            exec(code, namespace)
    finally:
        for value in namespace.values():
            if isinstance(value, Millpond):
                value.close()
