"""``mp.companies``: the companies and users flags are checked for, in the client's flags
environment (see ``AsyncMillpond(environment=...)``)::

    await mp.companies.upsert_company(keys={"id": "acme"}, name="Acme", traits={"seats": 10})
    await mp.companies.upsert_user(keys={"email": "w@acme.net"}, company={"id": "acme"})
    acme = await mp.companies.get_company({"id": "acme"})

A company or user is addressed by any of its keys. Upserts create or update (only the
fields given change; traits are merged). ``identify()`` does the same without waiting.
``list_companies()``/``list_users()`` answer one page; ``iter_companies()``/``iter_users()``
take the same filters and go on to the end, a page (``page_size``) per request.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

from ...models.flags import Company, MetricValue, TraitValue, User
from .._base import Call, TimeoutTypes, parse_list, parse_model, parse_none, segment
from .._paging import PAGE_SIZE, Pages
from ._transport import AsyncTransport
from .flags import EnvironmentSource

Kind = Literal["companies", "users"]


def _fields(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


class AsyncCompanies:
    def __init__(self, transport: AsyncTransport, environment: EnvironmentSource) -> None:
        self._transport = transport
        self._environment = environment

    async def _path(self, kind: Kind, rest: str = "") -> str:
        return f"/v1/flags/environments/{segment(await self._environment())}/{kind}{rest}"

    async def upsert_company(
        self,
        *,
        keys: Mapping[str, str],
        name: str | None = None,
        traits: Mapping[str, TraitValue] | None = None,
        plan_id: str | None = None,
        clear_plan: bool = False,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Company:
        """Create or update the company with these keys (new keys are added to it)."""
        body = _fields(keys=dict(keys), name=name, traits=traits, plan_id=plan_id)
        if clear_plan:
            body["plan_id"] = None
        call = Call(
            "POST", await self._path("companies"), parse_model(Company), json=body, idempotent=True
        )
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def upsert_user(
        self,
        *,
        keys: Mapping[str, str],
        name: str | None = None,
        traits: Mapping[str, TraitValue] | None = None,
        company: Mapping[str, str] | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> User:
        """Create or update the user with these keys; ``company``: the keys of a company it
        belongs to (created if new)."""
        body = _fields(
            keys=dict(keys), name=name, traits=traits, company=dict(company) if company else None
        )
        call = Call(
            "POST", await self._path("users"), parse_model(User), json=body, idempotent=True
        )
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def get_company(
        self,
        keys: Mapping[str, str],
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Company:
        """The company with any of these keys (``NotFoundError`` if none)."""
        path = await self._path("companies", "/lookup")
        call = Call("POST", path, parse_model(Company), json={"keys": dict(keys)}, idempotent=True)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def get_user(
        self,
        keys: Mapping[str, str],
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> User:
        """The user with any of these keys (``NotFoundError`` if none)."""
        path = await self._path("users", "/lookup")
        call = Call("POST", path, parse_model(User), json={"keys": dict(keys)}, idempotent=True)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def list_companies(
        self,
        *,
        q: str | None = None,
        plan_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[Company]:
        """One page of companies by id: at most ``limit`` (1-1000) after the id ``after``;
        ``q``: name contains; ``plan_id``: on that plan. Every one: :meth:`iter_companies`."""
        params = _page(limit, after, q=q, plan_id=plan_id)
        call = Call("GET", await self._path("companies"), parse_list(Company), params=params)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def iter_companies(
        self,
        *,
        q: str | None = None,
        plan_id: str | None = None,
        after: str | None = None,
        page_size: int = PAGE_SIZE,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> AsyncIterator[Company]:
        """Every company by id, as :meth:`list_companies` but to the end: ``page_size``
        (1-1000) per request, each page fetched when the loop reaches it."""
        params = _filters(q=q, plan_id=plan_id)
        call = Call("GET", await self._path("companies"), parse_list(Company), params=params)
        pages = Pages(call, _id, size=page_size, start=after)
        async for company in self._transport.iterate(
            pages, timeout=timeout, max_retries=max_retries
        ):
            yield company

    async def list_users(
        self,
        *,
        q: str | None = None,
        company_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[User]:
        """One page of users by id: at most ``limit`` (1-1000) after the id ``after``;
        ``q``: name contains; ``company_id``: members of that company. Every one:
        :meth:`iter_users`."""
        params = _page(limit, after, q=q, company_id=company_id)
        call = Call("GET", await self._path("users"), parse_list(User), params=params)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def iter_users(
        self,
        *,
        q: str | None = None,
        company_id: str | None = None,
        after: str | None = None,
        page_size: int = PAGE_SIZE,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> AsyncIterator[User]:
        """Every user by id, as :meth:`list_users` but to the end."""
        params = _filters(q=q, company_id=company_id)
        call = Call("GET", await self._path("users"), parse_list(User), params=params)
        pages = Pages(call, _id, size=page_size, start=after)
        async for user in self._transport.iterate(pages, timeout=timeout, max_retries=max_retries):
            yield user

    async def delete_company(
        self, company_id: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> None:
        """Delete a company (by its id) with its overrides and counters."""
        path = await self._path("companies", f"/{segment(company_id)}")
        call = Call("DELETE", path, parse_none)
        await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def delete_user(
        self, user_id: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> None:
        """Delete a user (by its id)."""
        path = await self._path("users", f"/{segment(user_id)}")
        call = Call("DELETE", path, parse_none)
        await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def company_metrics(
        self, company_id: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> builtins.list[MetricValue]:
        """The company's usage counters, as of now."""
        path = await self._path("companies", f"/{segment(company_id)}/metrics")
        call = Call("GET", path, parse_list(MetricValue))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def user_metrics(
        self, user_id: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> builtins.list[MetricValue]:
        """The user's usage counters, as of now."""
        path = await self._path("users", f"/{segment(user_id)}/metrics")
        call = Call("GET", path, parse_list(MetricValue))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)


def _page(limit: int, after: str | None, **filters: str | None) -> dict[str, str]:
    params = {"limit": str(limit)}
    if after is not None:
        params["after"] = after
    params.update(_filters(**filters))
    return params


def _filters(**filters: str | None) -> dict[str, str]:
    return {k: v for k, v in filters.items() if v is not None}


def _id(item: Company | User) -> str:
    return item.id
