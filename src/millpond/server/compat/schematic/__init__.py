"""The Schematic API its Python SDK (``schematichq``) calls, at ``/compat/schematic``: point
the SDK there and it works unchanged::

    from schematic.client import Schematic, SchematicConfig
    client = Schematic("mp_…", SchematicConfig(base_url="http://127.0.0.1:8000/compat/schematic"))
    client.check_flag("new-editor", company={"id": "acme"})
    client.companies.upsert_company(keys={"id": "acme"}, name="Acme", traits={"seats": 3})

- checks and events (:mod:`.checks`): ``POST /flags/{key}/check``, ``POST /flags/check``,
  ``POST /event-batch``, ``POST /events``;
- companies, users, memberships and traits (:mod:`.companies`), as the SDK's response
  models (:mod:`.views`); key and trait definitions, trait values (:mod:`.definitions`);
- flags and their rules (:mod:`.flags`), features (:mod:`.features`): list, count,
  create, read, update, delete; the check log (:mod:`.flag_checks`);
- any other path under the prefix: 404 ``not_supported``.

The key (header ``X-Schematic-Api-Key``, or ``Authorization: Bearer``) must be a millpond
key bound to a flags environment (made by ``POST /v1/flags/environments/{env}/keys``): that
environment is Schematic's. Everything runs through the flags service, as the native API
does. Errors are Schematic's body ``{"error": "<message>", "code": …, "details": …}``
(:class:`.common.SchematicErrors`), which the SDK parses into its ``ApiError``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from ...errors import ServiceError
from . import checks, companies, definitions, features, flag_checks, flags
from .common import PREFIX, SchematicError, SchematicErrors, _caller

_fallback = APIRouter(prefix=PREFIX)


@_fallback.api_route(
    "/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def not_supported(path: str, request: Request) -> None:
    """What millpond's Schematic API does not serve (plans, billing, CRM, webhooks, …)."""
    raise ServiceError(
        404,
        "not_supported",
        f"millpond's Schematic API does not serve {request.method} /{path[:200]}"
        " (see docs/compat.md)",
    )


router = APIRouter()
router.include_router(checks.router)
router.include_router(flags.router)
router.include_router(features.router)
router.include_router(flag_checks.router)
router.include_router(companies.router)
router.include_router(definitions.router)
router.include_router(_fallback)

__all__ = ["PREFIX", "SchematicError", "SchematicErrors", "_caller", "router"]
