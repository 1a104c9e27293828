"""Feature flags and entitlements: environments, features, flags and their rules, plans and
plan entitlements, companies and users, company overrides, flag checks and events.

Names follow Schematic's API where it has one (``default_value``, ``rule_type``,
``resource_ids``, ``metric_period``, ``value_type``, ``value_bool``, ``value_numeric``,
``company_id``…); where Schematic points at a trait *definition* by id
(``trait_id``, ``comparison_trait_id``, ``value_trait_id``) millpond names the trait by its key
(``trait_key``, ``comparison_trait_key``, ``value_trait_key``), and Schematic's
``event_subtype`` is ``event_name`` (the old name is accepted on input).

Evaluation semantics (rule order, condition semantics, reasons) are documented in
:mod:`millpond.engine.flags`, which evaluates these models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, field_validator
from pydantic_core import PydanticCustomError

from .common import RequestModel, WireModel

# ---------------------------------------------------------------------------------------------
# Vocabularies

EnvironmentType = Literal["development", "staging", "production"]

FeatureType = Literal["boolean", "event", "trait"]
"""``boolean``: on or off per plan/company; ``event``: metered by a track event (its count or
the sum of its quantities over a period); ``trait``: metered by a company trait (e.g. ``seats``
holding the number of seats in use)."""

FlagType = Literal["boolean"]

RuleType = Literal[
    "global_override",
    "company_override",
    "plan_entitlement",
    "company_override_usage_exceeded",
    "plan_entitlement_usage_exceeded",
    "standard",
    "default",
]
"""Rule types, listed in evaluation order (see :mod:`millpond.engine.flags`)."""

ConditionType = Literal[
    "company", "user", "plan", "trait", "metric", "actor_list", "rollout", "flypper_rollout"
]

ConditionOperator = Literal["eq", "ne", "gt", "gte", "lt", "lte", "is_empty", "not_empty"]

EntityType = Literal["company", "user"]

MetricPeriod = Literal["all_time", "current_day", "current_week", "current_month"]
"""Calendar periods in UTC; a week starts on Monday 00:00 UTC."""

MetricAggregation = Literal["count", "sum"]
"""``count``: number of track events; ``sum``: sum of their ``quantity``."""

EntitlementValueType = Literal["boolean", "numeric", "unlimited", "trait"]
"""``boolean``: granted or not (``value_bool``); ``numeric``: granted while usage is below
``value_numeric``; ``unlimited``: always granted, usage still reported; ``trait``: granted while
usage is below the number held by the company trait ``value_trait_key``."""

CheckReason = Literal[
    "GLOBAL_OVERRIDE",
    "COMPANY_OVERRIDE",
    "PLAN_ENTITLEMENT",
    "USAGE_EXCEEDED",
    "RULE_MATCH",
    "DEFAULT",
    "FLAG_NOT_FOUND",
    "ERROR",
]
"""Why a check returned its value (stable codes):

* ``GLOBAL_OVERRIDE``: a global override rule decided;
* ``COMPANY_OVERRIDE``: the company's override for the flag's feature (or a
  ``company_override`` rule) decided, usage within its allocation;
* ``PLAN_ENTITLEMENT``: the entitlement of the company's plan (or a ``plan_entitlement``
  rule) decided, usage within its allocation;
* ``USAGE_EXCEEDED``: usage reached the override's or the plan's allocation (value false),
  or a ``*_usage_exceeded`` rule matched;
* ``RULE_MATCH``: a standard rule matched;
* ``DEFAULT``: nothing matched: the flag's ``default`` rule or its ``default_value``;
* ``FLAG_NOT_FOUND``: no such flag (or it is deleted): value false;
* ``ERROR``: evaluation failed unexpectedly: the flag's default value, ``error`` says why.
"""

TraitValue = str | int | float | bool | None
"""A trait's value: a JSON scalar."""

_KEY_MAX = 255
_TEXT_MAX = 4096


def _clean_text(value: str, what: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError(
            "nul_character", "{what} must not contain NUL characters", {"what": what}
        )
    return value


def _coerce_keys(value: Any) -> Any:
    """Key values may arrive as numbers (``{"id": 42}``): keys are strings."""
    if isinstance(value, dict):
        return {
            k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
            for k, v in value.items()
        }
    return value


EntityKeys = Annotated[dict[str, str], BeforeValidator(_coerce_keys)]
"""How a company or user is addressed: any of its keys, e.g. ``{"id": "42"}`` or
``{"email": "wcoyote@acme.net"}``. Numbers are accepted and turned into strings."""


def _check_keys(keys: dict[str, str] | None, *, required: bool) -> dict[str, str] | None:
    if keys is None:
        return None
    if required and not keys:
        raise PydanticCustomError("no_keys", "at least one key is required")
    for name, value in keys.items():
        if not name or len(name) > _KEY_MAX or not value or len(value) > _KEY_MAX:
            raise PydanticCustomError(
                "bad_key", "key names and values must be 1 to {max} characters", {"max": _KEY_MAX}
            )
        _clean_text(name, "key names")
        _clean_text(value, "key values")
    return keys


def _check_traits(traits: dict[str, TraitValue] | None) -> dict[str, TraitValue] | None:
    if traits is None:
        return None
    for name, value in traits.items():
        if not name or len(name) > _KEY_MAX:
            raise PydanticCustomError(
                "bad_trait", "trait names must be 1 to {max} characters", {"max": _KEY_MAX}
            )
        _clean_text(name, "trait names")
        if isinstance(value, str):
            if len(value) > _TEXT_MAX:
                raise PydanticCustomError(
                    "bad_trait", "trait values must be at most {max} characters", {"max": _TEXT_MAX}
                )
            _clean_text(value, "trait values")
        elif isinstance(value, float) and value - value != 0.0:
            raise PydanticCustomError("bad_trait", "trait values must be finite numbers")
    return traits


# ---------------------------------------------------------------------------------------------
# Configuration: environments, features, flags, rules


class Environment(WireModel):
    """An isolated set of features, flags, plans, companies and users (e.g. development and
    production); every other object here belongs to exactly one environment."""

    id: str = Field(description="Environment id")
    name: str = Field(description="Display name")
    environment_type: EnvironmentType = Field(
        default="development", description="development, staging or production"
    )
    created_at: datetime | None = Field(default=None, description="When it was created")
    updated_at: datetime | None = Field(default=None, description="When it last changed")


class Feature(WireModel):
    """Something a plan or an override can grant: plain on/off (``boolean``), metered by a track
    event (``event``), or metered by a company trait (``trait``). Flags gate features."""

    id: str = Field(description="Feature id")
    name: str = Field(default="", description="Display name")
    description: str = Field(default="", description="Free text")
    feature_type: FeatureType = Field(default="boolean", description="boolean, event or trait")
    event_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices("event_name", "event_subtype"),
        description="event features: the track event that meters usage (Schematic's event_subtype)",
    )
    metric_aggregation: MetricAggregation = Field(
        default="count",
        description="event features: usage is the number of events (count) or the sum of "
        "their quantities (sum)",
    )
    trait_key: str | None = Field(
        default=None,
        description="trait features: the company trait holding current usage (e.g. seats)",
    )
    created_at: datetime | None = Field(default=None, description="When it was created")
    updated_at: datetime | None = Field(default=None, description="When it last changed")


class Flag(WireModel):
    """A boolean feature flag, checked by key for a company and/or a user."""

    id: str | None = Field(default=None, description="Flag id")
    key: str = Field(description="Stable key the application checks, e.g. new-checkout")
    name: str = Field(default="", description="Display name")
    description: str = Field(default="", description="Free text")
    flag_type: FlagType = Field(default="boolean", description="Always boolean for now")
    default_value: bool = Field(
        default=False, description="Value when no rule matches (and no default rule exists)"
    )
    feature_id: str | None = Field(
        default=None,
        description="The feature this flag gates: plan entitlements and company overrides of "
        "that feature then apply to it",
    )
    version: int = Field(
        default=1, description="Incremented on every change of the flag or its rules"
    )
    created_at: datetime | None = Field(default=None, description="When it was created")
    updated_at: datetime | None = Field(default=None, description="When it last changed")
    deleted_at: datetime | None = Field(
        default=None, description="Set once deleted: checks then answer FLAG_NOT_FOUND"
    )


class Condition(WireModel):
    """One test on the checked company/user. Which fields matter depends on
    ``condition_type``; the others are ignored. A condition on a company or user that is not
    part of the check is false (whatever the operator).

    * ``company`` / ``user``: the entity's id is (``eq``) or is not (``ne``) in ``resource_ids``;
    * ``plan``: the company's plan id is (``eq``) / is not (``ne``) in ``resource_ids``; or it
      has no plan (``is_empty``) / has one (``not_empty``);
    * ``trait``: the trait ``trait_key`` of the ``trait_entity`` compared (``operator``) with
      ``trait_value``, or with the same entity's trait ``comparison_trait_key`` when set;
    * ``metric``: the ``metric_aggregation`` of event ``event_name`` over ``metric_period`` for
      the ``trait_entity`` compared with ``metric_value``, or with the entity's trait
      ``comparison_trait_key`` (e.g. usage ``lt`` trait ``seats``);
    * ``actor_list``: the ``actor_entity`` shares a key with an entry of ``actors`` (``eq``), or
      with none of them (``ne``) (flypper's enabled_for_actors);
    * ``rollout``: the ``actor_entity``'s key ``actor_key`` (its id when unset) falls in the
      first ``percentage`` percent of a hash salted by the flag key;
    * ``flypper_rollout``: flypper's own percentage gate, hashed as flypper 0.1.7 hashes (so a
      flag made through flypper enables the same actors): 100 holds for everyone; otherwise
      the actor is the key named by ``actor_key`` read as a flypper entry name
      (``user_<key>`` / ``company_<key>``, any other name a user key) and the condition holds
      iff ``(md5(actor) as a big-endian integer % 10000) / 100 <= percentage`` (not salted by
      the flag; ``actor_entity`` and the operator are ignored).
    """

    id: str | None = Field(default=None, description="Condition id")
    condition_type: ConditionType = Field(description="What the condition tests")
    operator: ConditionOperator = Field(
        default="eq", description="eq, ne, gt, gte, lt, lte, is_empty or not_empty"
    )
    resource_ids: list[str] = Field(
        default_factory=list, description="company, user, plan: the ids to test against"
    )
    trait_entity: EntityType = Field(
        default="company",
        validation_alias=AliasChoices("trait_entity", "trait_entity_type"),
        description="trait, metric: whose traits (and, for metric, whose events) are tested",
    )
    trait_key: str | None = Field(default=None, description="trait: the trait to test")
    trait_value: TraitValue = Field(
        default=None, description="trait: the value compared with (when no comparison trait)"
    )
    comparison_trait_key: str | None = Field(
        default=None,
        description="trait, metric: compare with this trait of the same entity instead of "
        "trait_value / metric_value",
    )
    event_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices("event_name", "event_subtype"),
        description="metric: the track event measured (Schematic's event_subtype)",
    )
    metric_period: MetricPeriod = Field(
        default="all_time",
        description="metric: all_time, current_day, current_week or current_month (UTC; weeks "
        "start on Monday)",
    )
    metric_aggregation: MetricAggregation = Field(
        default="count", description="metric: number of events or sum of their quantities"
    )
    metric_value: int | float | None = Field(
        default=None, description="metric: the value compared with (when no comparison trait)"
    )
    actor_entity: EntityType = Field(
        default="user", description="actor_list, rollout: whose keys are tested"
    )
    actors: list[EntityKeys] = Field(
        default_factory=list,
        description='actor_list: entries, each a set of keys, e.g. {"email": "a@b.c"}; '
        "the entity is listed when one of its keys equals one of an entry's",
    )
    actor_key: str | None = Field(
        default=None,
        description="rollout: the key hashed (e.g. email); unset: the entity's id. "
        "flypper_rollout: flypper's entry name (user_id, company_id, email…). actor_list: "
        "flypper's entry name when made through flypper (not used in evaluation)",
    )
    percentage: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="rollout, flypper_rollout: share of actors enabled, 0 to 100, in steps of 0.01",
    )


class ConditionGroup(WireModel):
    """Conditions OR'd together: the group holds when any of them holds (an empty group
    never holds)."""

    id: str | None = Field(default=None, description="Condition group id")
    conditions: list[Condition] = Field(default_factory=list, description="The alternatives")


class Rule(WireModel):
    """A flag's rule: when all ``conditions`` hold and every group of ``condition_groups``
    has a condition that holds, the flag takes ``value``. ``global_override`` and ``default``
    rules have no conditions (any given are ignored)."""

    id: str | None = Field(default=None, description="Rule id (reported by checks)")
    flag_key: str | None = Field(default=None, description="The flag the rule belongs to")
    name: str = Field(default="", description="Display name")
    rule_type: RuleType = Field(default="standard", description="Decides evaluation order")
    priority: int = Field(
        default=0, description="Order within a rule type: lower first, ties in list order"
    )
    value: bool = Field(description="The flag's value when the rule matches")
    conditions: list[Condition] = Field(default_factory=list, description="All must hold (AND)")
    condition_groups: list[ConditionGroup] = Field(
        default_factory=list, description="Each must have a condition that holds (AND of ORs)"
    )


# ---------------------------------------------------------------------------------------------
# Plans, entitlements, companies, users, overrides


class Plan(WireModel):
    """A plan companies subscribe to; its entitlements grant features."""

    id: str = Field(description="Plan id")
    name: str = Field(default="", description="Display name")
    description: str = Field(default="", description="Free text")
    created_at: datetime | None = Field(default=None, description="When it was created")
    updated_at: datetime | None = Field(default=None, description="When it last changed")


class _Grant(WireModel):
    """What a plan entitlement or a company override grants for one feature."""

    id: str = Field(description="Entitlement / override id (reported as the check's rule_id)")
    feature_id: str = Field(description="The feature granted")
    value_type: EntitlementValueType = Field(
        description="boolean, numeric (limit), unlimited or trait (limit held by a trait)"
    )
    value_bool: bool | None = Field(
        default=None, description="boolean: granted (true, or unset) or denied (false)"
    )
    value_numeric: int | None = Field(
        default=None, ge=0, description="numeric: the allocation (usage limit)"
    )
    value_trait_key: str | None = Field(
        default=None, description="trait: the company trait holding the allocation"
    )
    metric_period: MetricPeriod = Field(
        default="all_time",
        description="event features: the period usage is measured over (resets in UTC)",
    )


class Entitlement(_Grant):
    """A plan's entitlement to a feature."""

    plan_id: str = Field(description="The plan entitled")


class CompanyOverride(_Grant):
    """A company's own grant of a feature, replacing its plan's entitlement to that feature
    while active."""

    company_id: str = Field(description="The company")
    expires_at: datetime | None = Field(
        default=None, description="Ignored from this instant on; unset: never expires"
    )
    created_at: datetime | None = Field(default=None, description="When it was created")
    updated_at: datetime | None = Field(default=None, description="When it last changed")


class Company(WireModel):
    """A customer company, addressed by any of its keys."""

    id: str = Field(description="millpond's id for it")
    keys: dict[str, str] = Field(default_factory=dict, description='Its keys, e.g. {"id": …}')
    name: str | None = Field(default=None, description="Display name")
    traits: dict[str, TraitValue] = Field(default_factory=dict, description="Trait values")
    plan_id: str | None = Field(default=None, description="The plan it is on")
    created_at: datetime | None = Field(default=None, description="When it was first seen")
    updated_at: datetime | None = Field(default=None, description="When it last changed")
    last_seen_at: datetime | None = Field(default=None, description="Last identify/track/check")


class User(WireModel):
    """A user of a customer's application, addressed by any of its keys, member of
    companies."""

    id: str = Field(description="millpond's id for it")
    keys: dict[str, str] = Field(default_factory=dict, description='Its keys, e.g. {"email": …}')
    name: str | None = Field(default=None, description="Display name")
    traits: dict[str, TraitValue] = Field(default_factory=dict, description="Trait values")
    company_ids: list[str] = Field(default_factory=list, description="The companies it belongs to")
    created_at: datetime | None = Field(default=None, description="When it was first seen")
    updated_at: datetime | None = Field(default=None, description="When it last changed")
    last_seen_at: datetime | None = Field(default=None, description="Last identify/track/check")


class MetricValue(WireModel):
    """One usage figure of a company (or user): the count or summed quantity of a track event
    over a period, as of now."""

    event: str = Field(description="Track event name")
    period: MetricPeriod = Field(default="all_time", description="The period measured")
    aggregation: MetricAggregation = Field(default="count", description="count or sum")
    value: int | float = Field(description="The figure")


class FlagRuleset(WireModel):
    """Everything needed to evaluate one flag locally: the unit the server streams to SDKs
    and :func:`millpond.engine.flags.compile_ruleset` compiles."""

    flag: Flag = Field(description="The flag")
    rules: list[Rule] = Field(default_factory=list, description="Its rules")
    feature: Feature | None = Field(default=None, description="The feature it gates")
    entitlements: list[Entitlement] = Field(
        default_factory=list, description="Plan entitlements to that feature"
    )


# ---------------------------------------------------------------------------------------------
# Checks


class EntitlementUsage(WireModel):
    """Usage against the entitlement (or override) that decided a check."""

    allocation: int | float | None = Field(default=None, description="The limit; null: unlimited")
    usage: int | float | None = Field(
        default=None, description="Usage in the current period; null: not measured"
    )
    metric_period: MetricPeriod | None = Field(
        default=None, description="The period usage is measured over; null: not metered"
    )
    reset_at: datetime | None = Field(
        default=None,
        description="When usage resets (start of the next UTC day, Monday, or month); null: never",
    )
    event_name: str | None = Field(default=None, description="The event metering usage")


class FlagCheck(WireModel):
    """The result of checking a flag (Schematic's CheckFlagResponseData, plus rule_type and
    entitlement)."""

    flag: str = Field(description="The flag key")
    flag_id: str | None = Field(default=None, description="The flag id, when it exists")
    value: bool = Field(description="The flag's value for this company/user")
    reason: CheckReason = Field(description="Why (see CheckReason)")
    rule_id: str | None = Field(
        default=None,
        description="The rule (or entitlement / override) that decided; null for the flag's "
        "default value",
    )
    rule_type: RuleType | None = Field(default=None, description="Its rule type")
    entitlement: EntitlementUsage | None = Field(
        default=None, description="Allocation and usage, when a metered entitlement decided"
    )
    company_id: str | None = Field(default=None, description="The company checked, if found")
    user_id: str | None = Field(default=None, description="The user checked, if found")
    error: str | None = Field(default=None, description="With reason ERROR: what went wrong")


class FlagChecks(WireModel):
    """Several flags checked for one company/user."""

    flags: list[FlagCheck] = Field(description="One result per flag")


class CheckFlagRequest(RequestModel):
    """Check a flag (or every flag) for a company and/or a user, each given by any of its
    keys; with neither, rules on companies and users do not match."""

    company: EntityKeys | None = Field(default=None, description="The company's keys")
    user: EntityKeys | None = Field(default=None, description="The user's keys")

    @field_validator("company", "user")
    @classmethod
    def _valid_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _check_keys(value, required=False)


# ---------------------------------------------------------------------------------------------
# Events


class _Event(RequestModel):
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=_KEY_MAX,
        description="Events repeating an earlier event's key (in the same environment) are "
        "acknowledged and ignored, so retries never count twice",
    )
    sent_at: datetime | None = Field(
        default=None, description="When the client sent it; default: when received"
    )


class IdentifyCompany(RequestModel):
    """A company in an identify event: created if new, else its name/traits updated."""

    keys: EntityKeys = Field(description="Its keys (at least one)")
    name: str | None = Field(default=None, max_length=_TEXT_MAX, description="Display name")
    traits: dict[str, TraitValue] | None = Field(
        default=None, description="Traits to set (others are kept)"
    )

    @field_validator("keys")
    @classmethod
    def _valid_keys(cls, value: dict[str, str]) -> dict[str, str]:
        _check_keys(value, required=True)
        return value

    @field_validator("traits")
    @classmethod
    def _valid_traits(cls, value: dict[str, TraitValue] | None) -> dict[str, TraitValue] | None:
        return _check_traits(value)


class IdentifyEvent(_Event):
    """Create or update a user (and its company) with keys, name and traits."""

    event_type: Literal["identify"] = Field(default="identify", description="identify")
    keys: EntityKeys = Field(description="The user's keys (at least one)")
    name: str | None = Field(default=None, max_length=_TEXT_MAX, description="Display name")
    traits: dict[str, TraitValue] | None = Field(
        default=None, description="Traits to set (others are kept)"
    )
    company: IdentifyCompany | None = Field(
        default=None, description="The user's company (created or updated too)"
    )

    @field_validator("keys")
    @classmethod
    def _valid_keys(cls, value: dict[str, str]) -> dict[str, str]:
        _check_keys(value, required=True)
        return value

    @field_validator("traits")
    @classmethod
    def _valid_traits(cls, value: dict[str, TraitValue] | None) -> dict[str, TraitValue] | None:
        return _check_traits(value)


class TrackEvent(_Event):
    """Record usage: one occurrence of ``event`` (``quantity`` units) for a company and/or
    user; metrics count events and sum quantities."""

    event_type: Literal["track"] = Field(default="track", description="track")
    event: str = Field(min_length=1, max_length=_KEY_MAX, description="Track event name")
    company: EntityKeys | None = Field(default=None, description="The company's keys")
    user: EntityKeys | None = Field(default=None, description="The user's keys")
    traits: dict[str, TraitValue] | None = Field(
        default=None, description="Traits of the event itself (kept with it)"
    )
    quantity: int = Field(
        default=1, ge=0, le=2**53, description="Units consumed (summed by sum metrics)"
    )

    @field_validator("company", "user")
    @classmethod
    def _valid_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _check_keys(value, required=False)

    @field_validator("traits")
    @classmethod
    def _valid_traits(cls, value: dict[str, TraitValue] | None) -> dict[str, TraitValue] | None:
        return _check_traits(value)


EventRequest = Annotated[IdentifyEvent | TrackEvent, Field(discriminator="event_type")]
"""An identify or a track event, told apart by ``event_type``."""


class EventBatch(RequestModel):
    """Several events at once (the SDK's buffer flush); accepted all or none."""

    events: list[EventRequest] = Field(
        min_length=1, max_length=1000, description="1 to 1,000 events, applied in order"
    )


class EventsAccepted(WireModel):
    """Events stored (durably, before this answer) and how many were repeats."""

    accepted: int = Field(description="Events stored now")
    duplicates: int = Field(default=0, description="Events ignored: idempotency key seen before")


class EventRecord(WireModel):
    """A stored identify or track event."""

    id: str
    seq: int = Field(description="Order of arrival (increasing)")
    event_type: Literal["identify", "track"]
    event: str | None = Field(default=None, description="track: the event name")
    quantity: int | None = None
    company_id: str | None = Field(default=None, description="The company resolved")
    user_id: str | None = Field(default=None, description="The user resolved")
    idempotency_key: str | None = None
    body: dict[str, Any] = Field(description="The event as sent")
    sent_at: datetime | None = None
    received_at: datetime


class AuditEntry(WireModel):
    """One change: who (key and user), what (entity, id, action), when, before and after."""

    id: int = Field(description="Entry id (increasing)")
    environment_id: str
    version: int = Field(description="The environment version the change made")
    at: datetime = Field(description="When (the transaction's start)")
    key_id: str | None = Field(default=None, description="The API key used")
    user_id: int | None = Field(default=None, description="Its user")
    username: str = Field(description="Its user's name")
    entity: str = Field(
        description="environment, feature, flag, rule, plan, entitlement, override, company, "
        "user or key"
    )
    entity_id: str
    action: str = Field(description="create, update, delete, restore or replace")
    before: Any = Field(default=None, description="The entity before (JSON); null when created")
    after: Any = Field(default=None, description="The entity after (JSON); null when deleted")


class CheckRecord(WireModel):
    """A recorded flag check."""

    id: int
    flag: str
    flag_id: str | None = None
    value: bool
    reason: str
    rule_id: str | None = None
    rule_type: str | None = None
    company_id: str | None = None
    user_id: str | None = None
    company: dict[str, str] | None = Field(default=None, description="The company keys sent")
    user: dict[str, str] | None = Field(default=None, description="The user keys sent")
    key_id: str | None = None
    checked_at: datetime
