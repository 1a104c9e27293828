"""The error codes a part of the server raises, read from its source: for the tests that
check each one is documented."""

from __future__ import annotations

import re
from pathlib import Path

_RAISED = re.compile(
    r"(?:ServiceError\(\s*\d+,\s*|not_found\(\s*|conflict\(\s*|invalid\(\s*)\"([a-z_]+)\""
    r"|forbidden\([^)]*?,\s*\"([a-z_]+)\"\s*\)",
    re.S,
)


def raised_codes(folder: Path) -> set[str]:
    """Every code in a ``ServiceError(status, "code", …)`` or a ``not_found`` /
    ``conflict`` / ``invalid`` / ``forbidden`` helper call in ``folder``'s modules."""
    codes: set[str] = set()
    for path in folder.glob("*.py"):
        for match in _RAISED.finditer(path.read_text()):
            codes.add(match.group(1) or match.group(2))
    return codes
