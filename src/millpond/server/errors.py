"""The server's error type. Services raise :class:`ServiceError`; the app turns every
error — including validation errors and unexpected exceptions — into the one JSON
envelope ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from typing import Any

MAX_TEXT = 8192
"""Longest message, or text in the details, an error carries: Postgres relays whatever
a tenant's ``RAISE`` says (up to a gigabyte)."""


def clip(text: str, limit: int = MAX_TEXT) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def clip_details(details: Any) -> Any:
    """``details`` with its texts (top level, or values of a dict) clipped."""
    if isinstance(details, str):
        return clip(details)
    if isinstance(details, dict):
        return {k: clip(v) if isinstance(v, str) else v for k, v in details.items()}
    return details


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        message = clip(message)
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = clip_details(details)

    def envelope(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def not_found(code: str, message: str) -> ServiceError:
    return ServiceError(404, code, message)


def forbidden(message: str, code: str = "forbidden") -> ServiceError:
    return ServiceError(403, code, message)


def conflict(code: str, message: str) -> ServiceError:
    return ServiceError(409, code, message)


def invalid(code: str, message: str, details: Any = None) -> ServiceError:
    return ServiceError(422, code, message, details)
