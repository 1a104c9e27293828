"""The console's pages: how long the server takes to answer each, on the seeded demo.

Starts ``millpond up`` in a subprocess, seeds it as ``scripts/console_screenshots.py``
does (a shop database with a table, a module, keys, flags, an export), logs in to the
console and GETs each page of the documented ones (``PAGES`` of that script, with the
SQL editor's and import's POSTs left out: those run a query or read an upload)
``--rounds`` times, alternating with the anchor: the API call that fetches the same
page's main data as JSON (e.g. ``GET /v1/databases`` for the databases list). The time
is the whole request as the client sees it on loopback: the server's share, but for
the socket.

Prints p50/p99 per page and its anchor, and last the ratio of the slowest page's p50 to
the issue's bar (100 ms: < 1 meets it).

    python benchmarks/console_pages.py [--rounds 50]
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from _harness import percentile, running_server

ROOT = Path(__file__).resolve().parent.parent
BAR_MS = 100.0


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "console_screenshots", ROOT / "scripts" / "console_screenshots.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _anchors(demo: Any) -> dict[str, str]:
    db, env = demo.database, demo.env
    return {
        "databases": "/v1/databases",
        "database": f"/v1/databases/{db}",
        "tables": f"/v1/databases/{db}",
        "table": f"/v1/databases/{db}",
        "keys": "/v1/keys",
        "module": f"/v1/databases/{db}/module",
        "job": "/v1/exports",
        "realtime": f"/v1/databases/{db}",
        "flags": f"/v1/flags/environments/{env}/flags",
        "flag": f"/v1/flags/environments/{env}/flags/new-checkout",
        "audit": f"/v1/flags/environments/{env}/audit",
    }


def _login(http: httpx.Client, key: str) -> None:
    form = http.get("/console/login").text
    token = re.search(r'name="csrf" value="([^"]*)"', form)
    assert token is not None
    answer = http.post("/console/login", data={"api_key": key, "csrf": token.group(1)})
    assert answer.status_code == 303, answer.text


def _time(http: httpx.Client, path: str, **kw: object) -> float:
    started = time.perf_counter()
    answer = http.get(path, **kw)  # type: ignore[arg-type]
    took = (time.perf_counter() - started) * 1000
    assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="requests per page")
    args = parser.parse_args()
    shots = _script()
    with running_server() as server:
        demo = shots.seed(server.url, server.key)
        anchors = _anchors(demo)
        pages = [s for s in shots.PAGES if s.name in anchors]
        results: dict[str, tuple[list[float], list[float]]] = {}
        with httpx.Client(base_url=server.url, timeout=60) as console, server.client() as api:
            api.headers["Authorization"] = f"Bearer {demo.key}"
            _login(console, demo.key)
            for shot in pages:
                path = demo.url(shot).removeprefix(server.url)
                _time(console, path)  # warm: templates compiled, pools filled
                _time(api, anchors[shot.name])
                mine, anchor = [], []
                for _ in range(args.rounds):
                    mine.append(_time(console, path))
                    anchor.append(_time(api, anchors[shot.name]))
                results[shot.name] = (mine, anchor)
    print(f"{'page':>10}  {'p50':>7}  {'p99':>7}   API anchor p50 / p99")
    for name, (mine, anchor) in results.items():
        print(
            f"{name:>10}  {statistics.median(mine):6.1f}  {percentile(mine, 0.99):6.1f} ms"
            f"  {statistics.median(anchor):6.1f} / {percentile(anchor, 0.99):6.1f} ms"
        )
    slowest = max(results, key=lambda n: statistics.median(results[n][0]))
    worst = statistics.median(results[slowest][0])
    print(f"ratio slowest page p50 ({slowest}) vs the 100 ms bar: {worst / BAR_MS:.2f}")


if __name__ == "__main__":
    main()
