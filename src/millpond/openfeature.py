"""An OpenFeature provider for millpond's boolean flags (``pip install "millpond[openfeature]"``)::

    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from millpond import Millpond
    from millpond.openfeature import MillpondProvider

    api.set_provider(MillpondProvider(Millpond(local_evaluation=True)))
    client = api.get_client()
    client.get_boolean_value(
        "new-editor", False, EvaluationContext("user-42", {"company": {"id": "acme"}})
    )

The evaluation context names the user and company: the targeting key is the user's
``id`` key; the attributes ``user`` and ``company`` (mappings of their keys) add or give
them. Reasons map onto OpenFeature's: a rule, override or entitlement that decided is
``TARGETING_MATCH`` (a global override ``STATIC``), the flag's default ``DEFAULT``; an
unknown flag is ``FLAG_NOT_FOUND`` and a failed check ``GENERAL``, both answering the
caller's default. millpond flags are boolean: other types are ``TYPE_MISMATCH``. The
millpond reason, rule and flag ids are in ``flag_metadata``. ``track`` sends a track event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from .client import AsyncMillpond, Millpond
from .errors import ConfigurationError
from .models.flags import FlagCheck

try:
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.exception import ErrorCode
    from openfeature.flag_evaluation import FlagResolutionDetails, Reason
    from openfeature.provider import AbstractProvider, Metadata
    from openfeature.track import TrackingEventDetails
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ConfigurationError(
        'millpond.openfeature needs the OpenFeature SDK: pip install "millpond[openfeature]"'
    ) from exc

__all__ = ["MillpondProvider"]

T = TypeVar("T")

_MATCHED = {"RULE_MATCH", "COMPANY_OVERRIDE", "PLAN_ENTITLEMENT", "USAGE_EXCEEDED"}


def entities(
    context: EvaluationContext | None,
) -> tuple[dict[str, str] | None, dict[str, str] | None]:
    """The company and user keys an evaluation context names."""
    if context is None:
        return None, None
    attributes = context.attributes or {}
    company = _keys(attributes.get("company"))
    user = _keys(attributes.get("user")) or {}
    if context.targeting_key:
        user.setdefault("id", context.targeting_key)
    return company or None, user or None


def _keys(value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    return {}


def resolution(check: FlagCheck, default_value: bool) -> FlagResolutionDetails[bool]:
    metadata: dict[str, bool | int | float | str] = {"millpond_reason": check.reason}
    for name in ("rule_id", "flag_id", "company_id", "user_id"):
        value = getattr(check, name)
        if value is not None:
            metadata[name] = value
    if check.reason == "FLAG_NOT_FOUND":
        return FlagResolutionDetails(
            default_value,
            error_code=ErrorCode.FLAG_NOT_FOUND,
            error_message=f"no flag {check.flag!r}",
            reason=Reason.ERROR,
            flag_metadata=metadata,
        )
    if check.reason == "ERROR":
        return FlagResolutionDetails(
            default_value,
            error_code=ErrorCode.GENERAL,
            error_message=check.error or "the check failed",
            reason=Reason.ERROR,
            flag_metadata=metadata,
        )
    if check.reason == "GLOBAL_OVERRIDE":
        reason = Reason.STATIC
    elif check.reason in _MATCHED:
        reason = Reason.TARGETING_MATCH
    else:
        reason = Reason.DEFAULT
    variant = "on" if check.value else "off"
    return FlagResolutionDetails(
        check.value, reason=reason, variant=variant, flag_metadata=metadata
    )


def _mismatch(flag_key: str, default_value: T) -> FlagResolutionDetails[T]:
    return FlagResolutionDetails(
        default_value,
        error_code=ErrorCode.TYPE_MISMATCH,
        error_message=f"millpond flags are boolean; {flag_key!r} was asked for another type",
        reason=Reason.ERROR,
    )


class MillpondProvider(AbstractProvider):
    """Resolves boolean flags with a :class:`~millpond.Millpond` client (and, for the
    ``*_async`` methods, an :class:`~millpond.AsyncMillpond` when given)."""

    def __init__(self, client: Millpond, async_client: AsyncMillpond | None = None) -> None:
        super().__init__()
        self.client = client
        self.async_client = async_client

    def get_metadata(self) -> Metadata:
        return Metadata(name="millpond")

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        company, user = entities(evaluation_context)
        check = self.client.check_flag_details(flag_key, company=company, user=user)
        return resolution(check, default_value)

    async def resolve_boolean_details_async(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        if self.async_client is None:
            return self.resolve_boolean_details(flag_key, default_value, evaluation_context)
        company, user = entities(evaluation_context)
        check = await self.async_client.check_flag_details(flag_key, company=company, user=user)
        return resolution(check, default_value)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return _mismatch(flag_key, default_value)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return _mismatch(flag_key, default_value)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return _mismatch(flag_key, default_value)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[Any] | Mapping[str, Any],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[Any] | Mapping[str, Any]]:
        return _mismatch(flag_key, default_value)

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """A track event for the context's company and user (``value``: the quantity)."""
        company, user = entities(evaluation_context)
        value = tracking_event_details.value if tracking_event_details is not None else None
        quantity = int(value) if isinstance(value, int | float) else 1
        self.client.track(tracking_event_name, company=company, user=user, quantity=quantity)
