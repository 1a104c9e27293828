"""The OpenAPI schema documents every status each route answers, errors included.

FastAPI documents only a route's success status and its 422. :func:`install` wraps the
app's schema builder so each operation also lists the error statuses it can answer, each
with the one error envelope ``{"error": {"code", "message", "details"}}``:

- derived from the route: 401 and 403 where a key is needed, 422 where there is input,
  400 (unparsable) and 413 (too large) where there is a body, 404 where there are path
  parameters, and 500/503 everywhere (an unexpected error; Postgres or a
  background service unavailable);
- declared here, per route: the statuses its service raises (400, 404, 409, 410, 429),
  in :data:`ROUTE_ERRORS`. A route missing from that table is an error at schema build
  time, so a new route cannot go undocumented.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from ..models import ErrorEnvelope
from ..models.backups import MEDIA_TYPE as BACKUP_MEDIA_TYPE
from ..models.transfer import ImportOptions
from .compat import schematic
from .deps import principal
from .transfer.exporter import CONTENT_TYPES

DESCRIPTIONS: dict[int, str] = {
    400: "The request cannot be carried out as sent: a body that is not JSON (`http_error`), "
    "nested too deep (`json_too_deep`) or not valid Unicode (`invalid_text`); SQL that "
    "fails (`sql_error`, `statement_timeout`); an unreadable import file; a file that is "
    "not a database backup (`invalid_backup`, `unsupported_backup_format`); a backup or a "
    "restore that Postgres refused (`backup_failed`, `restore_failed`).",
    401: "Missing, unknown, revoked or expired API key (`unauthorized`), a revoked "
    "anonymous identity's token (`identity_revoked`), or a login provider's token that does "
    "not verify (`invalid_token`, `token_expired`, `token_not_yet_valid`, `token_audience`, "
    "`unknown_issuer`).",
    403: "The key may not do this (e.g. `forbidden`, `read_only_key`, `admin_required`, "
    "`environment_key`, `environment_forbidden`, `invalid_signature`, `anonymous_identity`, "
    "`anonymous_disabled`, `identity_other_database`, `claim_required`), a per-account "
    "limit is reached (`limit_exceeded`), or the current password is wrong "
    "(`wrong_password`).",
    404: "What the request names does not exist or is not visible to the caller (`*_not_found`).",
    409: "The request conflicts with the current state (e.g. `*_exists`, `key_conflict`, "
    "`cannot_delete_self`, `password_changed`, `database_not_empty`, `cluster_not_empty`, "
    "`cluster_draining`, `already_on_cluster`).",
    410: "The export's link or file has expired (`export_expired`).",
    413: "The request body is larger than the server accepts (`request_too_large`; an "
    "uploaded file: `file_too_large`).",
    422: "The input is invalid (`validation_error`, `invalid_name`, ...), or a reducer call "
    "did not commit (`reducer_failed`, `reducer_error`, `reducer_timeout`, `reducer_crashed`).",
    429: "The account's connection budget is spent (`connection_budget_exceeded`), too "
    "many anonymous identities were made (`rate_limited`), or too many wrong passwords "
    "were given for the user (`too_many_attempts`); retry later.",
    500: "Unexpected server error (`internal_error`); the server log has the details.",
    503: "Postgres or a background service is unavailable for now (`postgres_unavailable`, "
    "`unavailable`), or the server's tenant connections are all in use "
    "(`connection_budget_exceeded`), or the database is being moved to another cluster "
    "(`database_moving`); retry.",
}

F = "/v1/flags/environments/{env}"
_NONE: frozenset[int] = frozenset()
_LOOKUP = frozenset({404})
_CREATE = frozenset({409})
_CHANGE = frozenset({404, 409})
_SCHEMATIC_READ = frozenset({400, 404})
_SCHEMATIC_WRITE = frozenset({400, 404, 409})

# The statuses beyond the derived ones (see the module's docstring), per (method, path).
ROUTE_ERRORS: dict[tuple[str, str], frozenset[int]] = {
    # accounts
    ("GET", "/v1/me"): _NONE,
    ("PUT", "/v1/me/password"): frozenset({409, 429}),
    ("GET", "/v1/users"): _NONE,
    ("POST", "/v1/users"): _CREATE,
    ("GET", "/v1/users/{username}"): _LOOKUP,
    ("DELETE", "/v1/users/{username}"): _CHANGE,
    ("PUT", "/v1/users/{username}/password"): _LOOKUP,
    ("GET", "/v1/keys"): _NONE,
    ("POST", "/v1/keys"): _NONE,
    ("DELETE", "/v1/keys/{key_id}"): _LOOKUP,
    ("POST", "/v1/keys/revoke"): _LOOKUP,
    ("GET", "/v1/service-accounts"): _NONE,
    ("POST", "/v1/service-accounts"): _CREATE,
    ("GET", "/v1/service-accounts/{sa_id}"): _LOOKUP,
    ("DELETE", "/v1/service-accounts/{sa_id}"): _LOOKUP,
    ("POST", "/v1/service-accounts/{sa_id}/keys"): _LOOKUP,
    ("GET", "/v1/service-accounts/{sa_id}/keys"): _LOOKUP,
    ("POST", "/v1/service-accounts/{sa_id}/keys/revoke"): _LOOKUP,
    # databases
    ("GET", "/v1/databases"): _NONE,
    ("POST", "/v1/databases"): frozenset({404, 409}),  # a named cluster: not found, draining
    ("GET", "/v1/databases/{owner}/{name}"): _LOOKUP,
    ("PATCH", "/v1/databases/{owner}/{name}"): _CHANGE,
    ("DELETE", "/v1/databases/{owner}/{name}"): _LOOKUP,
    ("GET", "/v1/databases/{owner}/{name}/collaborators"): _LOOKUP,
    ("PUT", "/v1/databases/{owner}/{name}/collaborators/{username}"): _LOOKUP,
    ("DELETE", "/v1/databases/{owner}/{name}/collaborators/{username}"): _LOOKUP,
    ("GET", "/v1/databases/{owner}/{name}/backup"): frozenset({400, 404, 429}),
    ("POST", "/v1/databases/{owner}/{name}/restore"): frozenset({400, 404, 409, 413, 429}),
    ("POST", "/v1/databases/{owner}/{name}/move"): frozenset({400, 404, 409}),
    # clusters (server admins)
    ("GET", "/v1/clusters"): _NONE,
    ("POST", "/v1/clusters"): _CREATE,
    ("GET", "/v1/clusters/{name}"): _LOOKUP,
    ("PATCH", "/v1/clusters/{name}"): _LOOKUP,
    ("DELETE", "/v1/clusters/{name}"): _CHANGE,
    # modules
    ("POST", "/v1/databases/{owner}/{name}/module"): frozenset({404, 409}),
    ("GET", "/v1/databases/{owner}/{name}/module"): _LOOKUP,
    ("GET", "/v1/databases/{owner}/{name}/module/versions"): _LOOKUP,
    ("GET", "/v1/databases/{owner}/{name}/module/versions/{version}"): _LOOKUP,
    ("POST", "/v1/databases/{owner}/{name}/module/rollback"): frozenset({404, 409}),
    ("GET", "/v1/databases/{owner}/{name}/module/logs"): _LOOKUP,
    ("POST", "/v1/databases/{owner}/{name}/call/{reducer}"): _LOOKUP,
    ("GET", "/v1/databases/{owner}/{name}/module/settings"): _LOOKUP,
    ("PATCH", "/v1/databases/{owner}/{name}/module/settings"): _LOOKUP,
    ("POST", "/v1/databases/{owner}/{name}/identities"): frozenset({403, 404, 409, 429}),
    ("GET", "/v1/databases/{owner}/{name}/identities"): _LOOKUP,
    ("DELETE", "/v1/databases/{owner}/{name}/identities/{identity}"): _LOOKUP,
    ("GET", "/v1/databases/{owner}/{name}/connections"): _CHANGE,
    ("GET", "/v1/databases/{owner}/{name}/schedules"): _CHANGE,
    ("GET", "/v1/databases/{owner}/{name}/module/issuers"): _LOOKUP,
    ("PUT", "/v1/databases/{owner}/{name}/module/issuers"): _LOOKUP,
    ("DELETE", "/v1/databases/{owner}/{name}/module/issuers"): _LOOKUP,
    # query
    ("POST", "/v1/query"): frozenset({400, 404, 429}),
    # imports and exports
    ("POST", "/v1/imports"): _LOOKUP,
    ("POST", "/v1/imports/preview"): _LOOKUP,
    ("GET", "/v1/imports"): _NONE,
    ("GET", "/v1/exports"): _NONE,
    ("GET", "/v1/imports/{job_id}"): _LOOKUP,
    ("POST", "/v1/exports"): _LOOKUP,
    ("POST", "/v1/exports/stream"): frozenset({400, 404, 429}),
    ("GET", "/v1/exports/{job_id}"): _LOOKUP,
    ("GET", "/v1/exports/{job_id}/download"): frozenset({403, 404, 410}),
    # flags: environments and their keys
    ("GET", "/v1/flags/environments"): _NONE,
    ("POST", "/v1/flags/environments"): _CREATE,
    ("POST", "/v1/flags/environments/defaults"): _CREATE,
    ("GET", F): _LOOKUP,
    ("PATCH", F): _CHANGE,
    ("DELETE", F): _LOOKUP,
    ("POST", F + "/keys"): _LOOKUP,
    ("GET", F + "/keys"): _LOOKUP,
    ("DELETE", F + "/keys/{key_id}"): _LOOKUP,
    # flags: features, flags, rules
    ("POST", F + "/features"): _CHANGE,
    ("GET", F + "/features"): _LOOKUP,
    ("GET", F + "/features/{feature_id}"): _LOOKUP,
    ("PATCH", F + "/features/{feature_id}"): _CHANGE,
    ("DELETE", F + "/features/{feature_id}"): _LOOKUP,
    ("POST", F + "/flags"): _CHANGE,
    ("GET", F + "/flags"): _LOOKUP,
    ("GET", F + "/flags/{key}"): _LOOKUP,
    ("PATCH", F + "/flags/{key}"): _CHANGE,
    ("DELETE", F + "/flags/{key}"): _LOOKUP,
    ("POST", F + "/flags/{key}/restore"): _CHANGE,
    ("POST", F + "/flags/{key}/purge"): _CHANGE,
    ("GET", F + "/flags/{key}/ruleset"): _LOOKUP,
    ("GET", F + "/rulesets"): _LOOKUP,
    ("GET", F + "/flags/{key}/rules"): _LOOKUP,
    ("PUT", F + "/flags/{key}/rules"): _CHANGE,
    ("POST", F + "/flags/{key}/rules"): _CHANGE,
    ("GET", F + "/flags/{key}/rules/{rule_id}"): _LOOKUP,
    ("PUT", F + "/flags/{key}/rules/{rule_id}"): _CHANGE,
    ("DELETE", F + "/flags/{key}/rules/{rule_id}"): _LOOKUP,
    # flags: checks
    ("POST", F + "/flags/{key}/check"): _LOOKUP,
    ("POST", F + "/check"): _LOOKUP,
    ("GET", F + "/checks"): _LOOKUP,
    # flags: plans, entitlements, overrides
    ("POST", F + "/plans"): _CHANGE,
    ("GET", F + "/plans"): _LOOKUP,
    ("GET", F + "/plans/{plan_id}"): _LOOKUP,
    ("PATCH", F + "/plans/{plan_id}"): _CHANGE,
    ("DELETE", F + "/plans/{plan_id}"): _LOOKUP,
    ("POST", F + "/entitlements"): _CHANGE,
    ("GET", F + "/entitlements"): _LOOKUP,
    ("GET", F + "/entitlements/{entitlement_id}"): _LOOKUP,
    ("PATCH", F + "/entitlements/{entitlement_id}"): _CHANGE,
    ("DELETE", F + "/entitlements/{entitlement_id}"): _LOOKUP,
    ("POST", F + "/overrides"): _CHANGE,
    ("GET", F + "/overrides"): _LOOKUP,
    ("GET", F + "/overrides/{override_id}"): _LOOKUP,
    ("PATCH", F + "/overrides/{override_id}"): _CHANGE,
    ("DELETE", F + "/overrides/{override_id}"): _LOOKUP,
    # flags: companies and users
    ("POST", F + "/companies"): _CHANGE,
    ("GET", F + "/companies"): _LOOKUP,
    ("POST", F + "/companies/lookup"): _CHANGE,
    ("GET", F + "/companies/{company_id}"): _LOOKUP,
    ("DELETE", F + "/companies/{company_id}"): _LOOKUP,
    ("GET", F + "/companies/{company_id}/metrics"): _LOOKUP,
    ("POST", F + "/users"): _CHANGE,
    ("GET", F + "/users"): _LOOKUP,
    ("POST", F + "/users/lookup"): _CHANGE,
    ("GET", F + "/users/{user_id}"): _LOOKUP,
    ("DELETE", F + "/users/{user_id}"): _LOOKUP,
    ("GET", F + "/users/{user_id}/metrics"): _LOOKUP,
    # flags: events and audit
    ("POST", F + "/events"): _CHANGE,
    ("GET", F + "/events"): _LOOKUP,
    ("GET", F + "/audit"): _LOOKUP,
    # compat: Schematic (invalid input is 400 there)
    ("POST", "/compat/schematic/flags/{key}/check"): _SCHEMATIC_READ,
    ("POST", "/compat/schematic/flags/check"): _SCHEMATIC_READ,
    ("POST", "/compat/schematic/event-batch"): _SCHEMATIC_WRITE,
    ("POST", "/compat/schematic/events"): _SCHEMATIC_WRITE,
    ("GET", "/compat/schematic/flags"): _SCHEMATIC_READ,
    ("GET", "/compat/schematic/flags/count"): _SCHEMATIC_READ,
    ("POST", "/compat/schematic/flags"): _SCHEMATIC_WRITE,
    ("GET", "/compat/schematic/flags/{flag_id}"): _SCHEMATIC_READ,
    ("PUT", "/compat/schematic/flags/{flag_id}"): _SCHEMATIC_WRITE,
    ("DELETE", "/compat/schematic/flags/{flag_id}"): _SCHEMATIC_WRITE,
    ("PUT", "/compat/schematic/flags/{flag_id}/rules"): _SCHEMATIC_WRITE,
    ("GET", "/compat/schematic/features"): _SCHEMATIC_READ,
    ("GET", "/compat/schematic/features/count"): _SCHEMATIC_READ,
    ("POST", "/compat/schematic/features"): _SCHEMATIC_WRITE,
    ("GET", "/compat/schematic/features/{feature_id}"): _SCHEMATIC_READ,
    ("PUT", "/compat/schematic/features/{feature_id}"): _SCHEMATIC_WRITE,
    ("DELETE", "/compat/schematic/features/{feature_id}"): _SCHEMATIC_WRITE,
    ("GET", "/compat/schematic/flag-checks"): _SCHEMATIC_READ,
    ("GET", "/compat/schematic/flag-checks/count"): _SCHEMATIC_READ,
    ("GET", "/compat/schematic/flag-checks/latest"): _SCHEMATIC_READ,
    ("GET", "/compat/schematic/flag-checks/{flag_check_id}"): _SCHEMATIC_READ,
    ("GET", "/compat/schematic/companies"): _SCHEMATIC_READ,
    ("GET", "/compat/schematic/companies/count"): _SCHEMATIC_READ,
    ("POST", "/compat/schematic/companies"): _SCHEMATIC_WRITE,
    ("POST", "/compat/schematic/companies/create"): _SCHEMATIC_WRITE,
    ("GET", "/compat/schematic/companies/lookup"): _SCHEMATIC_READ,
    ("POST", "/compat/schematic/companies/delete"): _SCHEMATIC_WRITE,
    ("GET", "/compat/schematic/companies/{company_id}"): _SCHEMATIC_READ,
    ("DELETE", "/compat/schematic/companies/{company_id}"): _SCHEMATIC_WRITE,
    ("GET", "/compat/schematic/users"): _SCHEMATIC_READ,
    ("GET", "/compat/schematic/users/count"): _SCHEMATIC_READ,
    ("POST", "/compat/schematic/users"): _SCHEMATIC_WRITE,
    ("POST", "/compat/schematic/users/create"): _SCHEMATIC_WRITE,
    ("GET", "/compat/schematic/users/lookup"): _SCHEMATIC_READ,
    ("POST", "/compat/schematic/users/delete"): _SCHEMATIC_WRITE,
    ("GET", "/compat/schematic/users/{user_id}"): _SCHEMATIC_READ,
    ("DELETE", "/compat/schematic/users/{user_id}"): _SCHEMATIC_WRITE,
    ("GET", "/compat/schematic/company-memberships"): _SCHEMATIC_READ,
    ("POST", "/compat/schematic/company-memberships"): _SCHEMATIC_WRITE,
    ("DELETE", "/compat/schematic/company-memberships/{company_membership_id}"): _SCHEMATIC_WRITE,
    ("POST", "/compat/schematic/company-traits"): _SCHEMATIC_WRITE,
    ("POST", "/compat/schematic/user-traits"): _SCHEMATIC_WRITE,
    ("GET", "/compat/schematic/entity-key-definitions"): _SCHEMATIC_READ,
    ("GET", "/compat/schematic/entity-key-definitions/count"): _SCHEMATIC_READ,
    ("GET", "/compat/schematic/entity-trait-definitions"): _SCHEMATIC_READ,
    ("GET", "/compat/schematic/entity-trait-definitions/count"): _SCHEMATIC_READ,
    ("POST", "/compat/schematic/entity-trait-definitions"): _SCHEMATIC_READ,
    (
        "GET",
        "/compat/schematic/entity-trait-definitions/{entity_trait_definition_id}",
    ): _SCHEMATIC_READ,
    ("GET", "/compat/schematic/entity-trait-values"): _SCHEMATIC_READ,
    # compat: bit.io (/v2beta)
    ("POST", "/v2beta/query"): frozenset({400, 404, 429}),
    ("GET", "/v2beta/db/"): _NONE,
    ("POST", "/v2beta/db/"): _CREATE,
    ("GET", "/v2beta/db/{owner}/{name}"): _LOOKUP,
    ("PATCH", "/v2beta/db/{owner}/{name}"): _CHANGE,
    ("DELETE", "/v2beta/db/{owner}/{name}"): _LOOKUP,
    ("POST", "/v2beta/db/{owner}/{name}/import/"): frozenset({400, 404, 413}),
    ("GET", "/v2beta/import/{import_id}"): _LOOKUP,
    ("POST", "/v2beta/db/{owner}/{name}/export/"): _LOOKUP,
    ("GET", "/v2beta/export/{export_id}"): _LOOKUP,
    ("GET", "/v2beta/service-account/"): _NONE,
    ("GET", "/v2beta/service-account/{service_account_id}"): _LOOKUP,
    ("POST", "/v2beta/service-account/{service_account_id}/api-key/"): _LOOKUP,
    ("DELETE", "/v2beta/service-account/{service_account_id}/api-key/"): _LOOKUP,
    ("POST", "/v2beta/api-key/"): _NONE,
    ("DELETE", "/v2beta/api-key/"): _LOOKUP,
    # health
    ("GET", "/v1/health"): _NONE,
    ("GET", "/v1/health/live"): _NONE,
    ("GET", "/v1/health/ready"): _NONE,
}

# Routes that need a key but whose key is never refused with 403.
_NO_FORBIDDEN = frozenset({("GET", "/v1/me")})

# Bodies the route reads itself (FastAPI cannot see them).
_UPLOAD_FORM = {
    "type": "object",
    "required": ["db_name", "table_name", "file"],
    "properties": {
        "db_name": {"type": "string", "description": "owner/name"},
        "table_name": {"type": "string", "minLength": 1, "maxLength": 63},
        "file": {"type": "string", "format": "binary"},
    },
    "additionalProperties": {"type": "string"},
}
_IMPORT_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ImportOptions"}},
        "multipart/form-data": {"schema": _UPLOAD_FORM},
    },
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_RESTORE = ("POST", "/v1/databases/{owner}/{name}/restore")
_BACKUP = ("GET", "/v1/databases/{owner}/{name}/backup")
_MANUAL_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/imports"): _IMPORT_BODY,
    ("POST", "/v1/imports/preview"): _IMPORT_BODY,
    _RESTORE: {  # a backup file (models/backups.py), whatever its content type
        "required": True,
        "content": {BACKUP_MEDIA_TYPE: _BINARY, "application/octet-stream": _BINARY},
    },
}
# Upserts: 200 when the record existed, 201 when it was created.
_UPSERTS = {("POST", F + "/companies"), ("POST", F + "/users")}
_DOWNLOAD = ("GET", "/v1/exports/{job_id}/download")
_AUTH_DEPENDENCIES: tuple[Callable[..., Any], ...] = (principal, schematic._caller)

_ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}
_SCHEMATIC_ERROR = {"$ref": "#/components/schemas/SchematicError"}


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` document every error status (built once, then cached)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_errors(build(), app.routes)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_errors(schema: dict[str, Any], routes: Iterable[Any]) -> None:
    """Add the error statuses of every operation of ``schema`` (in place)."""
    _add_components(schema)
    for path, route in api_routes(routes):
        for method in sorted(route.methods or ()):
            _document(schema["paths"][path][method.lower()], method, path, route)
    _drop_unused(schema)


def api_routes(routes: Iterable[Any]) -> Iterator[tuple[str, APIRoute]]:
    """(full path, route) of each API route in the schema, included routers' too."""
    # newer FastAPI keeps included routers as contexts over their routes; older flattens them
    contexts = getattr(routing, "iter_route_contexts", None)
    for item in contexts(list(routes)) if contexts is not None else routes:
        route = getattr(item, "original_route", item)
        if isinstance(route, APIRoute) and route.include_in_schema:
            yield str(item.path_format), route


def error_statuses(method: str, path: str, route: APIRoute) -> set[int]:
    """Every error status ``method path`` can answer."""
    key = (method, path)
    if key not in ROUTE_ERRORS:
        raise KeyError(f"{method} {path}: declare its errors in ROUTE_ERRORS")
    statuses = {500, 503} | ROUTE_ERRORS[key]
    if _authenticated(route.dependant):
        statuses |= {401} if key in _NO_FORBIDDEN else {401, 403}
    if route.body_field is not None or key in _MANUAL_BODIES:
        statuses |= {400, 413, 422}
    if route.dependant.path_params:
        statuses |= {404, 422}
    if _has_inputs(route.dependant):
        statuses.add(422)
    return statuses


def _document(operation: dict[str, Any], method: str, path: str, route: APIRoute) -> None:
    key = (method, path)
    if key in _MANUAL_BODIES:
        operation["requestBody"] = _MANUAL_BODIES[key]
    if key == _BACKUP:
        operation["responses"]["200"]["content"] = {BACKUP_MEDIA_TYPE: _BINARY}
    if key == _DOWNLOAD:  # the exported file, in its format's media type
        binary = {"schema": {"type": "string", "format": "binary"}}
        content = {media.split(";")[0]: binary for media in CONTENT_TYPES.values()}
        content["application/json"] = {"schema": {}}  # a JSON export is any JSON
        operation["responses"]["200"]["content"] = content
    responses = operation["responses"]
    if key in _UPSERTS:
        responses["201"] = {**responses["200"], "description": "Created"}
    envelope = _SCHEMATIC_ERROR if path.startswith(schematic.PREFIX + "/") else _ENVELOPE
    for status in sorted(error_statuses(method, path, route)):
        responses[str(status)] = {
            "description": DESCRIPTIONS[status],
            "content": {"application/json": {"schema": envelope}},
        }


def _authenticated(dependant: Dependant) -> bool:
    return any(
        dep.call in _AUTH_DEPENDENCIES or _authenticated(dep) for dep in dependant.dependencies
    )


def _has_inputs(dependant: Dependant) -> bool:
    if dependant.path_params or dependant.query_params or dependant.header_params:
        return True
    return any(_has_inputs(dep) for dep in dependant.dependencies)


def _add_components(schema: dict[str, Any]) -> None:
    models = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorEnvelope, ImportOptions, schematic.SchematicError):
        found = model.model_json_schema(ref_template="#/components/schemas/{model}")
        models.update(found.pop("$defs", {}))
        models[model.__name__] = found


def _drop_unused(schema: dict[str, Any]) -> None:
    """FastAPI's own 422 models no longer describe any answer: drop them."""
    text = json.dumps(schema["paths"])
    models = schema["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        if f'"#/components/schemas/{name}"' not in text:
            models.pop(name, None)


__all__ = ["DESCRIPTIONS", "ROUTE_ERRORS", "document_errors", "error_statuses", "install"]
