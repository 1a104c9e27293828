"""``GET /docs`` and its files (``/docs/assets/…``): Swagger UI from the server itself.

Nothing loads from elsewhere (the page worked only online when its files came from a
CDN); the page has no inline script, so its CSP (``headers.DOCS_CSP``) allows scripts from
the server alone."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from ..static import StaticFiles

router = APIRouter(include_in_schema=False)

_ASSETS = StaticFiles(
    Path(__file__).parent / "static",
    {
        "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
        "swagger-ui.css": "text/css; charset=utf-8",
        "init.js": "text/javascript; charset=utf-8",
    },
    "docs",
    max_age=86400,
)
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>millpond API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/init.js"></script>
</body>
</html>
"""


@router.get("/docs", response_class=HTMLResponse)
async def docs() -> HTMLResponse:
    return HTMLResponse(PAGE)


@router.get("/docs/assets/{name}")
async def asset(name: str) -> Response:
    return _ASSETS.response(name)
