"""Write millpond modules: server-side Python published to a database.

A module declares tables, records and reducers with the decorators below; ``millpond
publish owner/db path`` uploads it. See docs/modules.md::

    from millpond.module import ReducerContext, SenderError, Identity, Timestamp
    from millpond.module import table, reducer, primary_key, index

    @table(public=True)
    class Message:
        id: int = primary_key(auto_inc=True)
        sender: Identity = index()
        sent: Timestamp
        text: str

    @reducer
    def send_message(ctx: ReducerContext, text: str) -> None:
        if not text:
            raise SenderError("Messages must not be empty")
        ctx.db.message.insert(Message(sender=ctx.sender, sent=ctx.timestamp, text=text))
"""

from ._context import Database, ReducerContext, SenderError, TableHandle
from ._declare import (
    DeclarationError,
    client_connected,
    client_disconnected,
    column,
    index,
    init,
    primary_key,
    record,
    reducer,
    table,
    unique,
)
from ._def import ModuleDef
from ._types import F32, F64, I16, I32, I64, Identity, PgType, ScheduleAt, Timestamp

__all__ = [
    "F32",
    "F64",
    "I16",
    "I32",
    "I64",
    "Database",
    "DeclarationError",
    "Identity",
    "ModuleDef",
    "PgType",
    "ReducerContext",
    "ScheduleAt",
    "SenderError",
    "TableHandle",
    "Timestamp",
    "client_connected",
    "client_disconnected",
    "column",
    "index",
    "init",
    "primary_key",
    "record",
    "reducer",
    "table",
    "unique",
]
