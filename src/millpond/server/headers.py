"""Security headers on every HTTP response: no content sniffing, no framing (clickjacking),
no referrer (none beyond the console itself), a separate browsing context group; a strict
CSP for the console (which has no inline script or style), a CSP allowing nothing for the
API, and ``Cache-Control: no-store`` on both. Headers a route set itself are kept."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONSOLE_CSP = (
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self';"
    " object-src 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline';"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'"
)
"""The API docs page (Swagger UI, ``apidocs/``): its scripts, styles and requests from the
server alone (Swagger UI sets inline styles and shows data: images)."""

COMMON = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


def _kind(path: str) -> str:
    if path == "/console" or path.startswith("/console/"):
        return "console"
    if path == "/docs" or path.startswith("/docs/"):
        return "docs"
    return "api"


def headers_for(path: str) -> dict[str, str]:
    kind = _kind(path)
    if kind == "console":
        return {
            **COMMON,
            "content-security-policy": CONSOLE_CSP,
            "cache-control": "no-store",
            # not no-referrer: with it a browser sends ``Origin: null`` on the console's own
            # form posts, and the console refuses posts from anywhere but itself
            "referrer-policy": "same-origin",
        }
    if kind == "docs":
        return {**COMMON, "content-security-policy": DOCS_CSP}
    # the API's answers are private (query results, keys just made): never stored by a cache
    return {**COMMON, "content-security-policy": API_CSP, "cache-control": "no-store"}


_RAW = {
    kind: tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers_for(path).items())
    for kind, path in (("console", "/console"), ("docs", "/docs"), ("api", "/"))
}
""":func:`headers_for` as raw ASGI headers, made once (not on every answer)."""


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = _RAW[_kind(scope.get("path", ""))]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {bytes(name).lower() for name, _ in headers}
                headers.extend(header for header in extra if header[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, sending)
