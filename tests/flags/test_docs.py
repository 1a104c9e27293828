"""Every error code the flags service raises is documented in docs/api.md."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_RAISED = re.compile(
    r"(?:ServiceError\(\s*\d+,\s*|not_found\(\s*|conflict\(\s*|invalid\(\s*)\"([a-z_]+)\""
    r"|forbidden\([^)]*?,\s*\"([a-z_]+)\"\s*\)",
    re.S,
)


def test_every_flags_error_code_is_documented() -> None:
    codes: set[str] = set()
    for path in (ROOT / "src" / "millpond" / "server" / "flags").glob("*.py"):
        for match in _RAISED.finditer(path.read_text()):
            codes.add(match.group(1) or match.group(2))
    codes |= {"read_only_key", "unauthorized", "company_not_found", "user_not_found"}
    assert {"flag_not_found", "environment_forbidden", "key_conflict"} <= codes
    docs = (ROOT / "docs" / "api.md").read_text()
    table = docs[docs.index("## Error codes") :]
    missing = sorted(code for code in codes if f"`{code}`" not in table)
    assert not missing
