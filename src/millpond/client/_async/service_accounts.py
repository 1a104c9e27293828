"""``mp.service_accounts``: non-human principals owned by a user, with their own keys.

A service account's key acts with its owner's rights on databases, limited by its scope.
Every method takes keyword-only ``timeout=`` (seconds, or an ``httpx.Timeout``) and
``max_retries=`` overriding the client's.
"""

from __future__ import annotations

import builtins

from ...models import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    KeyRevoke,
    KeyScope,
    ServiceAccount,
    ServiceAccountCreate,
)
from .._base import Call, TimeoutTypes, body, parse_count, parse_list, parse_model, parse_none
from .._base import segment as seg
from ._transport import AsyncTransport


class AsyncServiceAccounts:
    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    async def create(
        self, name: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> ServiceAccount:
        """A new service account owned by the calling user."""
        request = ServiceAccountCreate.model_construct(name=name)
        call = Call("POST", "/v1/service-accounts", parse_model(ServiceAccount), json=body(request))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def list(
        self, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> builtins.list[ServiceAccount]:
        """Every service account of the calling user, in one answer (not paged)."""
        call = Call("GET", "/v1/service-accounts", parse_list(ServiceAccount))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def get(
        self,
        service_account_id: int | str,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> ServiceAccount:
        """One service account by id."""
        path = f"/v1/service-accounts/{seg(service_account_id)}"
        call = Call("GET", path, parse_model(ServiceAccount))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def delete(
        self,
        service_account_id: int | str,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> None:
        """Delete a service account and revoke its keys."""
        call = Call("DELETE", f"/v1/service-accounts/{seg(service_account_id)}", parse_none)
        await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def create_key(
        self,
        service_account_id: int | str,
        name: str | None = None,
        scope: KeyScope = "write",
        expires_in_seconds: int | None = None,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> ApiKeyCreated:
        """A new key for the service account; its ``secret`` is in this answer only."""
        request = ApiKeyCreate.model_construct(
            name=name, scope=scope, expires_in_seconds=expires_in_seconds
        )
        path = f"/v1/service-accounts/{seg(service_account_id)}/keys"
        call = Call("POST", path, parse_model(ApiKeyCreated), json=body(request))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def list_keys(
        self,
        service_account_id: int | str,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[ApiKey]:
        """Every key of the service account, without their secrets, in one answer (not
        paged)."""
        path = f"/v1/service-accounts/{seg(service_account_id)}/keys"
        call = Call("GET", path, parse_list(ApiKey))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def revoke_keys(
        self,
        service_account_id: int | str,
        *,
        key_id: str | None = None,
        api_key: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> int:
        """Revoke the service account's keys: all of them, or only the one given by
        ``key_id`` or ``api_key``. Returns how many were revoked."""
        if key_id is not None and api_key is not None:
            raise ValueError("pass at most one of key_id or api_key")
        request = KeyRevoke.model_construct(key_id=key_id, api_key=api_key)
        path = f"/v1/service-accounts/{seg(service_account_id)}/keys/revoke"
        call = Call("POST", path, parse_count, json=body(request))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)
