"""Why a job failed, as data: :class:`JobError` carries the ``error_type`` and
``error_details`` a FAILED job reports (no FastAPI, no I/O here)."""

from __future__ import annotations

from typing import Any

from ..errors import clip, clip_details


class JobError(Exception):
    """A job failed for a reason the caller can act on.

    ``error_type`` is stable (documented in docs/api.md); ``details`` is JSON data, such
    as ``{"row": 12, "line": 13, "column": "price", "value": "abc"}`` for a value
    Postgres refused.
    """

    def __init__(self, error_type: str, message: str, details: dict[str, Any] | None = None):
        message = clip(message)  # a tenant's RAISE, a value from the file: any size
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.details: dict[str, Any] = clip_details(dict(details or {}))

    def as_details(self) -> dict[str, Any]:
        return {"message": self.message, **self.details}


class Interrupted(Exception):
    """The job was stopped from outside (shutdown, lost lease); it will run again."""


def invalid_file(message: str, **details: Any) -> JobError:
    return JobError("invalid_file", message, details)


def malformed_row(message: str, **details: Any) -> JobError:
    return JobError("malformed_row", message, details)
