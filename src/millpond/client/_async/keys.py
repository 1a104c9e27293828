"""``mp.keys``: the API keys of the caller's principal (a user or a service account).

Every method takes keyword-only ``timeout=`` (seconds, or an ``httpx.Timeout``) and
``max_retries=`` overriding the client's.
"""

from __future__ import annotations

import builtins

from ...models import ApiKey, ApiKeyCreate, ApiKeyCreated, KeyRevoke, KeyScope
from .._base import Call, TimeoutTypes, body, parse_count, parse_list, parse_model, parse_none
from .._base import segment as seg
from ._transport import AsyncTransport


class AsyncKeys:
    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    async def create(
        self,
        name: str | None = None,
        scope: KeyScope = "write",
        expires_in_seconds: int | None = None,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> ApiKeyCreated:
        """A new key with the caller's rights (``scope="read"``: read-only). Its
        ``secret`` is in this answer only: keep it."""
        request = ApiKeyCreate.model_construct(
            name=name, scope=scope, expires_in_seconds=expires_in_seconds
        )
        call = Call("POST", "/v1/keys", parse_model(ApiKeyCreated), json=body(request))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def list(
        self, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> builtins.list[ApiKey]:
        """Every key of the caller's, without their secrets, in one answer (not paged)."""
        call = Call("GET", "/v1/keys", parse_list(ApiKey))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def revoke(
        self,
        key_id: str | None = None,
        *,
        api_key: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> None:
        """Revoke one key: by its id (``revoke("k_…")``) or by the key itself
        (``revoke(api_key="mp_…")``). To revoke every key, use :meth:`revoke_all`."""
        if (key_id is None) == (api_key is None):
            raise ValueError("pass exactly one of key_id or api_key (or use revoke_all())")
        if key_id is not None:
            call = Call("DELETE", f"/v1/keys/{seg(key_id)}", parse_none)
            await self._transport.request(call, timeout=timeout, max_retries=max_retries)
        else:
            request = KeyRevoke.model_construct(api_key=api_key)
            by_key = Call("POST", "/v1/keys/revoke", parse_count, json=body(request))
            await self._transport.request(by_key, timeout=timeout, max_retries=max_retries)

    async def revoke_all(
        self, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> int:
        """Revoke every key of the caller's principal, including the one making this call.
        Returns how many were revoked."""
        call = Call("POST", "/v1/keys/revoke", parse_count, json={})
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)
