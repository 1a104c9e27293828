"""``mp.databases``: create, list, inspect, change, delete and share databases.

Databases are named ``"owner/name"``. Every method takes keyword-only ``timeout=``
(seconds, or an ``httpx.Timeout``) and ``max_retries=`` overriding the client's.
"""

from __future__ import annotations

import builtins

from ...models import (
    Collaborator,
    CollaboratorRole,
    CollaboratorSet,
    Database,
    DatabaseCreate,
    DatabaseUpdate,
)
from .._base import (
    Call,
    TimeoutTypes,
    body,
    database_path,
    parse_list,
    parse_model,
    parse_none,
)
from ._transport import AsyncTransport


class AsyncDatabases:
    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    async def create(
        self,
        name: str,
        is_private: bool = True,
        storage_limit_bytes: int | None = None,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Database:
        """Create a database ``name`` (without the owner) owned by the caller."""
        request = DatabaseCreate.model_construct(
            name=name, is_private=is_private, storage_limit_bytes=storage_limit_bytes
        )
        call = Call("POST", "/v1/databases", parse_model(Database), json=body(request))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def list(
        self, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> builtins.list[Database]:
        """Every database the caller owns or collaborates on, in one answer: this list is
        not paged."""
        call = Call("GET", "/v1/databases", parse_list(Database))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def get(
        self, db: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> Database:
        """One database, ``"owner/name"``."""
        call = Call("GET", database_path(db), parse_model(Database))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def update(
        self,
        db: str,
        name: str | None = None,
        is_private: bool | None = None,
        storage_limit_bytes: int | None = None,
        *,
        clear_storage_limit: bool = False,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Database:
        """Rename, change visibility or storage limit; ``None`` leaves a field as it is.
        ``clear_storage_limit=True`` removes the limit."""
        request = DatabaseUpdate.model_construct(
            name=name,
            is_private=is_private,
            storage_limit_bytes=storage_limit_bytes,
            clear_storage_limit=clear_storage_limit,
        )
        call = Call("PATCH", database_path(db), parse_model(Database), json=body(request))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def delete(
        self, db: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> None:
        """Delete a database and all its data (owner only)."""
        call = Call("DELETE", database_path(db), parse_none)
        await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def collaborators(
        self, db: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> builtins.list[Collaborator]:
        """Who the database is shared with, and their roles, all in one answer (not paged)."""
        call = Call("GET", database_path(db, "collaborators"), parse_list(Collaborator))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def add_collaborator(
        self,
        db: str,
        username: str,
        role: CollaboratorRole,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Collaborator:
        """Share the database with ``username`` as ``"read"``, ``"write"`` or ``"admin"``
        (or change their role)."""
        request = CollaboratorSet.model_construct(role=role)
        path = database_path(db, "collaborators", username)
        call = Call("PUT", path, parse_model(Collaborator), json=body(request))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def remove_collaborator(
        self,
        db: str,
        username: str,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> None:
        """Stop sharing the database with ``username``."""
        call = Call("DELETE", database_path(db, "collaborators", username), parse_none)
        await self._transport.request(call, timeout=timeout, max_retries=max_retries)
