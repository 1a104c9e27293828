"""Request bodies and the few response shapes of the flags API that
:mod:`millpond.models.flags` does not define yet.

Plain pydantic on top of :mod:`millpond.models` (no server imports), so this module can move
to ``millpond.models.flags`` as is once the SDK needs it. Request bodies reject unknown
fields (``RequestModel``); rules and conditions are the wire models made strict.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import AliasChoices, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from millpond.models.common import RequestModel
from millpond.models.flags import (
    AuditEntry,
    CheckRecord,
    Condition,
    ConditionGroup,
    EntitlementValueType,
    EntityKeys,
    Environment,
    EnvironmentType,
    EventRecord,
    FeatureType,
    FlagType,
    IdentifyCompany,
    MetricAggregation,
    MetricPeriod,
    Rule,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
"""Flag keys and client-chosen feature, plan and rule ids."""

ENVIRONMENT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
"""Environment names (unique per account, case-insensitive; not starting with ``env_``)."""

ENVIRONMENT_ID_PREFIX = "env_"

_TEXT_MAX = 4096
_NAME_MAX = 255
_MAX_RULES = 200
_MAX_CONDITIONS = 200
_BIGINT_MAX = 2**63 - 1


def storable(value: Any, where: str = "") -> None:
    """Raise ``ValueError`` if ``value`` (a dumped model) holds something Postgres JSON
    cannot store: a NUL character in any text, or a non-finite number."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where or 'text'}: must not contain NUL characters")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where or 'number'}: numbers must be finite")
    elif isinstance(value, dict):
        for name, item in value.items():
            storable(name, where)
            storable(item, f"{where}.{name}" if where else str(name))
    elif isinstance(value, list | tuple):
        for n, item in enumerate(value):
            storable(item, f"{where}.{n}" if where else str(n))


def _strict_json(model: Any) -> Any:
    try:
        storable(model.model_dump(mode="python"))
    except ValueError as exc:
        raise PydanticCustomError("unstorable", "{msg}", {"msg": str(exc)}) from None
    return model


def check_keys(keys: dict[str, str] | None) -> dict[str, str] | None:
    """Keys (of a company or user): 1-255 characters each, no NUL."""
    if keys is None:
        return None
    for name, value in keys.items():
        if not name or len(name) > _NAME_MAX or not value or len(value) > _NAME_MAX:
            raise PydanticCustomError(
                "bad_key", "key names and values must be 1 to {max} characters", {"max": _NAME_MAX}
            )
        if "\x00" in name or "\x00" in value:
            raise PydanticCustomError("nul_character", "keys must not contain NUL characters")
    return keys


# ---------------------------------------------------------------------------------------------
# Environments


class EnvironmentCreate(RequestModel):
    """A new environment of the caller's account."""

    name: str = Field(
        pattern=ENVIRONMENT_NAME_PATTERN,
        description="Unique in the account (case-insensitive); used in URLs in place of the id. "
        "Letters, digits, '_', '.', '-'; not starting with 'env_'",
    )
    environment_type: EnvironmentType | None = Field(
        default=None,
        description="development, staging or production; default: the name when it is one of "
        "those, else development",
    )

    @field_validator("name")
    @classmethod
    def _not_an_id(cls, value: str) -> str:
        if value.lower().startswith(ENVIRONMENT_ID_PREFIX):
            raise PydanticCustomError("bad_name", "names must not start with 'env_'")
        return value


class EnvironmentUpdate(RequestModel):
    name: str | None = Field(default=None, pattern=ENVIRONMENT_NAME_PATTERN)
    environment_type: EnvironmentType | None = None

    @field_validator("name")
    @classmethod
    def _not_an_id(cls, value: str | None) -> str | None:
        if value is not None and value.lower().startswith(ENVIRONMENT_ID_PREFIX):
            raise PydanticCustomError("bad_name", "names must not start with 'env_'")
        return value


class FlagEnvironment(Environment):
    """An environment, with the version of its last change (every change of its
    configuration increments it)."""

    version: int = Field(default=0, description="Version of the environment's last change")


# ---------------------------------------------------------------------------------------------
# Features


class FeatureCreate(RequestModel):
    id: str | None = Field(
        default=None, pattern=ID_PATTERN, description="Unique in the environment; default: new"
    )
    name: str = Field(default="", max_length=_TEXT_MAX)
    description: str = Field(default="", max_length=_TEXT_MAX)
    feature_type: FeatureType = "boolean"
    event_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=_NAME_MAX,
        validation_alias=AliasChoices("event_name", "event_subtype"),
        description="event features: the track event metering usage (required)",
    )
    metric_aggregation: MetricAggregation = "count"
    trait_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=_NAME_MAX,
        description="trait features: the company trait holding usage (required)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> FeatureCreate:
        if self.feature_type == "event" and not self.event_name:
            raise PydanticCustomError("missing", "event features need an event_name")
        if self.feature_type == "trait" and not self.trait_key:
            raise PydanticCustomError("missing", "trait features need a trait_key")
        return self


class FeatureUpdate(RequestModel):
    name: str | None = Field(default=None, max_length=_TEXT_MAX)
    description: str | None = Field(default=None, max_length=_TEXT_MAX)
    feature_type: FeatureType | None = None
    event_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=_NAME_MAX,
        validation_alias=AliasChoices("event_name", "event_subtype"),
    )
    metric_aggregation: MetricAggregation | None = None
    trait_key: str | None = Field(default=None, min_length=1, max_length=_NAME_MAX)


# ---------------------------------------------------------------------------------------------
# Rules (the wire models, strict) and flags

_STRICT = ConfigDict(extra="forbid", populate_by_name=True)


class ConditionInput(Condition):
    """A :class:`~millpond.models.flags.Condition` in a request: unknown fields are errors;
    ``id`` is assigned when missing."""

    model_config = _STRICT


class ConditionGroupInput(ConditionGroup):
    model_config = _STRICT

    conditions: list[ConditionInput] = Field(  # type: ignore[assignment]
        default_factory=list, max_length=_MAX_CONDITIONS, description="The alternatives"
    )


class RuleInput(Rule):
    """A :class:`~millpond.models.flags.Rule` in a request: unknown fields are errors; ``id``
    (unique per flag) is assigned when missing; ``flag_key`` is the flag's."""

    model_config = _STRICT

    id: str | None = Field(default=None, pattern=ID_PATTERN, description="Rule id")
    conditions: list[ConditionInput] = Field(  # type: ignore[assignment]
        default_factory=list, max_length=_MAX_CONDITIONS, description="All must hold (AND)"
    )
    condition_groups: list[ConditionGroupInput] = Field(  # type: ignore[assignment]
        default_factory=list,
        max_length=_MAX_CONDITIONS,
        description="Each must have a condition that holds (AND of ORs)",
    )

    @model_validator(mode="after")
    def _storable(self) -> RuleInput:
        _strict_json(self)
        return self


class FlagCreate(RequestModel):
    key: str = Field(pattern=ID_PATTERN, description="Unique in the environment, immutable")
    name: str = Field(default="", max_length=_TEXT_MAX)
    description: str = Field(default="", max_length=_TEXT_MAX)
    flag_type: FlagType = "boolean"
    default_value: bool = False
    feature_id: str | None = Field(default=None, description="The feature the flag gates")
    rules: list[RuleInput] = Field(
        default_factory=list, max_length=_MAX_RULES, description="Its rules (optional)"
    )


class FlagUpdate(RequestModel):
    name: str | None = Field(default=None, max_length=_TEXT_MAX)
    description: str | None = Field(default=None, max_length=_TEXT_MAX)
    default_value: bool | None = None
    feature_id: str | None = Field(default=None, description="null: gate no feature")


class RulesReplace(RequestModel):
    """A flag's whole rule list, replacing the current one."""

    rules: list[RuleInput] = Field(max_length=_MAX_RULES)


# ---------------------------------------------------------------------------------------------
# Plans, entitlements, overrides


class PlanCreate(RequestModel):
    id: str | None = Field(
        default=None, pattern=ID_PATTERN, description="Unique in the environment; default: new"
    )
    name: str = Field(default="", max_length=_TEXT_MAX)
    description: str = Field(default="", max_length=_TEXT_MAX)


class PlanUpdate(RequestModel):
    name: str | None = Field(default=None, max_length=_TEXT_MAX)
    description: str | None = Field(default=None, max_length=_TEXT_MAX)


class _GrantFields(RequestModel):
    value_type: EntitlementValueType
    value_bool: bool | None = None
    value_numeric: int | None = Field(default=None, ge=0, le=_BIGINT_MAX)
    value_trait_key: str | None = Field(default=None, min_length=1, max_length=_NAME_MAX)
    metric_period: MetricPeriod = "all_time"

    @model_validator(mode="after")
    def _consistent(self) -> Any:
        if self.value_type == "numeric" and self.value_numeric is None:
            raise PydanticCustomError("missing", "numeric grants need value_numeric")
        if self.value_type == "trait" and not self.value_trait_key:
            raise PydanticCustomError("missing", "trait grants need value_trait_key")
        return self


class EntitlementCreate(_GrantFields):
    plan_id: str = Field(min_length=1, max_length=_NAME_MAX)
    feature_id: str = Field(min_length=1, max_length=_NAME_MAX)


class GrantUpdate(RequestModel):
    """Change an entitlement's or an override's grant (its plan/company and feature stay)."""

    value_type: EntitlementValueType | None = None
    value_bool: bool | None = None
    value_numeric: int | None = Field(default=None, ge=0, le=_BIGINT_MAX)
    value_trait_key: str | None = Field(default=None, min_length=1, max_length=_NAME_MAX)
    metric_period: MetricPeriod | None = None
    expires_at: datetime | None = Field(default=None, description="overrides only")


class OverrideCreate(_GrantFields):
    """A company override: the company by ``company_id`` or by ``company`` keys (one of them)."""

    company_id: str | None = Field(default=None, min_length=1, max_length=_NAME_MAX)
    company: EntityKeys | None = Field(default=None, description="The company's keys")
    feature_id: str = Field(min_length=1, max_length=_NAME_MAX)
    expires_at: datetime | None = Field(default=None, description="unset: never expires")

    @field_validator("company")
    @classmethod
    def _valid_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_keys(value)

    @model_validator(mode="after")
    def _one_company(self) -> OverrideCreate:
        if (self.company_id is None) == (not self.company):
            raise PydanticCustomError("company", "give company_id or company (keys), not both")
        return self


# ---------------------------------------------------------------------------------------------
# Companies and users


class CompanyUpsert(IdentifyCompany):
    """Create a company (no company has any of these keys) or update the one that has:
    keys are added (a key name already set takes the new value), ``traits`` merged,
    ``name`` and ``plan_id`` set when given (``plan_id: null`` removes the plan)."""

    plan_id: str | None = Field(default=None, max_length=_NAME_MAX, description="Its plan")


class UserUpsert(IdentifyCompany):
    """Create or update a user (as :class:`CompanyUpsert`); ``company``: the keys of a
    company it belongs to (created if new)."""

    company: EntityKeys | None = Field(default=None, description="Keys of its company")

    @field_validator("company")
    @classmethod
    def _valid_company(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and not value:
            raise PydanticCustomError("no_keys", "at least one key is required")
        return check_keys(value)


class EntityLookup(RequestModel):
    """Find a company or user by any of its keys."""

    keys: EntityKeys = Field(description="Any of its keys")

    @field_validator("keys")
    @classmethod
    def _valid_keys(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise PydanticCustomError("no_keys", "at least one key is required")
        check_keys(value)
        return value


# ---------------------------------------------------------------------------------------------
# Logs


__all__ = [
    "ENVIRONMENT_ID_PREFIX",
    "ENVIRONMENT_NAME_PATTERN",
    "ID_PATTERN",
    "AuditEntry",
    "CheckRecord",
    "CompanyUpsert",
    "ConditionGroupInput",
    "ConditionInput",
    "EntitlementCreate",
    "EntityLookup",
    "EnvironmentCreate",
    "EnvironmentUpdate",
    "EventRecord",
    "FeatureCreate",
    "FeatureUpdate",
    "FlagCreate",
    "FlagEnvironment",
    "FlagUpdate",
    "GrantUpdate",
    "OverrideCreate",
    "PlanCreate",
    "PlanUpdate",
    "RuleInput",
    "RulesReplace",
    "UserUpsert",
    "check_keys",
    "storable",
]
