"""A terminal chat client for ``chat_module.py`` (SpacetimeDB's quickstart client), on
the typed bindings ``millpond generate`` writes (``module_bindings/`` next to this file,
or anywhere on ``PYTHONPATH``): prints every message as it arrives, sends each line you
type; ``/name NAME`` sets your name.

    millpond generate alice/chat --out examples/chat/module_bindings
    python examples/chat/client.py alice/chat

The server comes from MILLPOND_URL. With MILLPOND_API_KEY set you chat as that user;
without it, as an anonymous guest whose token is kept in CHAT_TOKEN_FILE (default
``~/.config/millpond-chat/OWNER-DATABASE.token``), so the next run is the same guest.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from module_bindings import Message, Module, User

from millpond import Millpond, MillpondError, ReducerError
from millpond.client.realtime import Event, Realtime


def user_name(rt: Realtime, identity: str) -> str:
    user = User.find(rt, identity)
    return user.name if user is not None and user.name else identity[:8]


def connect(database: str) -> Millpond:
    """The user of MILLPOND_API_KEY, else an anonymous guest who keeps their token."""
    if os.environ.get("MILLPOND_API_KEY"):
        return Millpond()
    default = Path.home() / ".config" / "millpond-chat" / f"{database.replace('/', '-')}.token"
    return Millpond.anonymous(database, token_file=os.environ.get("CHAT_TOKEN_FILE", default))


def main(database: str) -> int:
    printing = threading.Lock()

    def say(line: str) -> None:
        with printing:
            print(line, flush=True)

    with connect(database) as mp, mp.realtime(database, callbacks="thread") as rt:
        chat = Module(mp, database)

        def on_message(message: Message, event: Event) -> None:
            say(f"{user_name(rt, message.sender)}: {message.text}")

        def on_rename(old: User, new: User, event: Event) -> None:
            if old.name != new.name:
                say(f"{old.name or old.identity[:8]} is now {new.name}")
            elif old.online != new.online and new.identity != rt.identity:
                say(f"{user_name(rt, new.identity)} is {'online' if new.online else 'offline'}")

        rt.subscribe(['SELECT * FROM "user"', "SELECT * FROM message"])
        for message in sorted(Message.iter(rt), key=lambda m: m.id):
            say(f"{user_name(rt, message.sender)}: {message.text}")
        Message.on_insert(rt, on_message)
        User.on_update(rt, on_rename)
        say("connected; type a message, /name NAME, or Ctrl-D to quit")
        for line in sys.stdin:
            line = line.rstrip("\n")
            try:
                if line.startswith("/name "):
                    chat.set_name(line.removeprefix("/name "))
                else:
                    chat.send_message(line)
            except ReducerError as exc:
                say(f"! {exc.message}")
            except MillpondError as exc:  # the server went away mid-call, or refused it
                say(f"! no answer from the server, the line may not have been sent: {exc}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: client.py OWNER/DATABASE")
    sys.exit(main(sys.argv[1]))
