"""SpacetimeDB's quickstart chat, as a millpond module.

Publish it: ``millpond publish alice/chat examples/chat/chat_module.py``.
"""

import datetime

from millpond.module import (
    Identity,
    ReducerContext,
    ScheduleAt,
    SenderError,
    Timestamp,
    client_connected,
    client_disconnected,
    index,
    init,
    primary_key,
    reducer,
    table,
)

KEEP_MESSAGES = datetime.timedelta(days=1)
CLEAN_UP_EVERY = datetime.timedelta(hours=1)


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


@table
class Muted:
    """Who may not send messages (private: no client reads or subscribes to it)."""

    identity: Identity = primary_key()
    since: Timestamp


@table(scheduled="clean_up")
class CleanUp:
    """When the old messages go: one recurring row, made by ``setup``."""

    scheduled_id: int = primary_key(auto_inc=True)
    scheduled_at: ScheduleAt


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


@init
def setup(ctx: ReducerContext) -> None:
    """On the first publish: clean up every hour."""
    ctx.schedule(clean_up, every=CLEAN_UP_EVERY)


@reducer
def clean_up(ctx: ReducerContext, row: CleanUp) -> None:
    """Scheduled: delete the messages older than a day."""
    gone = ctx.sql(
        "DELETE FROM message WHERE sent < %s RETURNING id", [ctx.timestamp - KEEP_MESSAGES]
    )
    ctx.log.info("cleaned up %d old messages", len(gone))


@reducer(private=True)
def mute(ctx: ReducerContext, who: Identity) -> None:
    """The owner only: ``who`` may not send messages any more."""
    if ctx.db.muted.find(who) is None:
        ctx.db.muted.insert(Muted(identity=who, since=ctx.timestamp))


@reducer
def send_message(ctx: ReducerContext, text: str) -> None:
    """Send a message to everyone."""
    if ctx.db.muted.find(ctx.sender) is not None:
        raise SenderError("You are muted")
    text = _validate(text, "Messages")
    ctx.log.info("message from %s", ctx.sender[:8])
    ctx.db.message.insert(Message(sender=ctx.sender, sent=ctx.timestamp, text=text))
