"""docs/console.md's screenshots: every page the script shoots still renders on a
seeded demo (the script's own seed, on the session's server), and the doc shows each
one (``python scripts/console_screenshots.py`` regenerates them)."""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from pathlib import Path
from types import ModuleType

from playwright.sync_api import Page

from conftest import RunningServer

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "console_screenshots", ROOT / "scripts" / "console_screenshots.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_documented_page_renders(page: Page, server: RunningServer) -> None:
    shots = _script()
    demo = shots.seed(server.url, server.admin_key, f"demo{int(time.time() * 1000) % 10**8}")
    for shot in shots.PAGES:
        if shot.name != "login" and "/console/login" in page.url:
            shots.login(page, demo)
        shots.open_shot(page, demo, shot)  # waits for the page's own content
        assert demo.key not in page.content(), shot.name


def test_the_doc_shows_every_page() -> None:
    shots = _script()
    doc = (ROOT / "docs" / "console.md").read_text()
    shown = set(re.findall(r"\]\(console/([a-z-]+)\.png\)", doc))
    assert shown == {s.name for s in shots.PAGES}
    for name in shown:
        assert (ROOT / "docs" / "console" / f"{name}.png").is_file(), name
