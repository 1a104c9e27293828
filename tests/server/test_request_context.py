"""The request id a task carries: a task started while a request is served inherits its
id (its work is the request's); a ``detached`` one, which outlives the request (a
database's scheduler, a worker's stderr reader), carries none."""

from __future__ import annotations

import asyncio

from millpond.server.observability.context import current_request_id, detached, request_id


async def _seen() -> str | None:
    await asyncio.sleep(0)
    return current_request_id()


def test_detached_tasks_carry_no_request_id() -> None:
    async def serve() -> tuple[str | None, str | None, str | None]:
        token = request_id.set("req-7")
        try:
            inherited = asyncio.create_task(_seen())
            alone = detached(_seen(), name="background")
            assert alone.get_name() == "background"
            return await inherited, await alone, current_request_id()
        finally:
            request_id.reset(token)

    assert asyncio.run(serve()) == ("req-7", None, "req-7")  # the request keeps its own
