"""``mp.databases``: create, list, inspect, change, delete, share, back up and restore
databases.

Databases are named ``"owner/name"``. Every method takes keyword-only ``timeout=``
(seconds, or an ``httpx.Timeout``) and ``max_retries=`` overriding the client's (but
``backup`` and ``restore``, which stream a file and are never retried)::

    manifest = await mp.databases.backup("alice/shop", "shop.mpdb")
    await mp.databases.create("shop-copy")
    await mp.databases.restore("alice/shop-copy", "shop.mpdb")
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator
from typing import IO

import httpx

from ...errors import TransportError
from ...models import (
    Collaborator,
    CollaboratorRole,
    CollaboratorSet,
    Database,
    DatabaseCreate,
    DatabaseMove,
    DatabaseMoved,
    DatabaseUpdate,
)
from ...models.backups import MEDIA_TYPE, BackupManifest, DatabaseRestore
from .._backups import (
    CHUNK,
    FileInput,
    Output,
    complete,
    manifest_of,
    name_of,
    no_read_limit,
    open_input,
    position_of,
    read_head,
    retry_or_raise,
    rewind,
    size_of,
)
from .._base import (
    Attempts,
    Call,
    Retry,
    TimeoutTypes,
    body,
    database_path,
    parse_list,
    parse_model,
    parse_none,
)
from .._progress import ProgressBar
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
        cluster: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Database:
        """Create a database ``name`` (without the owner) owned by the caller. ``cluster``
        (server admins only) names the Postgres cluster it goes to, instead of the
        server's placement choosing one."""
        request = DatabaseCreate.model_construct(
            name=name,
            is_private=is_private,
            storage_limit_bytes=storage_limit_bytes,
            cluster=cluster,
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

    async def move(
        self,
        db: str,
        cluster: str,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> DatabaseMoved:
        """Move ``db`` to the Postgres cluster ``cluster`` (server admins only), with
        downtime: requests for it answer 503 ``database_moving`` (which the SDK retries)
        until the copy is served there. Returns both clusters, the copy's size and the
        downtime. A big database may take longer than the client's timeout: pass
        ``timeout=``. See docs/clusters.md."""
        request = DatabaseMove.model_construct(cluster=cluster)
        call = Call(
            "POST", database_path(db, "move"), parse_model(DatabaseMoved), json=body(request)
        )
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

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

    # -- backups (models/backups.py) ---------------------------------------------------------

    async def backup(
        self,
        db: str,
        file: FileInput,
        *,
        progress: bool = False,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> BackupManifest:
        """Stream a backup of ``db`` (the owner and admins) into ``file``: a path (written
        whole, or not at all) or a binary file object. Returns the backup's manifest.
        Retried only while nothing was received; ``progress=True`` shows the bytes
        received on stderr."""
        call = Call("GET", database_path(db, "backup"), bytes)
        attempts = Attempts(self._transport.config, call, timeout=timeout, max_retries=max_retries)
        out = Output(file)
        bar = ProgressBar(progress, f"backup of {db}", rows=False)
        try:
            while isinstance(outcome := await self._backup(attempts, out, bar, db), Retry):
                await asyncio.sleep(outcome.delay)
        except BaseException:
            out.abandon()
            raise
        finally:
            bar.close()
        out.finish()
        return outcome

    async def _backup(
        self, attempts: Attempts[bytes], out: Output, bar: ProgressBar, db: str
    ) -> BackupManifest | Retry:
        spec = attempts.request
        try:
            async with self._transport._http.stream(
                "GET", spec.url, headers=spec.headers, timeout=spec.timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    return retry_or_raise(attempts.after_response(response))
                return await _receive(response.aiter_bytes(), out, bar, db)
        except httpx.TransportError as exc:
            if out.written:  # what was written cannot be taken back from a file object
                raise TransportError(f"the backup of {db} was cut short: {exc!r}") from exc
            return attempts.after_error(exc)

    async def restore(
        self,
        db: str,
        file: FileInput,
        *,
        progress: bool = False,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> DatabaseRestore:
        """Restore the backup in ``file`` (a path or a binary file object) into ``db``,
        which must hold no tables, functions or other objects yet (``ConflictError``
        ``database_not_empty``); all of it or nothing. The file is checked before it is
        sent; retried (when the server answers that it could not start) only if it can be
        read again (a path, a seekable file). Waits for the restore however long it
        takes, unless ``timeout`` says otherwise; ``progress=True`` shows the bytes sent
        on stderr."""
        stream, opened = open_input(file)
        try:
            _, head = read_head(stream, name_of(file))
            start = position_of(stream)
            call = Call("POST", database_path(db, "restore"), parse_model(DatabaseRestore))
            retries = max_retries if start is not None else 0
            attempts = Attempts(self._transport.config, call, timeout=timeout, max_retries=retries)
            bar = ProgressBar(progress, f"restore into {db}", rows=False, total=size_of(file))
            try:
                while isinstance(
                    outcome := await self._restore(attempts, stream, head, bar, timeout), Retry
                ):
                    await asyncio.sleep(outcome.delay)
                    rewind(stream, start, bar)
            finally:
                bar.close()
        finally:
            if opened is not None:
                opened.close()
        return outcome

    async def _restore(
        self,
        attempts: Attempts[DatabaseRestore],
        stream: IO[bytes],
        head: bytes,
        bar: ProgressBar,
        timeout: TimeoutTypes,
    ) -> DatabaseRestore | Retry:
        spec = attempts.request
        wait = spec.timeout if timeout is not None else no_read_limit(spec.timeout)
        try:
            response = await self._transport._http.post(
                spec.url,
                content=_send(stream, head, bar),
                headers={**spec.headers, "Content-Type": MEDIA_TYPE},
                timeout=wait,
            )
        except httpx.TransportError as exc:
            return attempts.after_error(exc)
        return attempts.after_response(response)


async def _receive(
    chunks: AsyncIterator[bytes], out: Output, bar: ProgressBar, db: str
) -> BackupManifest:
    """Write the backup's bytes to ``out``; its manifest (read from its head)."""
    manifest: BackupManifest | None = None
    head = b""
    async for chunk in chunks:
        out.write(chunk)
        bar.advance(len(chunk))
        if manifest is None:
            head += chunk
            manifest = manifest_of(head, db)
    return complete(manifest, db)


async def _send(stream: IO[bytes], head: bytes, bar: ProgressBar) -> AsyncIterator[bytes]:
    """The file's bytes, ``head`` (already read) first."""
    yield head
    bar.advance(len(head))
    while chunk := stream.read(CHUNK):
        bar.advance(len(chunk))
        yield chunk
    bar.phase("restoring")
