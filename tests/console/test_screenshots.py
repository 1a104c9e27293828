"""docs/console.md shows every page ``scripts/console_screenshots.py`` shoots (which
regenerates them); that each still renders on the script's seeded demo is checked by
test_accessibility.py, which opens every one of them, light and dark."""

from __future__ import annotations

import re
from pathlib import Path

from console._helpers import screenshots_script

ROOT = Path(__file__).resolve().parents[2]


def test_the_doc_shows_every_page() -> None:
    shots = screenshots_script()
    doc = (ROOT / "docs" / "console.md").read_text()
    shown = set(re.findall(r"\]\(console/([a-z-]+)\.png\)", doc))
    assert shown == {s.name for s in shots.PAGES}
    for name in shown:
        assert (ROOT / "docs" / "console" / f"{name}.png").is_file(), name
