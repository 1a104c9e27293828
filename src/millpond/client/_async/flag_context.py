"""``mp.flag_context(...)``: flypper-style request contexts — one consistent snapshot of
every flag for one company/user, taken at the first question::

    async with mp.flag_context(user_id="42", company_id="acme") as ctx:
        if await ctx.is_enabled("new-editor"): ...
        await ctx.is_disabled("old-editor")
        await ctx.is_enabled("beta", user={"id": "7"})  # per call: its own check

Entries ``<entity>_<key>=value`` name the company and user by their keys
(``user_id="42"`` is ``user={"id": "42"}``, ``company_domain="acme.net"`` is
``company={"domain": "acme.net"}``); ``company=``/``user=`` mappings give them directly.
A question with its own entries merges them over the context's and is checked on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

from ...models.flags import FlagCheck

Keys = dict[str, str]


class CheckAll(Protocol):
    async def __call__(self, company: Keys | None, user: Keys | None) -> Sequence[FlagCheck]: ...


class CheckOne(Protocol):
    async def __call__(self, flag: str, company: Keys | None, user: Keys | None) -> FlagCheck: ...


def entities(
    company: Mapping[str, str] | None, user: Mapping[str, str] | None, entries: Mapping[str, Any]
) -> tuple[Keys | None, Keys | None]:
    """The company and user keys of a context or a question (entries over mappings)."""
    found: dict[str, Keys] = {"company": dict(company or {}), "user": dict(user or {})}
    for name, value in entries.items():
        entity, sep, key = name.partition("_")
        if not sep or not key or entity not in found:
            raise TypeError(
                f"unknown flag context entry {name!r}: use company_<key>=... or user_<key>=..."
                " (e.g. user_id='42'), or company={...} / user={...}"
            )
        found[entity][key] = str(value)
    return found["company"] or None, found["user"] or None


class AsyncFlagContext:
    def __init__(
        self,
        check_all: CheckAll,
        check_one: CheckOne,
        company: Keys | None,
        user: Keys | None,
    ) -> None:
        self._check_all = check_all
        self._check_one = check_one
        self.company = company
        self.user = user
        self._snapshot: dict[str, FlagCheck] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._snapshot = None

    async def details(
        self,
        flag: str,
        *,
        company: Mapping[str, str] | None = None,
        user: Mapping[str, str] | None = None,
        **entries: Any,
    ) -> FlagCheck:
        """The check of ``flag``: from the context's snapshot, or its own check when the
        question names a company or user of its own."""
        if company or user or entries:
            c, u = entities(company, user, entries)
            return await self._check_one(
                flag,
                {**(self.company or {}), **(c or {})} or None,
                {**(self.user or {}), **(u or {})} or None,
            )
        if self._snapshot is None:
            checks = await self._check_all(self.company, self.user)
            self._snapshot = {check.flag: check for check in checks}
        found = self._snapshot.get(flag)
        if found is None:  # not a live flag (as the server would say)
            return FlagCheck(flag=flag, value=False, reason="FLAG_NOT_FOUND")
        return found

    async def is_enabled(
        self,
        flag: str,
        *,
        company: Mapping[str, str] | None = None,
        user: Mapping[str, str] | None = None,
        **entries: Any,
    ) -> bool:
        return (await self.details(flag, company=company, user=user, **entries)).value

    async def is_disabled(
        self,
        flag: str,
        *,
        company: Mapping[str, str] | None = None,
        user: Mapping[str, str] | None = None,
        **entries: Any,
    ) -> bool:
        return not (await self.details(flag, company=company, user=user, **entries)).value
