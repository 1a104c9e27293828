"""Bounds on what a client sends: the size of request bodies and the nesting of JSON.

``BodyLimits`` is a pure ASGI middleware. A request body longer than
``max_request_bytes`` is answered ``413 request_too_large`` — refused on its
``Content-Length`` before a byte is read, or as soon as a streamed (chunked) body
passes the limit; the app never sees it, and no more than the limit is ever held. A
JSON body (``application/json``, ``…+json`` or no content type) nested deeper than
``max_json_depth`` is answered ``400 json_too_deep`` before anything parses it (Python's
parser would recurse until it fails). Multipart uploads of import jobs stream to disk
under their own, bigger limit (``transfer_max_file_bytes``, enforced while they stream)
and pass through untouched, as do database restores (``POST
/v1/databases/{owner}/{name}/restore``: a backup file, streamed to disk under the same
limit by ``databases/backup.py``).

:func:`too_deep` is the one nesting check: the WebSocket messages and the JSON values of
query results use it too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from itertools import accumulate
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ServiceError

DEFAULT_JSON_DEPTH = 128
"""The default ``max_json_depth``; also the limit where no setting reaches (realtime
values, import files)."""

UPLOAD_PATHS = frozenset({"/v1/imports", "/v1/imports/preview"})
"""Routes that stream a multipart body to disk under ``transfer_max_file_bytes``."""
RESTORE_PATH = re.compile(r"/v1/databases/[^/]+/[^/]+/restore")
"""Restores: any body, streamed to disk under ``transfer_max_file_bytes``."""

_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_SLICE = 1 << 16


def too_deep(data: bytes, limit: int) -> bool:
    """Whether the JSON text ``data`` nests arrays/objects more than ``limit`` deep.

    A text with at most ``limit`` brackets is shallow enough (the common case: two
    counts); else the strings are cut out, the brackets kept, and the running depth
    summed, all in C loops — some 40 ns a bracket, so 16 MiB of nothing but brackets
    takes under a second, less than parsing them would. Text that is not JSON may be
    judged too deep; its parser would refuse it anyway."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    if b'"' in data:
        data = _STRING.sub(b"", data)
    signs = memoryview(data.translate(None, _NOT_BRACKETS).translate(_SIGNS)).cast("b")
    depth = 0
    for start in range(0, len(signs), _SLICE):
        part = signs[start : start + _SLICE]
        if max(accumulate(part, initial=depth)) > limit:
            return True
        depth += sum(part)
    return False


def too_deep_error(limit: int, what: str = "the request body") -> ServiceError:
    return ServiceError(
        400,
        "json_too_deep",
        f"{what} nests JSON arrays/objects more than {limit} levels deep (MILLPOND_MAX_JSON_DEPTH)",
        {"max_depth": limit},
    )


def too_large_error(limit: int) -> ServiceError:
    return ServiceError(
        413,
        "request_too_large",
        f"the request body is larger than {limit} bytes (MILLPOND_MAX_REQUEST_BYTES)",
        {"limit": limit},
    )


def invalid_text_error() -> ServiceError:
    return ServiceError(
        400,
        "invalid_text",
        "the request holds text that is not valid Unicode (a lone surrogate such as"
        " \\ud800): send UTF-8 text, and surrogate pairs only in pairs",
    )


async def lone_surrogate(_: Request, exc: Exception) -> JSONResponse:
    """App exception handler: a lone surrogate (a JSON ``\\ud800`` escape decodes to one)
    reaching an encoder is the client's text, not a server fault."""
    if isinstance(exc, UnicodeEncodeError) and exc.reason == "surrogates not allowed":
        err = invalid_text_error()
        return JSONResponse(err.envelope(), status_code=err.status)
    raise exc


def has_lone_surrogate(text: str, parsed: Any) -> bool:
    """Whether ``parsed`` (JSON ``text`` once loaded) holds a lone surrogate, which only
    a ``\\uD800``-style escape can make."""
    if "\\u" not in text:
        return False
    try:
        json.dumps(parsed, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


def _header(scope: Scope, name: bytes) -> str | None:
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", ())
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return True  # FastAPI parses a body without a content type as JSON
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _is_upload(scope: Scope, content_type: str | None) -> bool:
    path = scope.get("path", "")
    if scope.get("method") == "POST" and RESTORE_PATH.fullmatch(path):
        return True
    return (
        path in UPLOAD_PATHS
        and content_type is not None
        and content_type.lower().startswith("multipart/form-data")
    )


class BodyLimits:
    """``max_bytes`` per request body, ``max_depth`` per JSON body (see the module doc)."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_type = _header(scope, b"content-type")
        if _is_upload(scope, content_type):
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
            await self._refuse(too_large_error(self.max_bytes), scope, receive, send)
            return
        body = await self._read(receive)
        if body is None:
            await self._refuse(too_large_error(self.max_bytes), scope, receive, send)
            return
        if body and _is_json(content_type) and too_deep(body, self.max_depth):
            await self._refuse(too_deep_error(self.max_depth), scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client left: the app will see an empty body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _refuse(self, err: ServiceError, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(err.envelope(), status_code=err.status)
        response.headers["connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then: the client's disconnect

    return replay
