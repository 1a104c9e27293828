"""What a check is evaluated against: the resolved company and user (ids, keys, traits, plan,
usage metrics, overrides) and the current time. Built once per request (or cached by the
SDK per company/user) and reused for every flag checked."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from millpond.models.flags import (
    Company,
    CompanyOverride,
    MetricAggregation,
    MetricPeriod,
    MetricValue,
    User,
)

from ._time import utc

MetricKey = tuple[str, MetricPeriod, MetricAggregation]
"""(event name, period, aggregation), e.g. ``("api-call", "current_month", "count")``."""

MetricsInput = Mapping[MetricKey, float] | Iterable[MetricValue] | None
"""Usage figures: a mapping :data:`MetricKey` → value, or :class:`MetricValue` models."""

_EMPTY: Mapping[Any, Any] = MappingProxyType({})


def _keys(keys: Mapping[str, object] | None) -> Mapping[str, str]:
    if not keys:
        return _EMPTY
    return {str(name): str(value) for name, value in keys.items() if value is not None}


def _metrics(metrics: MetricsInput) -> Mapping[MetricKey, float]:
    if not metrics:
        return _EMPTY
    if isinstance(metrics, Mapping):
        return dict(metrics)
    return {(m.event, m.period, m.aggregation): m.value for m in metrics}


def _overrides(
    overrides: Iterable[CompanyOverride] | None,
) -> Mapping[str, tuple[CompanyOverride, ...]]:
    if not overrides:
        return _EMPTY
    by_feature: dict[str, tuple[CompanyOverride, ...]] = {}
    for override in overrides:
        by_feature[override.feature_id] = (*by_feature.get(override.feature_id, ()), override)
    return by_feature


class CompanyContext:
    """A resolved company: its id, keys, traits, plan, usage metrics and overrides
    (any number per feature; the first active one applies)."""

    __slots__ = ("id", "keys", "metrics", "overrides", "plan_id", "traits")

    def __init__(
        self,
        id: str | None = None,
        *,
        keys: Mapping[str, object] | None = None,
        traits: Mapping[str, object] | None = None,
        plan_id: str | None = None,
        metrics: MetricsInput = None,
        overrides: Iterable[CompanyOverride] | None = None,
    ) -> None:
        self.id = id
        self.keys = _keys(keys)
        self.traits: Mapping[str, object] = traits if traits is not None else _EMPTY
        self.plan_id = plan_id
        self.metrics = _metrics(metrics)
        self.overrides = _overrides(overrides)

    @classmethod
    def from_model(
        cls,
        company: Company | Mapping[str, Any],
        *,
        metrics: MetricsInput = None,
        overrides: Iterable[CompanyOverride | Mapping[str, Any]] | None = None,
    ) -> CompanyContext:
        """From the wire models (or their JSON form)."""
        model = company if isinstance(company, Company) else Company.model_validate(company)
        return cls(
            model.id,
            keys=model.keys,
            traits=model.traits,
            plan_id=model.plan_id,
            metrics=metrics,
            overrides=[
                o if isinstance(o, CompanyOverride) else CompanyOverride.model_validate(o)
                for o in overrides or ()
            ],
        )

    def __repr__(self) -> str:
        return f"CompanyContext(id={self.id!r}, keys={dict(self.keys)!r}, plan_id={self.plan_id!r})"


class UserContext:
    """A resolved user: its id, keys, traits and usage metrics."""

    __slots__ = ("id", "keys", "metrics", "traits")

    def __init__(
        self,
        id: str | None = None,
        *,
        keys: Mapping[str, object] | None = None,
        traits: Mapping[str, object] | None = None,
        metrics: MetricsInput = None,
    ) -> None:
        self.id = id
        self.keys = _keys(keys)
        self.traits: Mapping[str, object] = traits if traits is not None else _EMPTY
        self.metrics = _metrics(metrics)

    @classmethod
    def from_model(
        cls, user: User | Mapping[str, Any], *, metrics: MetricsInput = None
    ) -> UserContext:
        """From the wire model (or its JSON form)."""
        model = user if isinstance(user, User) else User.model_validate(user)
        return cls(model.id, keys=model.keys, traits=model.traits, metrics=metrics)

    def __repr__(self) -> str:
        return f"UserContext(id={self.id!r}, keys={dict(self.keys)!r})"


class EvalContext:
    """The company and user a check is for (either may be None: conditions on it are then
    false) and the time it happens at (None: the clock, read only when an override's expiry
    or a usage reset needs it)."""

    __slots__ = ("company", "now", "user")

    def __init__(
        self,
        company: CompanyContext | None = None,
        user: UserContext | None = None,
        now: datetime | None = None,
    ) -> None:
        self.company = company
        self.user = user
        self.now = utc(now) if now is not None else None

    def current_time(self) -> datetime:
        """``now`` if given, else the current UTC time."""
        return self.now if self.now is not None else datetime.now(UTC)

    def __repr__(self) -> str:
        return f"EvalContext(company={self.company!r}, user={self.user!r}, now={self.now!r})"
