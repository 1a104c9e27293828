"""The flags catalog's forms (features, plans, entitlements, company overrides): a form's
texts turned into the API's request models, validation errors in plain words, and a
feature's kind as a phrase. Pure functions (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from millpond.models.flags import Company, Feature

from ..flags.schemas import (
    EntitlementCreate,
    FeatureCreate,
    FeatureUpdate,
    GrantUpdate,
    OverrideCreate,
    PlanCreate,
    PlanUpdate,
)
from .flag_forms import Form, Problems, plain

M = TypeVar("M", bound=BaseModel)

FEATURE_TYPES = {
    "boolean": "on or off",
    "event": "metered by a track event",
    "trait": "metered by a company trait",
}
AGGREGATIONS = {"count": "their number", "sum": "their total quantity"}

_LABELS = {
    "id": "Id",
    "name": "Name",
    "description": "Description",
    "feature_type": "Kind",
    "event_name": "Track event",
    "metric_aggregation": "Usage is",
    "trait_key": "Trait",
    "plan_id": "Plan",
    "feature_id": "Feature",
    "value_type": "Grants",
    "value_numeric": "Limit",
    "value_trait_key": "Limit trait",
    "metric_period": "Usage counted",
    "company": "Company",
    "expires_at": "Until",
}
_WHOLE = {
    "event features need an event_name": "Track event: an event feature needs the event that"
    " meters it.",
    "trait features need a trait_key": "Trait: a trait feature needs the company trait that"
    " holds its usage.",
    "numeric grants need value_numeric": "Limit: a grant up to a limit needs the limit.",
    "trait grants need value_trait_key": "Limit trait: a grant up to a company trait needs"
    " the trait's name.",
    "give company_id or company (keys), not both": "Company: type the company's keys"
    " (e.g. id=acme).",
}
"""The models' own checks of several fields (errors without a field), in plain words."""


def feature_kind(feature: Feature) -> str:
    """What the feature is, e.g. 'metered by “export” events (their number)'."""
    if feature.feature_type == "event":
        counted = AGGREGATIONS[feature.metric_aggregation]
        return f"metered by “{feature.event_name}” events ({counted})"
    if feature.feature_type == "trait":
        return f"metered by the company trait {feature.trait_key}"
    return "on or off"


def company_label(company: Company | None, company_id: str) -> str:
    """A company as a person knows it: its name and keys (its id when it is gone)."""
    if company is None:
        return company_id
    keys = ", ".join(f"{k}={v}" for k, v in company.keys.items())
    return f"{company.name} ({keys})" if company.name else keys or company_id


# -- validation errors in plain words ----------------------------------------------------------


def problem(error: Any) -> str:
    """One pydantic error of a catalog form as a sentence ("Limit: must be at least 0.")."""
    names = [p for p in error.get("loc", ()) if isinstance(p, str)]
    if not names:
        text = str(error.get("msg", "is not valid"))
        return _WHOLE.get(text, text[:1].upper() + text[1:].rstrip(".") + ".")
    # plain() words the error as "<place>: <what>."; the place is named here instead
    what = plain({**error, "loc": ()}).partition(": ")[2]
    return f"{_LABELS.get(names[0], names[0].replace('_', ' ').capitalize())}: {what}"


def validated(model: type[M], data: dict[str, Any]) -> M:
    """``data`` as ``model``, or :class:`Problems` in plain words."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Problems([problem(e) for e in exc.errors()]) from None


def _text(form: Form, name: str) -> str | None:
    return form.get(name, "").strip() or None


# -- features and plans ------------------------------------------------------------------------


def _feature_fields(form: Form) -> dict[str, Any]:
    """A feature's fields; the metering fields only for the kind that uses them."""
    kind = form.get("feature_type", "boolean")
    return {
        "name": form.get("name", "").strip(),
        "description": form.get("description", "").strip(),
        "feature_type": kind,
        "event_name": _text(form, "event_name") if kind == "event" else None,
        "metric_aggregation": form.get("metric_aggregation", "count"),
        "trait_key": _text(form, "trait_key") if kind == "trait" else None,
    }


def feature_create(form: Form) -> FeatureCreate:
    return validated(FeatureCreate, {"id": _text(form, "id"), **_feature_fields(form)})


def feature_update(form: Form) -> FeatureUpdate:
    fields = _feature_fields(form)
    validated(FeatureCreate, fields)  # the whole feature as it will be
    return validated(FeatureUpdate, fields)


def plan_create(form: Form) -> PlanCreate:
    return validated(PlanCreate, {"id": _text(form, "id"), **plan_fields(form)})


def plan_update(form: Form) -> PlanUpdate:
    return validated(PlanUpdate, plan_fields(form))


def plan_fields(form: Form) -> dict[str, str]:
    return {"name": form.get("name", "").strip(), "description": form.get("description", "")}


# -- grants: entitlements and company overrides ------------------------------------------------


def grant_fields(form: Form) -> dict[str, Any]:
    """A grant form's fields (``flag_macros.grant_fields``) as the API takes them; the limit
    and the limit trait only for the kind of grant that uses them."""
    kind = form.get("value_type", "boolean")
    numeric = form.get("value_numeric", "").strip() if kind == "numeric" else ""
    return {
        "value_type": kind,
        "value_bool": form.get("value_bool", "on") == "on",
        "value_numeric": int(numeric) if numeric.isdigit() else numeric or None,
        "value_trait_key": _text(form, "value_trait_key") if kind == "trait" else None,
        "metric_period": form.get("metric_period", "all_time"),
    }


def entitlement_create(form: Form, plan_id: str, feature_id: str) -> EntitlementCreate:
    data = {"plan_id": plan_id, "feature_id": feature_id, **grant_fields(form)}
    return validated(EntitlementCreate, data)


def grant_update(form: Form) -> GrantUpdate:
    validated(EntitlementCreate, {"plan_id": "p", "feature_id": "f", **grant_fields(form)})
    return validated(GrantUpdate, grant_fields(form))


def until(text: str) -> datetime | None:
    """An override's end as typed (``2026-12-31`` or ``2026-12-31T18:00``, UTC unless it
    says otherwise); None when empty."""
    text = text.strip()
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise Problems([f"Until: “{text}” is not a date (e.g. 2026-12-31T18:00)."]) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def override_create(form: Form, feature_id: str, company: dict[str, str] | None) -> OverrideCreate:
    """A company override of ``feature_id`` for the company with the ``company`` keys."""
    data = {
        "company": company,
        "feature_id": feature_id,
        "expires_at": until(form.get("until", "")),
        **grant_fields(form),
    }
    return validated(OverrideCreate, data)
