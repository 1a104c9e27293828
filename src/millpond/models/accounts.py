"""Users, service accounts and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .common import RequestModel, WireModel

KeyScope = Literal["read", "write"]
"""``read``: read-only on every database the principal can see. ``write``: full rights."""


class User(WireModel):
    id: int
    username: str
    is_admin: bool
    created_at: datetime


class UserCreate(RequestModel):
    username: str
    is_admin: bool = False


class ApiKey(WireModel):
    """An API key as listed: never includes the secret."""

    id: str
    name: str | None = None
    prefix: str = Field(description="First characters of the key, to recognise it")
    scope: KeyScope
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    service_account_id: int | None = None
    environment_id: str | None = Field(
        default=None, description="The flags environment the key is bound to, if any"
    )


class ApiKeyCreated(ApiKey):
    """A newly created key: ``secret`` is shown this once and never again."""

    secret: str


class ApiKeyCreate(RequestModel):
    name: str | None = Field(default=None, max_length=100)
    scope: KeyScope = "write"
    expires_in_seconds: int | None = Field(
        default=None, gt=0, le=100 * 365 * 86400, description="At most 100 years"
    )


class KeyRevoke(RequestModel):
    """Revoke one key (by its id or by the key itself) or, with neither, all of them."""

    key_id: str | None = None
    api_key: str | None = None


class UserCreated(WireModel):
    user: User
    api_key: ApiKeyCreated


class ServiceAccount(WireModel):
    id: int
    name: str
    owner: str
    created_at: datetime
    key_count: int = 0


class ServiceAccountCreate(RequestModel):
    name: str = Field(min_length=1, max_length=100)


class Me(WireModel):
    """Who the calling key belongs to."""

    user: User
    service_account: ServiceAccount | None = None
    key: ApiKey
    has_password: bool = Field(
        default=False, description="Whether the user has a password (for the web console)"
    )


class PasswordSet(RequestModel):
    """A user's new password (10 to 1024 characters); ``current_password`` is needed when
    the user already has one."""

    password: str
    current_password: str | None = None


class PasswordReset(RequestModel):
    """An admin's reset of a user's password (10 to 1024 characters)."""

    password: str
