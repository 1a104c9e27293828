"""The sync client is generated from the async one; it must be up to date."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "async_to_sync.py"


def test_sync_client_is_generated_from_the_async_one() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_conversion_rules() -> None:
    spec = importlib.util.spec_from_file_location("async_to_sync", SCRIPT)
    assert spec is not None and spec.loader is not None
    async_to_sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(async_to_sync)
    source = (
        "import asyncio\n"
        "class AsyncMillpond:\n"
        '    """Use ``async with AsyncMillpond() as mp: await mp.health()``."""\n'
        "    async def __aenter__(self) -> AsyncMillpond:  # async def stays a comment\n"
        "        async with self._lock:\n"
        "            await asyncio.sleep(await  self.delay())\n"
        "        return self\n"
        "    async def aclose(self) -> None:\n"
        "        await self._http.aclose()  # an async client\n"
    )
    assert async_to_sync.convert(source) == (
        "import time\n"
        "class Millpond:\n"
        '    """Use ``with Millpond() as mp: mp.health()``."""\n'
        "    def __enter__(self) -> Millpond:  # def stays a comment\n"
        "        with self._lock:\n"
        "            time.sleep(self.delay())\n"
        "        return self\n"
        "    def close(self) -> None:\n"
        "        self._http.close()  # an async client\n"
    )
