"""``mp.users``: user accounts (creating, listing and deleting them needs an admin key)
and passwords (for the web console).

Every method takes keyword-only ``timeout=`` (seconds, or an ``httpx.Timeout``) and
``max_retries=`` overriding the client's.
"""

from __future__ import annotations

import builtins

from ...models import PasswordReset, PasswordSet, User, UserCreate, UserCreated
from .._base import Call, TimeoutTypes, body, parse_list, parse_model, parse_none
from .._base import segment as seg
from ._transport import AsyncTransport


class AsyncUsers:
    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    async def create(
        self,
        username: str,
        is_admin: bool = False,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> UserCreated:
        """A new user and its first API key (the key's ``secret`` is shown once)."""
        request = UserCreate.model_construct(username=username, is_admin=is_admin)
        call = Call("POST", "/v1/users", parse_model(UserCreated), json=body(request))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def list(
        self, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> builtins.list[User]:
        """Every user, in one answer: this list is not paged."""
        call = Call("GET", "/v1/users", parse_list(User))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def get(
        self, username: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> User:
        """One user (an admin may see anyone; a user only themself)."""
        call = Call("GET", f"/v1/users/{seg(username)}", parse_model(User))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def delete(
        self,
        username: str,
        delete_databases: bool = False,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> None:
        """Delete a user. A user who owns databases is only deleted, with them, when
        ``delete_databases=True`` (otherwise ``ConflictError`` ``user_owns_databases``)."""
        params = {"delete_databases": "true"} if delete_databases else None
        call = Call("DELETE", f"/v1/users/{seg(username)}", parse_none, params=params)
        await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def set_password(
        self,
        username: str,
        password: str,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> None:
        """Reset a user's password (admin): no current password needed; the user's
        console sessions end."""
        request = PasswordReset.model_construct(password=password)
        call = Call("PUT", f"/v1/users/{seg(username)}/password", parse_none, json=body(request))
        await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def set_my_password(
        self,
        password: str,
        current_password: str | None = None,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> None:
        """Set the caller's own password (a user's write key); ``current_password`` is
        needed when one is set (``me().has_password``). The user's console sessions end."""
        request = PasswordSet.model_construct(password=password, current_password=current_password)
        # never sent twice: a second try would carry a current password that is no more
        call = Call("PUT", "/v1/me/password", parse_none, json=body(request), idempotent=False)
        await self._transport.request(call, timeout=timeout, max_retries=max_retries)
