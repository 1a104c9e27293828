"""bit.io's developer API (``/v2beta``), as the ``bitdotio`` 2.2.1 package calls it.

Thin: every route runs through millpond's services (databases, query, transfer,
accounts) exactly as the native API does; :mod:`.shapes` turns their models into bit.io's
bodies. Every answer has a JSON body, errors too (the package parses the body before it
looks at the status): millpond's envelope ``{"error": {"code", "message", "details"}}``,
which the package raises as its ``ApiError(status_code, data)``.

Keys: ``Authorization: Bearer <key>``, a millpond key in either spelling (``mp_…`` or
bit.io's ``v2_…``, see ``accounts/service.py``); keys made here are given in the ``v2_``
spelling, which the package requires.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from ....models import ApiKeyCreate, DatabaseCreate, DatabaseUpdate, KeyRevoke, QueryRequest
from ....models.transfer import ExportCreate, ImportOptions
from ...accounts import service as accounts
from ...deps import Caller, Svc
from ...errors import ServiceError, invalid, not_found
from ...query.adapters import dumps
from ...transfer.service import TransferService, validation_error
from . import shapes
from .shapes import BitDatabaseCreate, BitDatabaseUpdate, BitDataFormat, BitExportCreate, BitQuery

router = APIRouter(prefix=shapes.PREFIX, tags=["compat: bit.io"])

_KEY_NAME = "bit.io API key"


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _transfer(svc: Svc) -> TransferService:
    service = svc.transfer
    if service is None:  # pragma: no cover - started by the lifespan
        raise ServiceError(503, "unavailable", "import and export jobs are not running")
    return service


M = TypeVar("M", bound=BaseModel)


def _validated(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


# -- query ---------------------------------------------------------------------------------


@router.post("/query")
async def query(
    body: BitQuery,
    svc: Svc,
    who: Caller,
    data_format: Annotated[BitDataFormat | None, Query()] = None,
) -> Response:
    """Run SQL in one transaction; ``data_format=objects`` gives rows as objects."""
    request = _validated(
        QueryRequest,
        {"database": body.database_name, "sql": body.query_string, "data_format": data_format},
    )
    result = await svc.query.run(who, request)
    return Response(
        dumps(shapes.query_result(result, body.query_string)), media_type="application/json"
    )


# -- databases -----------------------------------------------------------------------------


@router.get("/db/")
async def list_databases(svc: Svc, who: Caller) -> dict[str, Any]:
    return {"databases": [shapes.database(db) for db in await svc.databases.list(who)]}


@router.post("/db/", status_code=201)
async def create_database(body: BitDatabaseCreate, svc: Svc, who: Caller) -> dict[str, Any]:
    create = _validated(DatabaseCreate, body.model_dump())
    return shapes.database(await svc.databases.create(who, create))


@router.get("/db/{owner}/{name}")
async def get_database(owner: str, name: str, svc: Svc, who: Caller) -> dict[str, Any]:
    return shapes.database(await svc.databases.get(who, f"{owner}/{name}"))


@router.patch("/db/{owner}/{name}")
async def update_database(
    owner: str, name: str, body: BitDatabaseUpdate, svc: Svc, who: Caller
) -> dict[str, Any]:
    update = _validated(DatabaseUpdate, body.model_dump(exclude_none=True))
    return shapes.database(await svc.databases.update(who, f"{owner}/{name}", update))


@router.delete("/db/{owner}/{name}")
async def delete_database(owner: str, name: str, svc: Svc, who: Caller) -> dict[str, Any]:
    full_name = f"{owner}/{name}"
    await svc.databases.delete(who, full_name)
    return {"name": full_name, "deleted": True}


# -- imports and exports -------------------------------------------------------------------


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


@router.post("/db/{owner}/{name}/import/", status_code=202)
async def create_import(
    owner: str, name: str, request: Request, svc: Svc, who: Caller
) -> dict[str, Any]:
    """A multipart form (the options as fields, the file as its ``file`` part), or the
    options with a ``file_url`` as an urlencoded form or JSON."""
    service = _transfer(svc)
    base, db_name = _base_url(request), f"{owner}/{name}"
    kind = _content_type(request)
    if kind == "multipart/form-data":
        job = await service.create_import(
            who,
            body=request.stream(),
            content_type=request.headers["content-type"],
            base_url=base,
            db_name=db_name,
        )
    elif kind in ("application/x-www-form-urlencoded", "application/json"):
        fields = await _fields(request, kind == "application/json")
        options = _validated(ImportOptions, {**fields, "db_name": db_name})
        job = await service.create_import(who, options=options, base_url=base)
    else:
        raise invalid(
            "validation_error",
            "send multipart/form-data (fields and a 'file' part), or a form or JSON with a"
            " file_url",
        )
    return shapes.import_job(job, base)


async def _fields(request: Request, is_json: bool) -> dict[str, Any]:
    raw = await request.body()
    if is_json:
        try:
            data = json.loads(raw)
        except ValueError:
            raise ServiceError(400, "http_error", "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise invalid("validation_error", "the body must be a JSON object")
        return data
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        raise ServiceError(400, "http_error", "the body is not a valid urlencoded form") from None
    fields: dict[str, Any] = {}
    for key, value in pairs:
        if key in fields:
            raise invalid("validation_error", f"{key}: given more than once")
        fields[key] = value
    return {k: v for k, v in fields.items() if v != ""}


@router.get("/import/{import_id}")
async def get_import(import_id: str, request: Request, svc: Svc, who: Caller) -> dict[str, Any]:
    base = _base_url(request)
    return shapes.import_job(await _transfer(svc).get_import(who, import_id, base), base)


@router.post("/db/{owner}/{name}/export/", status_code=202)
async def create_export(
    owner: str, name: str, body: BitExportCreate, request: Request, svc: Svc, who: Caller
) -> dict[str, Any]:
    base = _base_url(request)
    create = _validated(
        ExportCreate, {**body.model_dump(exclude_none=True), "db_name": f"{owner}/{name}"}
    )
    return shapes.export_job(await _transfer(svc).create_export(who, create, base), base)


@router.get("/export/{export_id}")
async def get_export(export_id: str, request: Request, svc: Svc, who: Caller) -> dict[str, Any]:
    base = _base_url(request)
    return shapes.export_job(await _transfer(svc).get_export(who, export_id, base), base)


# -- service accounts and keys -------------------------------------------------------------


def _account_id(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise not_found("service_account_not_found", f"no service account {text!r} of yours")
    return int(text)


@router.get("/service-account/")
async def list_service_accounts(svc: Svc, who: Caller) -> dict[str, Any]:
    found = await accounts.list_service_accounts(svc.store, who)
    return {"service_accounts": [shapes.service_account(a) for a in found]}


@router.get("/service-account/{service_account_id}")
async def get_service_account(service_account_id: str, svc: Svc, who: Caller) -> dict[str, Any]:
    sa_id = _account_id(service_account_id)
    return shapes.service_account(await accounts.get_service_account(svc.store, who, sa_id))


@router.post("/service-account/{service_account_id}/api-key/", status_code=201)
async def create_service_account_key(
    service_account_id: str, svc: Svc, who: Caller
) -> dict[str, Any]:
    sa_id = _account_id(service_account_id)
    body = ApiKeyCreate(name=_KEY_NAME)
    limit = accounts.key_limit(svc.settings, who)
    created = await accounts.create_service_account_key(svc.store, who, sa_id, body, limit)
    return shapes.credentials(created, who.username)


@router.delete("/service-account/{service_account_id}/api-key/")
async def revoke_service_account_keys(
    service_account_id: str, svc: Svc, who: Caller
) -> dict[str, Any]:
    sa_id = _account_id(service_account_id)
    count = await accounts.revoke_service_account_keys(svc.store, who, sa_id, KeyRevoke())
    return {"revoked": count}


@router.post("/api-key/", status_code=201)
async def create_key(svc: Svc, who: Caller) -> dict[str, Any]:
    """A new key with the caller's rights (its service account's, if it is one's)."""
    limit = accounts.key_limit(svc.settings, who)
    created = await accounts.create_key(svc.store, who, ApiKeyCreate(name=_KEY_NAME), limit)
    return shapes.credentials(created, who.username)


@router.delete("/api-key/")
async def revoke_keys(
    svc: Svc,
    who: Caller,
    api_key: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Revoke ``api_key`` (either spelling), or every key of the caller's."""
    if api_key is not None and "\x00" in api_key:
        raise invalid("validation_error", "api_key: must not contain NUL characters")
    count = await accounts.revoke_keys(svc.store, who, KeyRevoke(api_key=api_key))
    return {"revoked": count}


__all__ = ["router"]
