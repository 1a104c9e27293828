"""``mp.flags``: manage the flags of the client's flags environment (checking them is
``mp.check_flag``)::

    await mp.flags.create("new-editor", name="New editor", rules=[{"value": True, ...}])
    await mp.flags.toggle("new-editor")            # flips its default value
    await mp.flags.delete("new-editor")            # soft: restore() brings it back

Rules are JSON objects as the API takes them (see docs/api.md, "Feature flags"). Every
change is audited (``mp.flags.audit()``) and bumps the environment's version.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ...models import ApiKeyCreated, KeyScope
from ...models.flags import AuditEntry, Environment, EnvironmentType, Flag, FlagRuleset, Rule
from .._base import Call, TimeoutTypes, parse_list, parse_model, parse_none, segment
from ._transport import AsyncTransport


class EnvironmentSource(Protocol):
    """Resolves the client's flags environment (its id or name)."""

    async def __call__(self) -> str: ...


RuleInput = Mapping[str, Any]


class AsyncFlags:
    def __init__(self, transport: AsyncTransport, environment: EnvironmentSource) -> None:
        self._transport = transport
        self._environment = environment

    async def _path(self, rest: str = "") -> str:
        return f"/v1/flags/environments/{segment(await self._environment())}{rest}"

    async def _flag(self, key: str, rest: str = "") -> str:
        return await self._path(f"/flags/{segment(key)}{rest}")

    # -- environments ----------------------------------------------------------------------

    async def environments(
        self, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> builtins.list[Environment]:
        """Your account's environments (an account key, not a bound one)."""
        call = Call("GET", "/v1/flags/environments", parse_list(Environment))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def create_environment(
        self,
        name: str,
        *,
        environment_type: EnvironmentType | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Environment:
        """A new environment of your account (e.g. "production")."""
        body: dict[str, Any] = {"name": name}
        if environment_type is not None:
            body["environment_type"] = environment_type
        call = Call("POST", "/v1/flags/environments", parse_model(Environment), json=body)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def create_key(
        self,
        *,
        environment: str | None = None,
        name: str | None = None,
        scope: KeyScope = "write",
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> ApiKeyCreated:
        """A key bound to ``environment`` (default: the client's): it reaches that
        environment's flags only — the key to give an application."""
        env = environment if environment is not None else await self._environment()
        path = f"/v1/flags/environments/{segment(env)}/keys"
        body = {"name": name, "scope": scope}
        call = Call("POST", path, parse_model(ApiKeyCreated), json=body)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    # -- flags ---------------------------------------------------------------------------

    async def list(
        self,
        *,
        include_deleted: bool = False,
        since_version: int | None = None,
        limit: int = 100,
        after: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[Flag]:
        """Flags by key; ``include_deleted`` adds soft-deleted ones; ``since_version``:
        only those changed after that environment version (delta sync)."""
        params = {"limit": str(limit), "include_deleted": str(include_deleted).lower()}
        if since_version is not None:
            params["since_version"] = str(since_version)
        if after is not None:
            params["after"] = after
        call = Call("GET", await self._path("/flags"), parse_list(Flag), params=params)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def get(
        self,
        key: str,
        *,
        include_deleted: bool = False,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Flag:
        params = {"include_deleted": str(include_deleted).lower()}
        call = Call("GET", await self._flag(key), parse_model(Flag), params=params)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def create(
        self,
        key: str,
        *,
        name: str = "",
        description: str = "",
        default_value: bool = False,
        feature_id: str | None = None,
        rules: Sequence[RuleInput] = (),
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Flag:
        body = {
            "key": key,
            "name": name,
            "description": description,
            "default_value": default_value,
            "feature_id": feature_id,
            "rules": [dict(r) for r in rules],
        }
        call = Call("POST", await self._path("/flags"), parse_model(Flag), json=body)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def update(
        self,
        key: str,
        *,
        name: str | None = None,
        description: str | None = None,
        default_value: bool | None = None,
        feature_id: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Flag:
        """Change the fields given (the others stay)."""
        fields = {"name": name, "description": description, "default_value": default_value}
        body = {k: v for k, v in fields.items() if v is not None}
        if feature_id is not None:
            body["feature_id"] = feature_id
        call = Call("PATCH", await self._flag(key), parse_model(Flag), json=body, idempotent=True)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def toggle(
        self,
        key: str,
        value: bool | None = None,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Flag:
        """Set the flag's default value to ``value``, or flip it (None)."""
        if value is None:
            current = await self.get(key, timeout=timeout, max_retries=max_retries)
            value = not current.default_value
        return await self.update(key, default_value=value, timeout=timeout, max_retries=max_retries)

    async def delete(
        self, key: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> None:
        """Soft-delete: checks answer FLAG_NOT_FOUND until :meth:`restore`."""
        call = Call("DELETE", await self._flag(key), parse_none)
        await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def restore(
        self, key: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> Flag:
        call = Call("POST", await self._flag(key, "/restore"), parse_model(Flag), idempotent=True)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def purge(
        self, key: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> None:
        """Hard delete a flag already deleted (409 ``flag_not_deleted`` otherwise)."""
        call = Call("POST", await self._flag(key, "/purge"), parse_none)
        await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def rules(
        self, key: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> builtins.list[Rule]:
        call = Call("GET", await self._flag(key, "/rules"), parse_list(Rule))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def set_rules(
        self,
        key: str,
        rules: Sequence[RuleInput],
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[Rule]:
        """Replace all of the flag's rules (in one change)."""
        body = {"rules": [dict(r) for r in rules]}
        path = await self._flag(key, "/rules")
        call = Call("PUT", path, parse_list(Rule), json=body, idempotent=True)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def ruleset(
        self, key: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> FlagRuleset:
        """Everything that decides the flag: itself, its rules, feature and entitlements."""
        call = Call("GET", await self._flag(key, "/ruleset"), parse_model(FlagRuleset))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def audit(
        self,
        *,
        entity: str | None = None,
        entity_id: str | None = None,
        limit: int = 100,
        before: int | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[AuditEntry]:
        """Who changed what, newest first (``entity="flag", entity_id=<flag id>``...)."""
        params = {"limit": str(limit)}
        for name, value in (("entity", entity), ("entity_id", entity_id), ("before", before)):
            if value is not None:
                params[name] = str(value)
        call = Call("GET", await self._path("/audit"), parse_list(AuditEntry), params=params)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)
