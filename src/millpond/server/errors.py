"""The server's error type. Services raise :class:`ServiceError`; the app turns every
error — including validation errors and unexpected exceptions — into the one JSON
envelope ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

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
