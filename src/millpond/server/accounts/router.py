"""Routes for /v1/me, /v1/users, /v1/keys, /v1/service-accounts (thin: see service.py)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ...models import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    Count,
    KeyRevoke,
    Me,
    PasswordReset,
    PasswordSet,
    ServiceAccount,
    ServiceAccountCreate,
    User,
    UserCreate,
    UserCreated,
)
from ..deps import Caller, Svc
from . import logins, service

router = APIRouter(prefix="/v1")


@router.get("/me", response_model=Me)
async def me(svc: Svc, who: Caller) -> Me:
    return await service.me(svc.store, who)


@router.put("/me/password", status_code=204)
async def set_own_password(body: PasswordSet, svc: Svc, who: Caller) -> Response:
    await logins.set_own_password(svc.store, who, body)
    return Response(status_code=204)


@router.post("/users", response_model=UserCreated, status_code=201)
async def create_user(body: UserCreate, svc: Svc, who: Caller) -> UserCreated:
    return await service.create_user(svc.store, who, body)


@router.get("/users", response_model=list[User])
async def list_users(svc: Svc, who: Caller) -> list[User]:
    return await service.list_users(svc.store, who)


@router.get("/users/{username}", response_model=User)
async def get_user(username: str, svc: Svc, who: Caller) -> User:
    return await service.get_user(svc.store, who, username)


@router.delete("/users/{username}", status_code=204)
async def delete_user(
    username: str, svc: Svc, who: Caller, delete_databases: bool = False
) -> Response:
    await service.delete_user_and_databases(
        svc.store, who, username, delete_databases, svc.databases.drop_marked
    )
    return Response(status_code=204)


@router.put("/users/{username}/password", status_code=204)
async def reset_password(username: str, body: PasswordReset, svc: Svc, who: Caller) -> Response:
    await logins.reset_password(svc.store, who, username, body)
    return Response(status_code=204)


@router.post("/keys", response_model=ApiKeyCreated, status_code=201)
async def create_key(body: ApiKeyCreate, svc: Svc, who: Caller) -> ApiKeyCreated:
    return await service.create_key(svc.store, who, body, service.key_limit(svc.settings, who))


@router.get("/keys", response_model=list[ApiKey])
async def list_keys(svc: Svc, who: Caller) -> list[ApiKey]:
    return await service.list_keys(svc.store, who)


@router.delete("/keys/{key_id}", status_code=204)
async def revoke_key(key_id: str, svc: Svc, who: Caller) -> Response:
    await service.revoke_key(svc.store, who, key_id)
    return Response(status_code=204)


@router.post("/keys/revoke", response_model=Count)
async def revoke_keys(body: KeyRevoke, svc: Svc, who: Caller) -> Count:
    return Count(count=await service.revoke_keys(svc.store, who, body))


@router.post("/service-accounts", response_model=ServiceAccount, status_code=201)
async def create_service_account(
    body: ServiceAccountCreate, svc: Svc, who: Caller
) -> ServiceAccount:
    return await service.create_service_account(svc.store, who, body.name)


@router.get("/service-accounts", response_model=list[ServiceAccount])
async def list_service_accounts(svc: Svc, who: Caller) -> list[ServiceAccount]:
    return await service.list_service_accounts(svc.store, who)


@router.get("/service-accounts/{sa_id}", response_model=ServiceAccount)
async def get_service_account(sa_id: int, svc: Svc, who: Caller) -> ServiceAccount:
    return await service.get_service_account(svc.store, who, sa_id)


@router.delete("/service-accounts/{sa_id}", status_code=204)
async def delete_service_account(sa_id: int, svc: Svc, who: Caller) -> Response:
    await service.delete_service_account(svc.store, who, sa_id)
    return Response(status_code=204)


@router.post("/service-accounts/{sa_id}/keys", response_model=ApiKeyCreated, status_code=201)
async def create_service_account_key(
    sa_id: int, body: ApiKeyCreate, svc: Svc, who: Caller
) -> ApiKeyCreated:
    return await service.create_service_account_key(
        svc.store, who, sa_id, body, service.key_limit(svc.settings, who)
    )


@router.get("/service-accounts/{sa_id}/keys", response_model=list[ApiKey])
async def list_service_account_keys(sa_id: int, svc: Svc, who: Caller) -> list[ApiKey]:
    return await service.list_service_account_keys(svc.store, who, sa_id)


@router.post("/service-accounts/{sa_id}/keys/revoke", response_model=Count)
async def revoke_service_account_keys(sa_id: int, body: KeyRevoke, svc: Svc, who: Caller) -> Count:
    return Count(count=await service.revoke_service_account_keys(svc.store, who, sa_id, body))
