"""Feature-flag evaluation: a pure function of (flag, rules, feature, plan entitlements,
company, user, metrics, now) to (value, reason, rule, entitlement usage). No I/O, no clock
unless asked; the server's checks and the SDK's local evaluation share it.

Use
---
::

    compiled = compile_flag(flag, rules, feature=feature, entitlements=entitlements)  # once
    ctx = EvalContext(CompanyContext.from_model(company, metrics=..., overrides=...),
                      UserContext.from_model(user))                   # once per request
    compiled.evaluate(ctx)   # -> Evaluation(flag, value, reason, rule_id, rule_type, entitlement)

or, for one-off checks, ``evaluate(flag, rules, company=…, user=…, metrics=…, now=…)``.
Compiling turns each rule into a closure with its sets, parsed values and hash salt
prepared; :meth:`CompiledFlag.evaluate` then only reads the context (results that do not
depend on usage are prebuilt and shared).

Rule order
----------
The first rule that matches decides; within a rule type, lower ``priority`` first, ties in
the order given:

1. ``global_override`` — the first one decides, whatever the context (conditions ignored).
2. ``company_override`` — the company's active override of the flag's feature (not expired
   at ``now``) when usage is within its allocation; then ``company_override`` rules.
3. ``plan_entitlement`` — the entitlement of the company's plan to the flag's feature when
   usage is within its allocation; then ``plan_entitlement`` rules. A company with an active
   override of the feature skips its plan's entitlement (the override replaces it).
4. ``company_override_usage_exceeded`` — the override whose allocation is used up (value
   false); then rules of this type.
5. ``plan_entitlement_usage_exceeded`` — the plan entitlement whose allocation is used up
   (value false); then rules of this type.
6. ``standard`` rules.
7. ``default`` — the first ``default`` rule, else the flag's ``default_value``.

A deleted flag answers ``FLAG_NOT_FOUND`` (false). A rule matches when all its
``conditions`` hold and each of its ``condition_groups`` has a condition that holds (an empty
group never does); a rule without conditions always matches.

Entitlements and overrides (value types): ``boolean`` grants ``value_bool`` (unset counts as
true); ``unlimited`` grants, reporting usage; ``numeric`` grants while usage <
``value_numeric``; ``trait`` grants while usage < the number in the company trait
``value_trait_key`` (missing or not a number: 0). Usage is the company metric
``(feature.event_name, metric_period, feature.metric_aggregation)`` for event features (0 when
absent), the company trait ``feature.trait_key`` for trait features, not measured (0) for
boolean ones. The result then carries :class:`Usage` (allocation, usage, metric_period,
reset_at, event_name). For explicit entitlement-type rules, usage comes from the rule's first
metric (or trait) condition.

Conditions
----------
A condition on a company or user absent from the check is false, whatever its operator.

* ``company`` / ``user``: id in ``resource_ids`` (``eq``) or not (``ne``).
* ``plan``: plan id in ``resource_ids`` (``eq``), not in (``ne``, true without a plan), no plan
  (``is_empty``), some plan (``not_empty``).
* ``trait``: ``traits[trait_key]`` of the ``trait_entity`` against ``trait_value`` (or the
  entity's trait ``comparison_trait_key``). Empty means missing, None or "": ``is_empty`` /
  ``not_empty`` test it; with an empty side ``eq`` holds iff both are empty, ``ne`` iff one
  is, order operators never hold. When both sides are numbers — int, finite float, or a
  string that is a decimal literal such as ``"10"``, ``"-2.5"``, ``"1e3"`` (no spaces) —
  they compare as numbers (integers exactly, otherwise as floats), so ``"10" > "9"``,
  ``"1.50" == 1.5`` and ``"1e3" == 1000``; otherwise as text by code point (booleans are
  ``"true"``/``"false"``, floats their shortest repr), so ``"b" > "a"``, ``"10" < "9a"``
  and ``True == "true"``.
* ``metric``: the entity's metric ``(event_name, metric_period, metric_aggregation)`` (0 when
  absent) against ``metric_value`` or the trait ``comparison_trait_key`` (condition false if
  that is not a number); ``is_empty``: no usage (0), ``not_empty``: some. The metrics are
  figures for the *current* period, computed by whoever builds the context (the server from
  events; see :func:`period_start`).
* ``actor_list``: the ``actor_entity`` shares a key (name and value) with an entry of
  ``actors`` (``eq``), or with none (``ne``).
* ``rollout``: the ``actor_entity``'s key ``actor_key`` (its id when unset; false when
  missing or "") is enabled iff :func:`rollout_bucket` ``(flag key, actor) <``
  :func:`rollout_threshold` ``(percentage)``: stable, salted by the flag key, monotone in
  the percentage; 100 enables every actor present, 0 none. The operator is ignored.
* ``flypper_rollout``: flypper 0.1.7's percentage gate, bit for bit: ``percentage == 100``
  holds for everyone (even with no company/user); otherwise the actor is the key named by
  ``actor_key`` read as a flypper entry name (``user_<key>`` / ``company_<key>``; any other
  name is a user key), false when missing, and the condition holds iff
  :func:`flypper_bucket` ``(actor) / 100 <= percentage`` — unsalted (flags at one
  percentage enable the same actors), so 0 still enables bucket 0. ``actor_entity`` and the
  operator are ignored.
* Unknown or incomplete conditions (no trait key, no event name, unsupported operator)
  never hold. Other operators than those listed never hold.

Periods are UTC calendar periods: ``current_day`` from midnight, ``current_week`` from
Monday midnight (ISO weeks), ``current_month`` from the 1st; ``reset_at`` is the next
period's start; ``all_time`` never resets.

Reasons
-------
``GLOBAL_OVERRIDE``, ``COMPANY_OVERRIDE``, ``PLAN_ENTITLEMENT``, ``USAGE_EXCEEDED`` (either
``*_usage_exceeded`` type), ``RULE_MATCH`` (standard rule), ``DEFAULT`` (default rule or the
flag's default value), ``FLAG_NOT_FOUND`` (missing or deleted flag: false), ``ERROR`` (an
unexpected failure while evaluating: the flag's default value, ``error`` says what). See
:data:`millpond.models.flags.CheckReason`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from millpond.models.flags import (
    Company,
    CompanyOverride,
    Entitlement,
    Feature,
    Flag,
    Rule,
    User,
)

from ._flags._compiled import (
    RULE_TYPE_ORDER,
    CompiledFlag,
    Evaluation,
    Usage,
    compile_flag,
    compile_ruleset,
    not_found,
)
from ._flags._conditions import flypper_actor
from ._flags._context import (
    CompanyContext,
    EvalContext,
    MetricKey,
    MetricsInput,
    UserContext,
)
from ._flags._rollout import (
    BUCKETS,
    flypper_bucket,
    in_flypper_rollout,
    in_rollout,
    rollout_bucket,
    rollout_threshold,
)
from ._flags._time import EPOCH, PERIODS, bucket_start, period_reset_at, period_start
from ._flags._values import as_number, as_text, compare, is_empty

__all__ = [
    "BUCKETS",
    "EPOCH",
    "PERIODS",
    "RULE_TYPE_ORDER",
    "CompanyContext",
    "CompiledFlag",
    "EvalContext",
    "Evaluation",
    "MetricKey",
    "MetricsInput",
    "Usage",
    "UserContext",
    "as_number",
    "as_text",
    "bucket_start",
    "compare",
    "compile_flag",
    "compile_ruleset",
    "evaluate",
    "flypper_actor",
    "flypper_bucket",
    "in_flypper_rollout",
    "in_rollout",
    "is_empty",
    "not_found",
    "period_reset_at",
    "period_start",
    "rollout_bucket",
    "rollout_threshold",
]


def _company(
    company: CompanyContext | Company | Mapping[str, Any] | None,
    metrics: MetricsInput,
    overrides: Iterable[CompanyOverride | Mapping[str, Any]],
) -> CompanyContext | None:
    if company is None or isinstance(company, CompanyContext):
        return company
    return CompanyContext.from_model(company, metrics=metrics, overrides=overrides)


def _user(
    user: UserContext | User | Mapping[str, Any] | None, metrics: MetricsInput
) -> UserContext | None:
    if user is None or isinstance(user, UserContext):
        return user
    return UserContext.from_model(user, metrics=metrics)


def evaluate(
    flag: Flag | Mapping[str, Any] | None,
    rules: Iterable[Rule | Mapping[str, Any]] = (),
    company: CompanyContext | Company | Mapping[str, Any] | None = None,
    user: UserContext | User | Mapping[str, Any] | None = None,
    metrics: MetricsInput = None,
    now: datetime | None = None,
    *,
    feature: Feature | Mapping[str, Any] | None = None,
    entitlements: Iterable[Entitlement | Mapping[str, Any]] = (),
    overrides: Iterable[CompanyOverride | Mapping[str, Any]] = (),
    user_metrics: MetricsInput = None,
) -> Evaluation:
    """Compile and evaluate once (convenient, not fast: keep a :class:`CompiledFlag` for
    repeated checks). ``metrics`` and ``overrides`` are the company's, ``user_metrics`` the
    user's; they are ignored when ``company``/``user`` are already contexts. A missing flag
    gives ``FLAG_NOT_FOUND``."""
    if flag is None:
        return not_found("")
    compiled = compile_flag(flag, rules, feature=feature, entitlements=entitlements)
    ctx = EvalContext(_company(company, metrics, overrides), _user(user, user_metrics), now)
    return compiled.evaluate(ctx)
