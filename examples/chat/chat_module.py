"""SpacetimeDB's quickstart chat, as a millpond module.

Publish it: ``millpond publish alice/chat examples/chat/chat_module.py``.
"""

from millpond.module import (
    Identity,
    ReducerContext,
    SenderError,
    Timestamp,
    client_connected,
    client_disconnected,
    index,
    primary_key,
    reducer,
    table,
)


@table(public=True)
class User:
    identity: Identity = primary_key()
    name: str | None = None
    online: bool = False


@table(public=True)
class Message:
    id: int = primary_key(auto_inc=True)
    sender: Identity = index()
    sent: Timestamp
    text: str


def _validate(value: str, what: str) -> str:
    value = value.strip()
    if not value:
        raise SenderError(f"{what} must not be empty")
    return value


@reducer
def set_name(ctx: ReducerContext, name: str) -> None:
    """Set the caller's name (and make them a user)."""
    name = _validate(name, "Names")
    user = ctx.db.user.find(ctx.sender)
    if user is None:
        ctx.db.user.insert(User(identity=ctx.sender, name=name, online=True))
    else:
        user.name = name
        ctx.db.user.update(user)


@client_connected
def identity_connected(ctx: ReducerContext) -> None:
    """A client connected: its user is online (a new one, nameless, is made)."""
    user = ctx.db.user.find(ctx.sender)
    if user is None:
        ctx.db.user.insert(User(identity=ctx.sender, online=True))
    else:
        user.online = True
        ctx.db.user.update(user)


@client_disconnected
def identity_disconnected(ctx: ReducerContext) -> None:
    """A client's connection ended (even if its server died): its user is offline."""
    user = ctx.db.user.find(ctx.sender)
    if user is not None:
        user.online = False
        ctx.db.user.update(user)


@reducer
def send_message(ctx: ReducerContext, text: str) -> None:
    """Send a message to everyone."""
    text = _validate(text, "Messages")
    ctx.log.info("message from %s", ctx.sender[:8])
    ctx.db.message.insert(Message(sender=ctx.sender, sent=ctx.timestamp, text=text))
