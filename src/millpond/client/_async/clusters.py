"""``mp.clusters``: the Postgres clusters databases live on (server admins only; any
other key: ``ForbiddenError`` ``admin_required``). See docs/clusters.md.

Moving a database between them is ``mp.databases.move``. Every method takes keyword-only
``timeout=`` (seconds, or an ``httpx.Timeout``) and ``max_retries=`` overriding the
client's.
"""

from __future__ import annotations

import builtins

from ...models import ClusterAdd, ClusterInfo, ClusterState, ClusterUpdate
from .._base import Call, TimeoutTypes, body, parse_list, parse_model, parse_none
from .._base import segment as seg
from ._transport import AsyncTransport


class AsyncClusters:
    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    async def list(
        self, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> builtins.list[ClusterInfo]:
        """Every cluster, the home one first, with whether the server reaches it now; in
        one answer (not paged)."""
        call = Call("GET", "/v1/clusters", parse_list(ClusterInfo))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def get(
        self, name: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> ClusterInfo:
        """One cluster (``NotFoundError`` ``cluster_not_found``)."""
        call = Call("GET", f"/v1/clusters/{seg(name)}", parse_model(ClusterInfo))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def add(
        self,
        url: str,
        *,
        name: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> ClusterInfo:
        """Register the Postgres at ``url`` (a libpq URL or connection string of a role
        with ``CREATEDB`` and ``CREATEROLE``) as cluster ``name`` (default
        ``cluster-N``). The server connects first and refuses one it cannot reach or that
        cannot host databases (``UnprocessableEntityError``), or one already registered
        (``ConflictError`` ``cluster_exists``). The URL is never sent back."""
        request = ClusterAdd.model_construct(url=url, name=name)
        call = Call("POST", "/v1/clusters", parse_model(ClusterInfo), json=body(request))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def update(
        self,
        name: str,
        *,
        state: ClusterState,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> ClusterInfo:
        """Set a cluster's state: ``"draining"`` (it takes no new databases; those on it
        stay) or ``"active"``."""
        request = ClusterUpdate.model_construct(state=state)
        path = f"/v1/clusters/{seg(name)}"
        # setting a state twice is setting it once
        call = Call("PATCH", path, parse_model(ClusterInfo), json=body(request), idempotent=True)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def drain(
        self, name: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> ClusterInfo:
        """``update(name, state="draining")``: no new databases go to it."""
        return await self.update(name, state="draining", timeout=timeout, max_retries=max_retries)

    async def activate(
        self, name: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> ClusterInfo:
        """``update(name, state="active")``: it takes new databases again."""
        return await self.update(name, state="active", timeout=timeout, max_retries=max_retries)

    async def remove(
        self, name: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> None:
        """Forget a cluster no database lives on (``ConflictError`` ``cluster_not_empty``
        otherwise; the home cluster: ``UnprocessableEntityError`` ``cluster_is_home``).
        Its Postgres and what it holds are left as they are."""
        call = Call("DELETE", f"/v1/clusters/{seg(name)}", parse_none)
        await self._transport.request(call, timeout=timeout, max_retries=max_retries)
