"""``GET /metrics``: the Prometheus text format, for a server admin's key or the
configured scrape token (``metrics_token``)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..accounts.service import authenticate, require_admin
from ..deps import Services, services
from ..errors import ServiceError
from .metrics import Metrics

router = APIRouter()


async def _allowed(request: Request, svc: Services) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ServiceError(
            401, "unauthorized", "missing token: send 'Authorization: Bearer <admin key or token>'"
        )
    expected = svc.settings.metrics_token
    if expected is not None and hmac.compare_digest(token.encode(), expected.encode()):
        return
    who = await authenticate(svc.store, token)
    if who is None:
        raise ServiceError(401, "unauthorized", "unknown, revoked or expired key or token")
    require_admin(who)  # a user's or a service account's key: 403 admin_required


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    svc = services(request)
    await _allowed(request, svc)
    metrics = svc.extra["metrics"]
    assert isinstance(metrics, Metrics)
    await metrics.refresh()  # the control database's figures, read at most once a second
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
