"""Route for POST /v1/query (thin: see service.py)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ...models import QueryRequest, QueryResult
from ..deps import Caller, Svc
from .adapters import dumps

router = APIRouter(prefix="/v1")


@router.post("/query", response_model=QueryResult)
async def query(body: QueryRequest, svc: Svc, who: Caller) -> Response:
    result = await svc.query.run(who, body)
    return Response(dumps(result), media_type="application/json")
