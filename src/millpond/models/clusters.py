"""Postgres clusters (``/v1/clusters``) and moving a database between them
(``POST /v1/databases/{owner}/{name}/move``). Server admins only.

The *home* cluster is the one millpond starts on (the embedded Postgres, or
``MILLPOND_DATABASE_URL``): it holds the control database. Others are added by URL;
new databases are placed on an ``active`` cluster by the ``placement`` setting, never
on a ``draining`` one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .common import RequestModel, WireModel

ClusterState = Literal["active", "draining"]


class ClusterInfo(WireModel):
    name: str
    home: bool = Field(description="The cluster the control database lives on")
    address: str = Field(description="Where it listens (host and port), without credentials")
    state: ClusterState
    databases: int = Field(description="How many databases live on it")
    up: bool = Field(description="Whether the server could reach it just now")
    postgres: str | None = Field(default=None, description="Its server version, when up")
    error: str | None = Field(default=None, description="Why it is not up")
    created_at: datetime


class ClusterAdd(RequestModel):
    url: str = Field(
        description="A libpq URL or connection string of a role with CREATEDB and CREATEROLE"
    )
    name: str | None = Field(
        default=None, description="1-63 lowercase letters, digits, '_' or '-' (default cluster-N)"
    )


class ClusterUpdate(RequestModel):
    state: ClusterState


class DatabaseMove(RequestModel):
    cluster: str = Field(description="The cluster to move the database to")


class DatabaseMoved(WireModel):
    database: str
    source: str = Field(description="The cluster it was on")
    target: str = Field(description="The cluster it is on now")
    bytes: int = Field(description="Size of the copy (the pg_dump archive)")
    downtime_ms: float = Field(
        description="From refusing the database's sessions to serving it on the target"
    )
