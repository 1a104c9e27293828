"""Every error code the console raises is documented: in docs/console.md's table of its
own codes, or in docs/api.md's error codes (the API's, which its pages show too)."""

from __future__ import annotations

from pathlib import Path

from _codes import raised_codes

ROOT = Path(__file__).resolve().parents[2]


def test_every_console_error_code_is_documented() -> None:
    codes = raised_codes(ROOT / "src" / "millpond" / "server" / "console")
    assert {"row_changed", "csrf_failed", "confirmation_failed"} <= codes
    api = (ROOT / "docs" / "api.md").read_text()
    console = (ROOT / "docs" / "console.md").read_text()
    documented = api[api.index("## Error codes") :] + console[console.index("## Errors") :]
    missing = sorted(code for code in codes if f"`{code}`" not in documented)
    assert not missing
