"""A terminal chat client for ``chat_module.py`` (SpacetimeDB's quickstart client), on
the typed bindings ``millpond generate`` writes (``module_bindings/`` next to this file,
or anywhere on ``PYTHONPATH``): prints every message as it arrives, sends each line you
type; ``/name NAME`` sets your name.

    millpond generate alice/chat --out examples/chat/module_bindings
    python examples/chat/client.py alice/chat

The key comes from MILLPOND_API_KEY, the server from MILLPOND_URL.
"""

from __future__ import annotations

import sys
import threading

from module_bindings import Message, Module, User

from millpond import Millpond, ReducerError
from millpond.client.realtime import Event, Realtime


def user_name(rt: Realtime, identity: str) -> str:
    user = User.find(rt, identity)
    return user.name if user is not None and user.name else identity[:8]


def main(database: str) -> int:
    printing = threading.Lock()

    def say(line: str) -> None:
        with printing:
            print(line, flush=True)

    with Millpond() as mp, mp.realtime(database, callbacks="thread") as rt:
        chat = Module(mp, database)

        def on_message(message: Message, event: Event) -> None:
            say(f"{user_name(rt, message.sender)}: {message.text}")

        def on_rename(old: User, new: User, event: Event) -> None:
            if old.name != new.name:
                say(f"{old.name or old.identity[:8]} is now {new.name}")

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
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: client.py OWNER/DATABASE")
    sys.exit(main(sys.argv[1]))
