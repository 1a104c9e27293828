"""Route for POST /v1/query (thin: see service.py)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.requests import Request

from ...models import QueryRequest, QueryResult
from ..deps import Caller, Svc, principal, services
from ..routing import NamedRoute, json_body, model_body
from .adapters import dumps

router = APIRouter(prefix="/v1")


# served by ``query_route`` (below), put before every other route; this one documents it
@router.post("/query", response_model=QueryResult)
async def query(body: QueryRequest, svc: Svc, who: Caller) -> Response:
    result = await svc.query.run(who, body)
    return Response(dumps(result), media_type="application/json")


async def query_fast(request: Request) -> Response:
    """``query`` as a plain Starlette endpoint (see ``server/routing.py``): served first."""
    who = await principal(request)
    body = model_body(await json_body(request), QueryRequest)
    result = await services(request).query.run(who, body)
    return Response(dumps(result), media_type="application/json")


query_route = NamedRoute("/v1/query", query_fast, methods=["POST"])
