"""Models shared by every domain: the error envelope and small helpers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic_core import PydanticCustomError


class WireModel(BaseModel):
    """Base of every wire model: unknown fields are ignored so old SDKs keep working."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are an error, so typos never pass silently;
    no text may hold a NUL character (Postgres text cannot store one)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise PydanticCustomError("nul_character", "must not contain NUL characters")
        return value


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
