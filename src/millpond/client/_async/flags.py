"""``mp.flags``: manage the flags of the client's flags environment (checking them is
``mp.check_flag``)::

    await mp.flags.create("new-editor", name="New editor", rules=[{"value": True, ...}])
    await mp.flags.toggle("new-editor")            # flips its default value
    await mp.flags.delete("new-editor")            # soft: restore() brings it back

Rules are JSON objects as the API takes them (see docs/api.md, "Feature flags"); one rule at
a time with ``add_rule``/``get_rule``/``replace_rule``/``delete_rule``. Entitlements: a flag
gates a feature (``create_feature``), a plan (``create_plan``) entitles its companies to
features (``create_entitlement``), a company override (``create_override``) replaces its
plan's grant; each has ``get_*``, ``update_*``, ``delete_*`` and a list (``features()``...).
Every change is audited (``mp.flags.audit()``) and bumps the environment's version;
recorded checks are in ``mp.flags.checks()``.

A list method answers one page; its ``iter*`` twin (``iter()``, ``iter_features()``,
``iter_audit()``...) takes the same filters and goes on to the end, fetching ``page_size``
items per request as the loop asks for them::

    async for flag in mp.flags.iter(include_deleted=True):
        print(flag.key)
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar

from ...models import ApiKey, ApiKeyCreated, KeyScope
from ...models.flags import (
    AuditEntry,
    CheckRecord,
    CompanyOverride,
    Entitlement,
    EntitlementValueType,
    Environment,
    EnvironmentType,
    EventRecord,
    Feature,
    FeatureType,
    Flag,
    FlagRuleset,
    MetricAggregation,
    MetricPeriod,
    Plan,
    Rule,
)
from .._base import Call, M, TimeoutTypes, parse_list, parse_model, parse_none, segment
from .._paging import PAGE_SIZE, Cursor, Pages
from ._transport import AsyncTransport

T = TypeVar("T")


class EnvironmentSource(Protocol):
    """Resolves the client's flags environment (its id or name)."""

    async def __call__(self) -> str: ...


RuleInput = Mapping[str, Any]


def _given(**values: Any) -> dict[str, Any]:
    """The fields given (not None), datetimes as ISO 8601."""
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in values.items()
        if value is not None
    }


def _page(limit: int, after: str | None = None, **filters: str | None) -> dict[str, str]:
    return {"limit": str(limit), **_given(after=after, **filters)}


def _key(flag: Flag) -> str:
    return flag.key


def _seq(record: EventRecord) -> Cursor:
    return record.seq


def _id(item: Any) -> Cursor:
    """The cursor of the lists paged by id."""
    cursor: Cursor = item.id
    return cursor


class AsyncFlags:
    def __init__(self, transport: AsyncTransport, environment: EnvironmentSource) -> None:
        self._transport = transport
        self._environment = environment

    async def _path(self, rest: str = "") -> str:
        return f"/v1/flags/environments/{segment(await self._environment())}{rest}"

    async def _keys_path(self, environment: str | None, rest: str = "") -> str:
        """The keys of ``environment`` (default: the client's)."""
        env = environment if environment is not None else await self._environment()
        return f"/v1/flags/environments/{segment(env)}/keys{rest}"

    async def _flag(self, key: str, rest: str = "") -> str:
        return await self._path(f"/flags/{segment(key)}{rest}")

    async def _send(
        self,
        method: str,
        rest: str,
        parse: Callable[[bytes], T],
        timeout: TimeoutTypes,
        max_retries: int | None,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> T:
        """One call to ``<environment path><rest>``; a PATCH (it sets fields) may be sent
        twice."""
        again = True if method == "PATCH" else None
        path = await self._path(rest)
        call = Call(method, path, parse, json=json, params=params, idempotent=again)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def _each(
        self,
        rest: str,
        model: type[M],
        cursor: Callable[[M], Cursor],
        filters: Mapping[str, str | None],
        start: Cursor | None,
        page_size: int,
        timeout: TimeoutTypes,
        max_retries: int | None,
        *,
        param: str = "after",
    ) -> AsyncIterator[M]:
        """Every item of the paged list at ``<environment path><rest>``, page by page."""
        call = Call("GET", await self._path(rest), parse_list(model), params=_given(**filters))
        pages = Pages(call, cursor, param=param, size=page_size, start=start)
        async for item in self._transport.iterate(pages, timeout=timeout, max_retries=max_retries):
            yield item

    # -- environments ----------------------------------------------------------------------

    async def environments(
        self, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> builtins.list[Environment]:
        """Every environment of your account (an account key, not a bound one), in one
        answer: this list is not paged."""
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
        path = await self._keys_path(environment)
        body = {"name": name, "scope": scope}
        call = Call("POST", path, parse_model(ApiKeyCreated), json=body)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def keys(
        self,
        *,
        environment: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[ApiKey]:
        """The keys bound to ``environment`` (default: the client's), without their
        secrets, in one answer: this list is not paged."""
        call = Call("GET", await self._keys_path(environment), parse_list(ApiKey))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def revoke_key(
        self,
        key_id: str,
        *,
        environment: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> None:
        """Revoke a key bound to ``environment`` (default: the client's): at once, on
        every server."""
        path = await self._keys_path(environment, f"/{segment(key_id)}")
        call = Call("DELETE", path, parse_none)
        await self._transport.request(call, timeout=timeout, max_retries=max_retries)

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
        """One page of flags by key: at most ``limit`` (1-1000) after the key ``after``;
        every flag: :meth:`iter`. ``include_deleted`` adds soft-deleted ones;
        ``since_version``: every flag changed after that environment version, in one answer
        (delta sync; ``limit`` and ``after`` do not apply)."""
        params = {"limit": str(limit), "include_deleted": str(include_deleted).lower()}
        if since_version is not None:
            params["since_version"] = str(since_version)
        if after is not None:
            params["after"] = after
        call = Call("GET", await self._path("/flags"), parse_list(Flag), params=params)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def iter(
        self,
        *,
        include_deleted: bool = False,
        after: str | None = None,
        page_size: int = PAGE_SIZE,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> AsyncIterator[Flag]:
        """Every flag by key (after the key ``after``), as :meth:`list` but to the end:
        ``page_size`` (1-1000) per request, each page fetched when the loop reaches it."""
        filters = {"include_deleted": str(include_deleted).lower()}
        flags = self._each("/flags", Flag, _key, filters, after, page_size, timeout, max_retries)
        async for flag in flags:
            yield flag

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
        clear_feature: bool = False,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Flag:
        """Change the fields given (the others stay); ``clear_feature``: gate no feature."""
        body = _given(name=name, description=description, default_value=default_value)
        if feature_id is not None or clear_feature:
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

    async def add_rule(
        self,
        key: str,
        rule: RuleInput,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Rule:
        """Add one rule to the flag (its ``id`` is made when not given)."""
        path = f"/flags/{segment(key)}/rules"
        return await self._send("POST", path, parse_model(Rule), timeout, max_retries, json=rule)

    async def get_rule(
        self,
        key: str,
        rule_id: str,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Rule:
        path = f"/flags/{segment(key)}/rules/{segment(rule_id)}"
        return await self._send("GET", path, parse_model(Rule), timeout, max_retries)

    async def replace_rule(
        self,
        key: str,
        rule_id: str,
        rule: RuleInput,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Rule:
        """Replace one rule of the flag (it keeps its id and place)."""
        path = f"/flags/{segment(key)}/rules/{segment(rule_id)}"
        return await self._send("PUT", path, parse_model(Rule), timeout, max_retries, json=rule)

    async def delete_rule(
        self,
        key: str,
        rule_id: str,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> None:
        path = f"/flags/{segment(key)}/rules/{segment(rule_id)}"
        await self._send("DELETE", path, parse_none, timeout, max_retries)

    async def ruleset(
        self, key: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> FlagRuleset:
        """Everything that decides the flag: itself, its rules, feature and entitlements."""
        call = Call("GET", await self._flag(key, "/ruleset"), parse_model(FlagRuleset))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def rulesets(
        self,
        *,
        since_version: int | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[FlagRuleset]:
        """Every live flag's ruleset; ``since_version``: those changed after that
        environment version, deleted ones included (``flag.deleted_at`` set), by version
        (delta sync)."""
        params = {} if since_version is None else {"since_version": str(since_version)}
        call = Call("GET", await self._path("/rulesets"), parse_list(FlagRuleset), params=params)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def events(
        self,
        *,
        event_type: Literal["identify", "track"] | None = None,
        event: str | None = None,
        company_id: str | None = None,
        user_id: str | None = None,
        limit: int = 100,
        before: int | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[EventRecord]:
        """One page of the identify and track events received, newest first: at most
        ``limit`` (1-1000) older than the ``seq`` ``before``, filtered by type, event name,
        company or user id; every event: :meth:`iter_events`."""
        params = {"limit": str(limit)}
        params |= _given(
            event_type=event_type,
            event=event,
            company_id=company_id,
            user_id=user_id,
            before=None if before is None else str(before),
        )
        call = Call("GET", await self._path("/events"), parse_list(EventRecord), params=params)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def iter_events(
        self,
        *,
        event_type: Literal["identify", "track"] | None = None,
        event: str | None = None,
        company_id: str | None = None,
        user_id: str | None = None,
        before: int | None = None,
        page_size: int = PAGE_SIZE,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> AsyncIterator[EventRecord]:
        """Every event, newest first, as :meth:`events` but to the oldest."""
        filters = {
            "event_type": event_type,
            "event": event,
            "company_id": company_id,
            "user_id": user_id,
        }
        records = self._each(
            "/events",
            EventRecord,
            _seq,
            filters,
            before,
            page_size,
            timeout,
            max_retries,
            param="before",
        )
        async for record in records:
            yield record

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
        """One page of who changed what, newest first (``entity="flag",
        entity_id=<flag id>``...): at most ``limit`` (1-1000) older than the entry id
        ``before``; every entry: :meth:`iter_audit`."""
        params = {"limit": str(limit)}
        for name, value in (("entity", entity), ("entity_id", entity_id), ("before", before)):
            if value is not None:
                params[name] = str(value)
        call = Call("GET", await self._path("/audit"), parse_list(AuditEntry), params=params)
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def iter_audit(
        self,
        *,
        entity: str | None = None,
        entity_id: str | None = None,
        before: int | None = None,
        page_size: int = PAGE_SIZE,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> AsyncIterator[AuditEntry]:
        """Every audit entry, newest first, as :meth:`audit` but to the end."""
        filters = {"entity": entity, "entity_id": entity_id}
        entries = self._each(
            "/audit",
            AuditEntry,
            _id,
            filters,
            before,
            page_size,
            timeout,
            max_retries,
            param="before",
        )
        async for entry in entries:
            yield entry

    async def checks(
        self,
        *,
        flag: str | None = None,
        limit: int = 100,
        before: int | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[CheckRecord]:
        """One page of recorded checks, newest first (checks are recorded with the
        server's ``MILLPOND_FLAGS_RECORD_CHECKS`` or ``?record=true``); ``flag``: one flag's;
        at most ``limit`` (1-1000) older than the check id ``before``; every one:
        :meth:`iter_checks`."""
        params = _page(limit, flag=flag, before=None if before is None else str(before))
        return await self._send(
            "GET", "/checks", parse_list(CheckRecord), timeout, max_retries, params=params
        )

    async def iter_checks(
        self,
        *,
        flag: str | None = None,
        before: int | None = None,
        page_size: int = PAGE_SIZE,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> AsyncIterator[CheckRecord]:
        """Every recorded check, newest first, as :meth:`checks` but to the end."""
        checks = self._each(
            "/checks",
            CheckRecord,
            _id,
            {"flag": flag},
            before,
            page_size,
            timeout,
            max_retries,
            param="before",
        )
        async for check in checks:
            yield check

    # -- features ------------------------------------------------------------------------

    async def features(
        self,
        *,
        limit: int = 100,
        after: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[Feature]:
        """One page of features by id: at most ``limit`` (1-1000) after the id ``after``;
        every one: :meth:`iter_features`."""
        params = _page(limit, after)
        return await self._send(
            "GET", "/features", parse_list(Feature), timeout, max_retries, params=params
        )

    async def iter_features(
        self,
        *,
        after: str | None = None,
        page_size: int = PAGE_SIZE,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> AsyncIterator[Feature]:
        """Every feature by id, as :meth:`features` but to the end."""
        features = self._each("/features", Feature, _id, {}, after, page_size, timeout, max_retries)
        async for feature in features:
            yield feature

    async def get_feature(
        self, feature_id: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> Feature:
        path = f"/features/{segment(feature_id)}"
        return await self._send("GET", path, parse_model(Feature), timeout, max_retries)

    async def create_feature(
        self,
        feature_id: str | None = None,
        *,
        name: str = "",
        description: str = "",
        feature_type: FeatureType = "boolean",
        event_name: str | None = None,
        metric_aggregation: MetricAggregation = "count",
        trait_key: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Feature:
        """A feature plans and overrides grant: on/off (``boolean``), metered by a track
        event (``event``, with ``event_name``) or by a company trait (``trait``, with
        ``trait_key``). Without ``feature_id`` the server makes one."""
        fields = _given(id=feature_id, event_name=event_name, trait_key=trait_key)
        body = {
            **fields,
            "name": name,
            "description": description,
            "feature_type": feature_type,
            "metric_aggregation": metric_aggregation,
        }
        return await self._send(
            "POST", "/features", parse_model(Feature), timeout, max_retries, json=body
        )

    async def update_feature(
        self,
        feature_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        feature_type: FeatureType | None = None,
        event_name: str | None = None,
        metric_aggregation: MetricAggregation | None = None,
        trait_key: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Feature:
        """Change the fields given (the others stay)."""
        body = _given(
            name=name,
            description=description,
            feature_type=feature_type,
            event_name=event_name,
            metric_aggregation=metric_aggregation,
            trait_key=trait_key,
        )
        path = f"/features/{segment(feature_id)}"
        return await self._send(
            "PATCH", path, parse_model(Feature), timeout, max_retries, json=body
        )

    async def delete_feature(
        self, feature_id: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> None:
        path = f"/features/{segment(feature_id)}"
        await self._send("DELETE", path, parse_none, timeout, max_retries)

    # -- plans ---------------------------------------------------------------------------

    async def plans(
        self,
        *,
        limit: int = 100,
        after: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[Plan]:
        """One page of plans by id: at most ``limit`` (1-1000) after the id ``after``;
        every one: :meth:`iter_plans`."""
        params = _page(limit, after)
        return await self._send(
            "GET", "/plans", parse_list(Plan), timeout, max_retries, params=params
        )

    async def iter_plans(
        self,
        *,
        after: str | None = None,
        page_size: int = PAGE_SIZE,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> AsyncIterator[Plan]:
        """Every plan by id, as :meth:`plans` but to the end."""
        plans = self._each("/plans", Plan, _id, {}, after, page_size, timeout, max_retries)
        async for plan in plans:
            yield plan

    async def get_plan(
        self, plan_id: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> Plan:
        path = f"/plans/{segment(plan_id)}"
        return await self._send("GET", path, parse_model(Plan), timeout, max_retries)

    async def create_plan(
        self,
        plan_id: str | None = None,
        *,
        name: str = "",
        description: str = "",
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Plan:
        """A plan companies are put on (``upsert_company(plan_id=...)``); its entitlements
        grant features. Without ``plan_id`` the server makes one."""
        body = {**_given(id=plan_id), "name": name, "description": description}
        return await self._send(
            "POST", "/plans", parse_model(Plan), timeout, max_retries, json=body
        )

    async def update_plan(
        self,
        plan_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Plan:
        body = _given(name=name, description=description)
        path = f"/plans/{segment(plan_id)}"
        return await self._send("PATCH", path, parse_model(Plan), timeout, max_retries, json=body)

    async def delete_plan(
        self, plan_id: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> None:
        path = f"/plans/{segment(plan_id)}"
        await self._send("DELETE", path, parse_none, timeout, max_retries)

    # -- entitlements (a plan's grants) and overrides (a company's own) -------------------

    async def entitlements(
        self,
        *,
        plan_id: str | None = None,
        feature_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[Entitlement]:
        """One page of entitlements by id, of one plan and/or one feature if given: at
        most ``limit`` (1-1000) after the id ``after``; every one: :meth:`iter_entitlements`."""
        params = _page(limit, after, plan_id=plan_id, feature_id=feature_id)
        return await self._send(
            "GET", "/entitlements", parse_list(Entitlement), timeout, max_retries, params=params
        )

    async def iter_entitlements(
        self,
        *,
        plan_id: str | None = None,
        feature_id: str | None = None,
        after: str | None = None,
        page_size: int = PAGE_SIZE,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> AsyncIterator[Entitlement]:
        """Every entitlement by id, as :meth:`entitlements` but to the end."""
        filters = {"plan_id": plan_id, "feature_id": feature_id}
        found = self._each(
            "/entitlements", Entitlement, _id, filters, after, page_size, timeout, max_retries
        )
        async for entitlement in found:
            yield entitlement

    async def get_entitlement(
        self, entitlement_id: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> Entitlement:
        path = f"/entitlements/{segment(entitlement_id)}"
        return await self._send("GET", path, parse_model(Entitlement), timeout, max_retries)

    async def create_entitlement(
        self,
        *,
        plan_id: str,
        feature_id: str,
        value_type: EntitlementValueType,
        value_bool: bool | None = None,
        value_numeric: int | None = None,
        value_trait_key: str | None = None,
        metric_period: MetricPeriod = "all_time",
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Entitlement:
        """Entitle ``plan_id`` to ``feature_id``: ``boolean`` (``value_bool``, default
        granted), ``numeric`` (a limit, ``value_numeric``, per ``metric_period``),
        ``unlimited``, or ``trait`` (the limit in the company trait ``value_trait_key``)."""
        body = _given(
            plan_id=plan_id,
            feature_id=feature_id,
            value_type=value_type,
            value_bool=value_bool,
            value_numeric=value_numeric,
            value_trait_key=value_trait_key,
            metric_period=metric_period,
        )
        return await self._send(
            "POST", "/entitlements", parse_model(Entitlement), timeout, max_retries, json=body
        )

    async def update_entitlement(
        self,
        entitlement_id: str,
        *,
        value_type: EntitlementValueType | None = None,
        value_bool: bool | None = None,
        value_numeric: int | None = None,
        value_trait_key: str | None = None,
        metric_period: MetricPeriod | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Entitlement:
        """Change the grant's fields given (its plan and feature stay)."""
        body = _given(
            value_type=value_type,
            value_bool=value_bool,
            value_numeric=value_numeric,
            value_trait_key=value_trait_key,
            metric_period=metric_period,
        )
        path = f"/entitlements/{segment(entitlement_id)}"
        return await self._send(
            "PATCH", path, parse_model(Entitlement), timeout, max_retries, json=body
        )

    async def delete_entitlement(
        self, entitlement_id: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> None:
        path = f"/entitlements/{segment(entitlement_id)}"
        await self._send("DELETE", path, parse_none, timeout, max_retries)

    async def overrides(
        self,
        *,
        company_id: str | None = None,
        feature_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[CompanyOverride]:
        """One page of company overrides by id, of one company and/or one feature if
        given: at most ``limit`` (1-1000) after the id ``after``; every one:
        :meth:`iter_overrides`."""
        params = _page(limit, after, company_id=company_id, feature_id=feature_id)
        return await self._send(
            "GET", "/overrides", parse_list(CompanyOverride), timeout, max_retries, params=params
        )

    async def iter_overrides(
        self,
        *,
        company_id: str | None = None,
        feature_id: str | None = None,
        after: str | None = None,
        page_size: int = PAGE_SIZE,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> AsyncIterator[CompanyOverride]:
        """Every company override by id, as :meth:`overrides` but to the end."""
        filters = {"company_id": company_id, "feature_id": feature_id}
        found = self._each(
            "/overrides", CompanyOverride, _id, filters, after, page_size, timeout, max_retries
        )
        async for override in found:
            yield override

    async def get_override(
        self, override_id: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> CompanyOverride:
        path = f"/overrides/{segment(override_id)}"
        return await self._send("GET", path, parse_model(CompanyOverride), timeout, max_retries)

    async def create_override(
        self,
        *,
        feature_id: str,
        value_type: EntitlementValueType,
        company_id: str | None = None,
        company: Mapping[str, str] | None = None,
        value_bool: bool | None = None,
        value_numeric: int | None = None,
        value_trait_key: str | None = None,
        metric_period: MetricPeriod = "all_time",
        expires_at: datetime | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> CompanyOverride:
        """Grant one company (by ``company_id`` or by its keys, ``company={...}``) a feature
        of its own, replacing its plan's entitlement to it until ``expires_at`` (a timezone
        aware datetime; None: never). The grant's fields are as for entitlements."""
        body = _given(
            feature_id=feature_id,
            value_type=value_type,
            company_id=company_id,
            company=None if company is None else dict(company),
            value_bool=value_bool,
            value_numeric=value_numeric,
            value_trait_key=value_trait_key,
            metric_period=metric_period,
            expires_at=expires_at,
        )
        return await self._send(
            "POST", "/overrides", parse_model(CompanyOverride), timeout, max_retries, json=body
        )

    async def update_override(
        self,
        override_id: str,
        *,
        value_type: EntitlementValueType | None = None,
        value_bool: bool | None = None,
        value_numeric: int | None = None,
        value_trait_key: str | None = None,
        metric_period: MetricPeriod | None = None,
        expires_at: datetime | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> CompanyOverride:
        """Change the override's fields given (its company and feature stay)."""
        body = _given(
            value_type=value_type,
            value_bool=value_bool,
            value_numeric=value_numeric,
            value_trait_key=value_trait_key,
            metric_period=metric_period,
            expires_at=expires_at,
        )
        path = f"/overrides/{segment(override_id)}"
        return await self._send(
            "PATCH", path, parse_model(CompanyOverride), timeout, max_retries, json=body
        )

    async def delete_override(
        self, override_id: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> None:
        path = f"/overrides/{segment(override_id)}"
        await self._send("DELETE", path, parse_none, timeout, max_retries)
