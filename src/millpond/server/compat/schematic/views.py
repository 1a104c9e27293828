"""millpond's companies, users and memberships as the Schematic SDK's response models
(``CompanyDetailResponseData``, ``UserDetailResponseData``, ``CompanyMembership…``).

Schematic keeps keys and traits as records of their own (with definitions); millpond keeps
them on the company or user, so their ids here are derived (stable for the same entity and
name) and their times are the entity's."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from millpond.models.flags import Company, TraitValue, User

from ...accounts.service import Principal
from ...flags import directory
from ...flags.directory import Membership
from ...flags.entities import COMPANY
from ...flags.service import FlagService

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _times(entity: Company | User) -> tuple[datetime, datetime]:
    created = entity.created_at or _EPOCH
    return created, entity.updated_at or created


def _trait_type(value: TraitValue) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string"


def _trait_text(value: TraitValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _keys(entity: Company | User, entity_type: str, env_id: str) -> list[dict[str, Any]]:
    created, updated = _times(entity)
    return [
        {
            "created_at": created,
            "definition": {
                "created_at": created,
                "entity_type": entity_type,
                "id": f"ekd_{entity_type}_{name}",
                "key": name,
                "updated_at": updated,
            },
            "definition_id": f"ekd_{entity_type}_{name}",
            "entity_id": entity.id,
            "entity_type": entity_type,
            "environment_id": env_id,
            "id": f"ek_{entity.id}_{name}",
            "key": name,
            "updated_at": updated,
            "value": value,
        }
        for name, value in sorted(entity.keys.items())
    ]


def _traits(entity: Company | User, entity_type: str, env_id: str) -> list[dict[str, Any]]:
    created, updated = _times(entity)
    return [
        {
            "created_at": created,
            "definition": {
                "created_at": created,
                "display_name": name,
                "entity_type": entity_type,
                "hierarchy": [name],
                "id": f"etd_{entity_type}_{name}",
                "trait_type": _trait_type(value),
                "updated_at": updated,
            },
            "definition_id": f"etd_{entity_type}_{name}",
            "environment_id": env_id,
            "id": f"et_{entity.id}_{name}",
            "updated_at": updated,
            "value": _trait_text(value),
        }
        for name, value in sorted(entity.traits.items())
    ]


def company_brief(company: Company, env_id: str) -> dict[str, Any]:
    """``CompanyResponseData``."""
    created, updated = _times(company)
    return {
        "created_at": created,
        "environment_id": env_id,
        "id": company.id,
        "last_seen_at": company.last_seen_at,
        "logo_url": None,
        "name": company.name or "",
        "updated_at": updated,
    }


def user_brief(user: User, env_id: str) -> dict[str, Any]:
    """``UserResponseData``."""
    created, updated = _times(user)
    return {
        "created_at": created,
        "environment_id": env_id,
        "id": user.id,
        "last_seen_at": user.last_seen_at,
        "name": user.name or "",
        "updated_at": updated,
    }


def membership_id(membership: Membership) -> str:
    return f"{membership.user_id}.{membership.company_id}"


def parse_membership_id(value: str) -> tuple[str, str] | None:
    """(user id, company id) of a membership id, or None when it is none."""
    user_id, dot, company_id = value.partition(".")
    return (user_id, company_id) if dot and user_id and company_id else None


def membership(membership: Membership, company: Company | None, env_id: str) -> dict[str, Any]:
    """``CompanyMembershipDetailResponseData`` (the company when known)."""
    return {
        "company": company_brief(company, env_id) if company is not None else None,
        "company_id": membership.company_id,
        "created_at": membership.created_at,
        "id": membership_id(membership),
        "updated_at": membership.created_at,
        "user_id": membership.user_id,
    }


class Views:
    """Builds detail views for one request, reading what they need (plans, user counts,
    member companies) once per request."""

    def __init__(self, flags: FlagService, who: Principal, env_id: str) -> None:
        self.flags, self.who, self.env_id = flags, who, env_id
        self._plan_names: dict[str, str] = {}

    async def _plan(self, plan_id: str) -> dict[str, Any]:
        if plan_id not in self._plan_names:
            plan = await self.flags.get_plan(self.who, self.env_id, plan_id)
            self._plan_names[plan_id] = plan.name or plan.id
        return {"id": plan_id, "image_url": None, "name": self._plan_names[plan_id]}

    async def companies(self, companies: Sequence[Company]) -> list[dict[str, Any]]:
        """``CompanyDetailResponseData`` of each."""
        counts = await directory.user_counts(
            self.flags, self.who, self.env_id, [c.id for c in companies]
        )
        views = []
        for company in companies:
            plans = [await self._plan(company.plan_id)] if company.plan_id else []
            views.append(
                {
                    **company_brief(company, self.env_id),
                    "entity_traits": _traits(company, "company", self.env_id),
                    "keys": _keys(company, "company", self.env_id),
                    "plans": plans,
                    "traits": company.traits,
                    "user_count": counts[company.id],
                }
            )
        return views

    async def company(self, company: Company) -> dict[str, Any]:
        (view,) = await self.companies([company])
        return view

    async def users(self, users: Sequence[User]) -> list[dict[str, Any]]:
        """``UserDetailResponseData`` of each."""
        views = []
        for user in users:
            found = await directory.list_memberships(
                self.flags, self.who, self.env_id, user_id=user.id, limit=1000
            )
            members = []
            for item in found:
                company = await self.flags.get_entity(
                    COMPANY, self.who, self.env_id, item.company_id
                )
                members.append(membership(item, company, self.env_id))
            views.append(
                {
                    **user_brief(user, self.env_id),
                    "company_memberships": members,
                    "entity_traits": _traits(user, "user", self.env_id),
                    "keys": _keys(user, "user", self.env_id),
                    "traits": user.traits,
                }
            )
        return views

    async def user(self, user: User) -> dict[str, Any]:
        (view,) = await self.users([user])
        return view


__all__ = ["Views", "company_brief", "membership", "user_brief"]
