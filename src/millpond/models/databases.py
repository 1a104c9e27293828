"""Databases and their collaborators."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .common import RequestModel, WireModel

CollaboratorRole = Literal["read", "write", "admin"]
AccessRole = Literal["read", "write", "admin", "owner"]


class Database(WireModel):
    id: int
    owner: str
    name: str
    full_name: str = Field(description="owner/name")
    is_private: bool
    storage_limit_bytes: int | None = None
    size_bytes: int | None = None
    created_at: datetime
    updated_at: datetime
    role: AccessRole | None = Field(default=None, description="The caller's access to it")
    cluster: str = Field(default="default", description="The Postgres cluster it lives on")


MAX_BIGINT = 2**63 - 1


class DatabaseCreate(RequestModel):
    name: str
    is_private: bool = True
    storage_limit_bytes: int | None = Field(default=None, gt=0, le=MAX_BIGINT)
    cluster: str | None = Field(
        default=None,
        description="The cluster to create it on (server admins only; default: the placement"
        " policy's choice)",
    )


class DatabaseUpdate(RequestModel):
    name: str | None = None
    is_private: bool | None = None
    storage_limit_bytes: int | None = Field(default=None, gt=0, le=MAX_BIGINT)
    clear_storage_limit: bool = False


class Collaborator(WireModel):
    username: str
    role: CollaboratorRole
    created_at: datetime


class CollaboratorSet(RequestModel):
    role: CollaboratorRole
