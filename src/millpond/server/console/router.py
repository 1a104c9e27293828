"""``/console``: the web console, server-rendered over the same services as the API
(DESIGN principle 2). Each part of it is a module of its own: ``auth`` (login, logout),
``account`` (your password), ``databases`` (list, create, settings, collaborators,
connect, delete), ``sql`` (the SQL editor), ``tables`` (the table browser), ``transfer``
(imports, exports, their jobs), ``realtime`` (the inspector), ``modules`` (a database's
module), ``keys`` and ``service_accounts`` (API keys), ``users`` (admins'), and ``flags``
(flypper's UI); what they share (sessions, CSRF, the templates) is in ``pages``."""

from __future__ import annotations

from fastapi import APIRouter

from . import (
    account,
    auth,
    databases,
    flags,
    keys,
    modules,
    realtime,
    service_accounts,
    sql,
    tables,
    transfer,
    users,
)

router = APIRouter()
# the database pages' own paths before databases' POST /databases/{owner}/{name}/{action}
for part in (
    auth,
    account,
    sql,
    tables,
    transfer,
    realtime,
    modules,
    databases,
    keys,
    service_accounts,
    users,
    flags,
):
    router.include_router(part.router, prefix="/console")
