"""The anchor of ``http_query_load.py``: the least an HTTP-JSON Postgres query API in Python
does for ``POST /v1/query`` — Starlette on uvicorn, a bearer key looked up in a dict,
psycopg 3 from a pool of 10, one transaction per request, the same JSON shape as
millpond's answer. No session reset between callers, no limits, no audit: the physical
limit of such an API on this machine.

Run by the benchmark: ``MINIMAL_DSN=… MINIMAL_KEY=… uvicorn _minimal_query:app``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

KEYS = {os.environ.get("MINIMAL_KEY", ""): "admin"}
POOL = AsyncConnectionPool(os.environ.get("MINIMAL_DSN", ""), min_size=10, max_size=10, open=False)
TYPES: dict[int, str] = {}


def _value(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


async def query(request: Request) -> Response:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or key not in KEYS:
        return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)
    body = json.loads(await request.body())
    started = time.perf_counter()
    async with POOL.connection() as conn, conn.transaction():
        cur = await conn.execute(body["sql"].encode())
        rows = await cur.fetchall() if cur.description else []
        columns = [
            {"name": c.name, "type": TYPES.get(c.type_code, str(c.type_code))}
            for c in cur.description or ()
        ]
        command = cur.statusmessage
    answer = {
        "columns": columns,
        "data": [[_value(v) for v in row] for row in rows],
        "row_count": len(rows),
        "truncated": False,
        "command": command,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    return Response(json.dumps(answer, separators=(",", ":")), media_type="application/json")


@asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    await POOL.open(wait=True)
    async with POOL.connection() as conn:
        cur = await conn.execute("SELECT oid::int, typname FROM pg_type")
        TYPES.update(dict(await cur.fetchall()))
    yield
    await POOL.close()


app = Starlette(routes=[Route("/v1/query", query, methods=["POST"])], lifespan=lifespan)
