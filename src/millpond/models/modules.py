"""Modules: publishing a database's module, its versions, reducer calls and logs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from .common import RequestModel, WireModel


class ModulePublish(RequestModel):
    files: dict[str, str] = Field(
        description="The module's source: relative path (``chat.py``, ``chat/__init__.py``"
        " …) → text. Only ``.py`` files."
    )
    entry: str | None = Field(
        default=None,
        description="The module to import (``chat``); default: the only top-level module"
        " or package of ``files``.",
    )
    allow_destructive: bool = Field(
        default=False,
        description="Apply a migration that drops or rewrites data (otherwise 409"
        " destructive_migration, with the diff).",
    )
    dry_run: bool = Field(default=False, description="Plan only: change nothing.")


class ModuleRollback(RequestModel):
    version: int = Field(
        gt=0, le=2**31 - 1, description="The version whose files are published again."
    )
    allow_destructive: bool = False
    dry_run: bool = False


class PlanStep(WireModel):
    kind: str
    description: str
    destructive: bool
    may_fail: bool


class PublishResult(WireModel):
    version: int | None = Field(description="The new version (None for a dry run).")
    first: bool = Field(description="Whether this was the module's first publish (@init ran).")
    dry_run: bool
    destructive: bool
    diff: str = Field(description="The migration, one line per step (+ added, - removed, ~).")
    steps: list[PlanStep]
    swap_ms: float | None = Field(
        default=None, description="How long this replica took to start the new workers."
    )


class ModuleVersion(WireModel):
    version: int
    entry: str
    published_at: datetime
    published_by: str | None
    plan: str
    rolled_back_from: int | None = None
    tables: list[str]
    reducers: list[str]
    active: bool


class ModuleVersionDetail(ModuleVersion):
    files: dict[str, str]
    definition: dict[str, Any]


CallStatus = Literal["committed"]


class CallResult(WireModel):
    """A reducer call that committed. A failed call is an error (422 with code
    ``reducer_failed``, ``reducer_error``, ``reducer_timeout`` or ``reducer_crashed``,
    and ``details`` with the status, the message and the request id)."""

    status: CallStatus = "committed"
    reducer: str
    request_id: str
    return_value: Any = Field(default=None, alias="return")
    retries: int = 0
    duration_us: int | None = None
    xid: int | None = Field(
        default=None,
        description="The call's transaction id, as realtime ``transaction`` messages name it.",
    )


class LogLine(WireModel):
    id: int
    ts: datetime
    version: int
    level: str
    message: str
    reducer: str | None = None
    request_id: str | None = None
    traceback: str | None = None


class IdentityCreated(WireModel):
    """A new anonymous identity of a module's database, and its token: keep the token and
    send it as ``Authorization: Bearer mpt_…`` to be this identity again (it is shown once;
    only its hash is stored)."""

    identity: str = Field(description="64 hex digits: ``ctx.sender`` in its reducer calls.")
    token: str = Field(description="``mpt_…``: works on this database only.")
    database: str


class AnonymousIdentity(WireModel):
    identity: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class ModuleSettings(WireModel):
    anonymous_access: bool = Field(
        description="Whether clients without an account get anonymous identities (public"
        " databases only; on by default)."
    )


class ModuleSettingsUpdate(RequestModel):
    anonymous_access: bool | None = Field(
        default=None,
        description="Turn anonymous identities on or off (off: their tokens"
        " are refused and their sockets closed at once).",
    )


class TokenIssuer(WireModel):
    """A login provider whose tokens (OpenID Connect ID tokens, or any JWT it signs) a
    database's module accepts as its end users' identities."""

    issuer: str = Field(description="The tokens' ``iss``, exactly.")
    audiences: list[str] = Field(description="A token's ``aud`` must name one of these.")
    jwks_uri: str | None = Field(
        default=None,
        description="Where its public keys are fetched (none with ``jwks``; neither: the"
        " issuer's ``/.well-known/openid-configuration`` says).",
    )
    jwks: dict[str, Any] | None = Field(
        default=None, description="Its public keys, as a JSON Web Key Set."
    )
    required_claims: dict[str, Any] = Field(
        default_factory=dict, description="Claims a token must carry, with these values."
    )
    created_at: datetime | None = None


class TokenIssuerPut(RequestModel):
    issuer: str = Field(min_length=1, max_length=1000)
    audiences: list[str] = Field(min_length=1, max_length=20)
    jwks_uri: str | None = Field(default=None, max_length=2000)
    jwks: dict[str, Any] | None = None
    required_claims: dict[str, Any] = Field(default_factory=dict, max_length=20)


class Connection(WireModel):
    """A realtime connection to a module's database, as its lifecycle reducers know it."""

    connection_id: str
    identity: str
    connected_at: datetime
    server: str = Field(description="The server (replica) that holds it.")


class Schedule(WireModel):
    """One row of a module's schedule tables, as the scheduler sees it."""

    table: str
    scheduled_id: int
    reducer: str
    state: Literal["due", "recurring", "failed"] = Field(
        description="due: one run, at `due`; recurring: every `interval_us`, next at `due`;"
        " failed: a one-shot run that failed every attempt (kept, not run again)."
    )
    due: datetime | None = Field(description="The next intended run (None when failed).")
    interval_us: int | None = None
    attempts: int = Field(description="Failed runs since the last one that committed.")
    last_run: datetime | None = None
    last_error: str | None = None
