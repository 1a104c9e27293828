"""``millpond up`` in a subprocess, for the tests that start the real command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from millpond.server.testing import free_port


def millpond_up(
    data_dir: Path,
    port: int,
    *args: str,
    env: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
    **popen: Any,
) -> subprocess.Popen[str]:
    """``millpond up --port PORT --data-dir DATA_DIR ARGS…``, its output (stdout and
    stderr together) readable as text unless ``popen`` says otherwise; the environment
    is this one, less ``drop``, plus a free gateway port (never the default 5433) and
    ``env``."""
    environ = {k: v for k, v in os.environ.items() if k not in drop}
    environ.update({"MILLPOND_GATEWAY_PORT": str(free_port()), **(env or {})})
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    options.update(popen)
    command = [sys.executable, "-m", "millpond.cli", "up", "--port", str(port)]
    return subprocess.Popen(
        [*command, "--data-dir", str(data_dir), *args], text=True, env=environ, **options
    )
