"""Every error code the flags service raises is documented in docs/api.md."""

from __future__ import annotations

from pathlib import Path

from _codes import raised_codes

ROOT = Path(__file__).resolve().parents[2]


def test_every_flags_error_code_is_documented() -> None:
    codes = raised_codes(ROOT / "src" / "millpond" / "server" / "flags")
    codes |= {"read_only_key", "unauthorized", "company_not_found", "user_not_found"}
    assert {"flag_not_found", "environment_forbidden", "key_conflict"} <= codes
    docs = (ROOT / "docs" / "api.md").read_text()
    table = docs[docs.index("## Error codes") :]
    missing = sorted(code for code in codes if f"`{code}`" not in table)
    assert not missing
