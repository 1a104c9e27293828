"""Wire models: one definition of each request and response, shared by server and SDK."""

from .accounts import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    KeyRevoke,
    KeyScope,
    Me,
    PasswordReset,
    PasswordSet,
    ServiceAccount,
    ServiceAccountCreate,
    User,
    UserCreate,
    UserCreated,
)
from .common import Count, ErrorBody, ErrorEnvelope
from .databases import (
    AccessRole,
    Collaborator,
    CollaboratorRole,
    CollaboratorSet,
    Database,
    DatabaseCreate,
    DatabaseUpdate,
)
from .health import Health, Liveness, PostgresHealth
from .query import Column, DataFormat, QueryRequest, QueryResult

__all__ = [
    "AccessRole",
    "ApiKey",
    "ApiKeyCreate",
    "ApiKeyCreated",
    "Collaborator",
    "CollaboratorRole",
    "CollaboratorSet",
    "Column",
    "Count",
    "DataFormat",
    "Database",
    "DatabaseCreate",
    "DatabaseUpdate",
    "ErrorBody",
    "ErrorEnvelope",
    "Health",
    "KeyRevoke",
    "KeyScope",
    "Liveness",
    "Me",
    "PasswordReset",
    "PasswordSet",
    "PostgresHealth",
    "QueryRequest",
    "QueryResult",
    "ServiceAccount",
    "ServiceAccountCreate",
    "User",
    "UserCreate",
    "UserCreated",
]
