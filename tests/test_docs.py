"""Docs derived from code stay current: every setting and every CLI command is documented
(regenerate with `python scripts/gen_docs.py`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from millpond.server.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_generated_docs_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for name, field in Settings.model_fields.items():
        assert f"`MILLPOND_{name.upper()}`" in text
        assert field.description, f"setting {name} has no description"
