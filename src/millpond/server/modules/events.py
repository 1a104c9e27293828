"""Reducer events: what a reducer's transaction writes into the WAL so that its
subscribers learn, with the rows it changed, which reducer changed them.

The worker emits one transactional logical message (``pg_logical_emit_message(true,
PREFIX, …)``) just before it commits; pgoutput streams it between that transaction's
BEGIN and COMMIT, and never when the transaction rolled back. Only the database's reducer
role may emit messages (``EXECUTE`` on the function is revoked from ``PUBLIC`` in every
database), so a tenant's SQL cannot forge an event; the hub still checks each event's
shape and drops one that does not fit, rather than relay it.
"""

from __future__ import annotations

import json
from typing import Any

PREFIX = "millpond.reducer"
MAX_EVENT_BYTES = 1 << 20
_FIELDS: dict[str, tuple[type, ...]] = {
    "reducer": (str,),
    "sender": (str,),
    "connection_id": (str, type(None)),
    "request_id": (str,),
    "timestamp": (str,),
    "status": (str,),
}


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def decode(content: bytes) -> dict[str, Any] | None:
    """The event a message holds, or None when it is not one (malformed, too large)."""
    if len(content) > MAX_EVENT_BYTES:
        return None
    try:
        event = json.loads(content)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    for name, types in _FIELDS.items():
        if not isinstance(event.get(name), types):
            return None
    args = event.get("args")
    if args is not None and not isinstance(args, list | dict):
        return None
    return {name: event.get(name) for name in (*_FIELDS, "args")}
