"""Shell sessions for the tests that run documented commands (``test_readme.py``,
``test_docs_commands.py``)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def run_script(
    lines: list[str], env: dict[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``lines`` as one ``bash`` session (no rc files), its output captured."""
    return subprocess.run(
        ["bash", "--norc", "-c", "\n".join(lines)],
        env=env,
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
        timeout=timeout,
    )
