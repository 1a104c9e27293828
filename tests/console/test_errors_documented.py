"""Every error code the console raises is documented: in docs/console.md's table of its
own codes, or in docs/api.md's error codes (the API's, which its pages show too)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_RAISED = re.compile(
    r"(?:ServiceError\(\s*\d+,\s*|not_found\(\s*|conflict\(\s*|invalid\(\s*)\"([a-z_]+)\""
    r"|forbidden\([^)]*?,\s*\"([a-z_]+)\"\s*\)",
    re.S,
)


def test_every_console_error_code_is_documented() -> None:
    codes: set[str] = set()
    for path in (ROOT / "src" / "millpond" / "server" / "console").glob("*.py"):
        for match in _RAISED.finditer(path.read_text()):
            codes.add(match.group(1) or match.group(2))
    assert {"row_changed", "csrf_failed", "confirmation_failed"} <= codes
    api = (ROOT / "docs" / "api.md").read_text()
    console = (ROOT / "docs" / "console.md").read_text()
    documented = api[api.index("## Error codes") :] + console[console.index("## Errors") :]
    missing = sorted(code for code in codes if f"`{code}`" not in documented)
    assert not missing
