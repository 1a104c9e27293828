"""Errors raised by the millpond SDK.

Every API error is a JSON envelope ``{"error": {"code", "message", "details"}}``
with a stable ``code``; the SDK turns it into one exception hierarchy::

    MillpondError
    ├── ConfigurationError          bad client configuration (e.g. no API key)
    ├── TransportError              the request never got an HTTP answer
    │   ├── ConnectError
    │   └── TimeoutError
    └── ApiError                    the server answered with an error status
        ├── BadRequestError          400
        ├── UnauthorizedError        401
        ├── ForbiddenError           403
        ├── NotFoundError            404
        ├── ConflictError            409
        ├── UnprocessableEntityError 422
        │   └── ReducerError         a reducer call that did not commit (``status``:
        │                            failed, error, timeout or crashed; ``request_id``)
        ├── RateLimitError           429
        └── ServerError              5xx

``ApiError`` carries ``status_code``, ``code``, ``message``, ``details`` and the
raw ``body``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "BadRequestError",
    "ConfigurationError",
    "ConflictError",
    "ConnectError",
    "ForbiddenError",
    "MillpondError",
    "NotFoundError",
    "RateLimitError",
    "ReducerError",
    "ServerError",
    "TimeoutError",
    "TransportError",
    "UnauthorizedError",
    "UnprocessableEntityError",
    "error_for_status",
]


class MillpondError(Exception):
    """Base class of every error the SDK raises."""


class ConfigurationError(MillpondError):
    """The client is missing configuration it needs (for example an API key)."""


class TransportError(MillpondError):
    """The request did not get an HTTP response (after retries)."""


class ConnectError(TransportError):
    """The server could not be reached."""


class TimeoutError(TransportError):
    """The request timed out."""


class ApiError(MillpondError):
    """The server answered with an error status and a JSON error envelope."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        details: Any = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.body = body


class BadRequestError(ApiError):
    """400: the request was understood but cannot be carried out (e.g. an SQL error)."""


class UnauthorizedError(ApiError):
    """401: missing, unknown, expired or revoked API key."""


class ForbiddenError(ApiError):
    """403: the caller is known but lacks the right for this action."""


class NotFoundError(ApiError):
    """404: no such resource visible to the caller."""


class ConflictError(ApiError):
    """409: the resource already exists or is in a conflicting state."""


class UnprocessableEntityError(ApiError):
    """422: the request body or parameters are invalid."""


class ReducerError(UnprocessableEntityError):
    """422: a reducer call that did not commit; nothing it did was kept. ``status`` is
    ``"failed"`` (the reducer raised ``SenderError``: ``message`` is its message),
    ``"error"`` (a bug in the module; the traceback is in its logs), ``"timeout"`` or
    ``"crashed"``; ``request_id`` finds the call in ``millpond logs``."""

    @property
    def status(self) -> str:
        return str((self.details or {}).get("status", "error"))

    @property
    def request_id(self) -> str | None:
        value = (self.details or {}).get("request_id")
        return None if value is None else str(value)


class RateLimitError(ApiError):
    """429: too many requests."""


class ServerError(ApiError):
    """5xx: the server failed."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def error_for_status(status_code: int, body: Any) -> ApiError:
    """Build the right ``ApiError`` subclass from a status code and a decoded body."""
    code = "http_error"
    message = f"HTTP {status_code}"
    details: Any = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code", code))
        message = str(err.get("message", message))
        details = err.get("details")
    cls = _BY_STATUS.get(status_code)
    if status_code == 422 and code.startswith("reducer_"):
        cls = ReducerError
    if cls is None:
        cls = ServerError if status_code >= 500 else ApiError
    return cls(status_code, code, message, details, body)
