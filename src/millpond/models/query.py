"""``POST /v1/query``: run SQL over HTTP."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field

from .common import RequestModel, WireModel

DataFormat = Literal["list", "objects"]


class QueryRequest(RequestModel):
    database: str = Field(
        description="owner/name", validation_alias=AliasChoices("database", "db_name")
    )
    sql: str = Field(min_length=1, validation_alias=AliasChoices("sql", "query_string", "query"))
    data_format: DataFormat | None = None


class Column(WireModel):
    name: str
    type: str = Field(description="Postgres type name, e.g. int8, numeric, timestamptz")


class QueryResult(WireModel):
    """The result of the last statement.

    Values: int8 as exact JSON integers; numeric as strings (no digit lost);
    dates and times ISO-8601; bytea base64; json/jsonb as JSON; arrays as arrays.
    """

    columns: list[Column]
    data: list[list[Any]] | list[dict[str, Any]]
    row_count: int
    truncated: bool = False
    command: str | None = None
    elapsed_ms: float
