"""``mp.modules``: publish a database's module, call its reducers, read its versions and
logs (docs/modules.md)::

    result = await mp.modules.publish("alice/chat", "chat.py")        # or a package folder
    await mp.modules.call("alice/chat", "send_message", "Hello!")     # or mp.call(...)
    for line in await mp.modules.logs("alice/chat"):
        print(line.level, line.message)

A call that does not commit raises :class:`~millpond.errors.ReducerError` (its
``status``: failed, error, timeout, crashed). Every method takes keyword-only
``timeout=`` and ``max_retries=``.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ...models.modules import (
    AnonymousIdentity,
    CallResult,
    Connection,
    IdentityCreated,
    LogLine,
    ModulePublish,
    ModuleRollback,
    ModuleSettings,
    ModuleSettingsUpdate,
    ModuleVersion,
    ModuleVersionDetail,
    PublishResult,
    Schedule,
    TokenIssuer,
    TokenIssuerPut,
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
from .._paging import PAGE_SIZE, Pages
from ._transport import AsyncTransport


def read_module(path: str | Path) -> dict[str, str]:
    """The files of a module: one ``.py`` file, or every ``.py`` file of a package folder
    (paths relative to the folder's parent, so the package keeps its name)."""
    path = Path(path)
    if path.is_file():
        return {path.name: path.read_text()}
    if not (path / "__init__.py").is_file():
        raise ValueError(f"{path} is neither a .py file nor a package folder (__init__.py)")
    return {
        file.relative_to(path.parent).as_posix(): file.read_text()
        for file in sorted(path.rglob("*.py"))
        if "__pycache__" not in file.parts
    }


def _parse_json(content: bytes) -> dict[str, Any]:
    data = json.loads(content)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


class AsyncModules:
    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    async def publish(
        self,
        db: str,
        source: str | Path | dict[str, str],
        *,
        entry: str | None = None,
        allow_destructive: bool = False,
        dry_run: bool = False,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> PublishResult:
        """Publish a new version of ``db``'s module: ``source`` is a ``.py`` file, a
        package folder, or the files themselves (relative path → text). A migration that
        drops or rewrites data is refused (``ConflictError`` ``destructive_migration``,
        with the diff) unless ``allow_destructive``; ``dry_run`` only plans it."""
        files = source if isinstance(source, dict) else read_module(source)
        request = ModulePublish(
            files=files, entry=entry, allow_destructive=allow_destructive, dry_run=dry_run
        )
        call = Call(
            "POST", database_path(db, "module"), parse_model(PublishResult), json=body(request)
        )
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def schema(
        self, db: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> dict[str, Any]:
        """The running version and its definition (``{"version", "definition"}``)."""
        call = Call("GET", database_path(db, "module"), _parse_json)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def versions(
        self, db: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> builtins.list[ModuleVersion]:
        """Every published version, newest first (the owner and admins only), in one answer:
        this list is not paged."""
        call = Call("GET", database_path(db, "module", "versions"), parse_list(ModuleVersion))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def version(
        self,
        db: str,
        version: int,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> ModuleVersionDetail:
        """One version with its files and definition."""
        path = database_path(db, "module", "versions", version)
        call = Call("GET", path, parse_model(ModuleVersionDetail))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def rollback(
        self,
        db: str,
        version: int,
        *,
        allow_destructive: bool = False,
        dry_run: bool = False,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> PublishResult:
        """Publish ``version``'s files again, as a new version."""
        request = ModuleRollback(
            version=version, allow_destructive=allow_destructive, dry_run=dry_run
        )
        call = Call(
            "POST",
            database_path(db, "module", "rollback"),
            parse_model(PublishResult),
            json=body(request),
        )
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def call(
        self,
        db: str,
        reducer: str,
        *args: Any,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
        **kwargs: Any,
    ) -> CallResult:
        """Call ``reducer`` with positional or keyword arguments (not both): one
        transaction, committed when it returns; ``ReducerError`` if it did not commit."""
        if args and kwargs:
            raise TypeError("give a reducer's arguments by position or by name, not both")
        path = database_path(db, "call", reducer)
        call = Call("POST", path, parse_model(CallResult), json=kwargs if kwargs else list(args))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def logs(
        self,
        db: str,
        *,
        after: int = 0,
        limit: int = 100,
        last: int | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[LogLine]:
        """One page of the module's log lines, oldest first: at most ``limit`` (1-1000)
        with an id above ``after`` — or, with ``last`` (1-1000), the newest ``last``.
        Every one (to now): :meth:`iter_logs`."""
        path = f"{database_path(db, 'module', 'logs')}?after={int(after)}&limit={int(limit)}"
        if last is not None:
            path += f"&last={int(last)}"
        call = Call("GET", path, parse_list(LogLine))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def iter_logs(
        self,
        db: str,
        *,
        after: int = 0,
        page_size: int = PAGE_SIZE,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> AsyncIterator[LogLine]:
        """Every log line with an id above ``after``, oldest first, as :meth:`logs` but
        to the newest: ``page_size`` (1-1000) per request, each page fetched when the loop
        reaches it."""
        call = Call("GET", database_path(db, "module", "logs"), parse_list(LogLine))
        pages = Pages(call, _line_id, size=page_size, start=int(after))
        async for line in self._transport.iterate(pages, timeout=timeout, max_retries=max_retries):
            yield line

    # -- identities and settings -----------------------------------------------------------

    async def create_identity(
        self, db: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> IdentityCreated:
        """A new anonymous identity of ``db``'s module and its token (shown once: keep it;
        ``AsyncMillpond.anonymous`` does this for you). Needs no API key."""
        call = Call("POST", database_path(db, "identities"), parse_model(IdentityCreated))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def identities(
        self,
        db: str,
        *,
        limit: int = 100,
        revoked: bool = False,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[AnonymousIdentity]:
        """``db``'s anonymous identities, newest first (owner and admins; ``revoked=True``
        includes the revoked ones): the newest ``limit`` (1-1000) only, as the server has no
        cursor to page further with."""
        params = {"limit": str(int(limit)), "revoked": "true" if revoked else "false"}
        call = Call(
            "GET", database_path(db, "identities"), parse_list(AnonymousIdentity), params=params
        )
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def revoke_identity(
        self,
        db: str,
        identity: str,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> None:
        """Revoke an anonymous identity: its token stops working and its sockets close."""
        path = database_path(db, "identities", identity)
        await self._transport.request(
            Call("DELETE", path, parse_none), timeout=timeout, max_retries=max_retries
        )

    async def settings(
        self, db: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> ModuleSettings:
        """The module's settings (``anonymous_access``)."""
        call = Call("GET", database_path(db, "module", "settings"), parse_model(ModuleSettings))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def update_settings(
        self,
        db: str,
        *,
        anonymous_access: bool | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> ModuleSettings:
        """Change the module's settings: ``anonymous_access=False`` refuses every anonymous
        identity's token at once (and closes their sockets)."""
        request = ModuleSettingsUpdate(anonymous_access=anonymous_access)
        call = Call(
            "PATCH",
            database_path(db, "module", "settings"),
            parse_model(ModuleSettings),
            json=body(request),
        )
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    # -- login providers ---------------------------------------------------------------------

    async def issuers(
        self, db: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> builtins.list[TokenIssuer]:
        """The login providers whose tokens ``db``'s module accepts (owner and admins),
        all in one answer: this list is not paged."""
        call = Call("GET", database_path(db, "module", "issuers"), parse_list(TokenIssuer))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def put_issuer(
        self,
        db: str,
        issuer: str,
        *,
        audiences: builtins.list[str],
        jwks: dict[str, Any] | None = None,
        jwks_uri: str | None = None,
        required_claims: dict[str, Any] | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> TokenIssuer:
        """Accept the tokens of ``issuer`` (their ``iss``) for one of ``audiences``, signed
        by the keys in ``jwks`` (a JSON Web Key Set), at ``jwks_uri``, or (neither) named by
        the issuer's openid-configuration; with ``required_claims`` equal. Its end users
        call reducers as ``sha256(issuer, subject)`` with the claims as ``ctx.sender_auth``."""
        request = TokenIssuerPut(
            issuer=issuer,
            audiences=audiences,
            jwks=jwks,
            jwks_uri=jwks_uri,
            required_claims=required_claims or {},
        )
        call = Call(
            "PUT",
            database_path(db, "module", "issuers"),
            parse_model(TokenIssuer),
            json=body(request),
        )
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def remove_issuer(
        self, db: str, issuer: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> None:
        """Stop accepting ``issuer``'s tokens (their sockets close at once)."""
        call = Call(
            "DELETE", database_path(db, "module", "issuers"), parse_none, params={"issuer": issuer}
        )
        await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def connections(
        self, db: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> builtins.list[Connection]:
        """Who is connected: ``db``'s open realtime connections, as its module's lifecycle
        reducers recorded them (owner and admins), all in one answer: this list is not
        paged."""
        call = Call("GET", database_path(db, "connections"), parse_list(Connection))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def schedules(
        self,
        db: str,
        *,
        limit: int = 1000,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[Schedule]:
        """``db``'s scheduled reducer runs (its schedule tables' rows): one-shot and
        recurring, soonest first, failed ones last (owner and admins): the first ``limit``
        (1-10000) only, as the server has no cursor to page further with."""
        path = database_path(db, "schedules")
        call = Call("GET", path, parse_list(Schedule), params={"limit": str(limit)})
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)


def _line_id(line: LogLine) -> int:
    return line.id
