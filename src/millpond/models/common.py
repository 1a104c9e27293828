"""Models shared by every domain: the error envelope and small helpers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class WireModel(BaseModel):
    """Base of every wire model: unknown fields are ignored so old SDKs keep working."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are an error, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ErrorBody(WireModel):
    code: str
    message: str
    details: Any = None


class ErrorEnvelope(WireModel):
    """The one JSON error shape of the whole API: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorBody


class Count(WireModel):
    """How many things an action touched (e.g. keys revoked)."""

    count: int
