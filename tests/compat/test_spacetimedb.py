"""The original SpacetimeDB Python SDK (``spacetimedb-sdk`` 0.7.0, unmodified) against
millpond: the quickstart chat (``examples/chat``) with bindings from ``millpond generate
--lang spacetimedb-python``, every call of the seed document's examples (connect with
``run``, ``on_subscription_applied``, ``register_row_update``, ``register_on_<reducer>``,
``filter_by_*``, ``iter``, reducer calls, ``schedule_event``), anonymous identities that
come back with their token, failed calls reaching only their caller, and refusals.

The SDK keeps one client per process (``SpacetimeDBClient.instance``), so each client is
a subprocess running :data:`CLIENT`, which prints what its callbacks see as JSON lines
and takes commands on stdin."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from millpond.cli import app

ROOT = Path(__file__).resolve().parents[2]
CHAT = (ROOT / "examples" / "chat" / "chat_module.py").read_text()
# the quickstart's database: a name of this session's own (docs/compat.md's commands make
# a public "chatqs" on the same server, and a module named alone must be the only one)
CHAT_NAME = f"chatqs{os.getpid()}"

CLIENT = r"""
import asyncio, json, sys, threading

from spacetimedb_sdk.spacetimedb_async_client import SpacetimeDBAsyncClient
from spacetimedb_sdk.spacetimedb_client import Identity
import spacetimedb_sdk.local_config as local_config

import module_bindings
from module_bindings.user import User
from module_bindings.message import Message
import module_bindings.send_message_reducer as send_message_reducer
import module_bindings.set_name_reducer as set_name_reducer

host, database = sys.argv[1], sys.argv[2]
local_config.init(".spacetime_test")
token = local_config.get_string("auth_token") or (sys.argv[3] if len(sys.argv) > 3 else None)
client = SpacetimeDBAsyncClient(module_bindings)
# The SDK's own defect, not the server's: when its close() reads the server's close frame
# before websocket-client's reader thread does, that thread notices only at its 10 s
# select timeout, and close() gives up after request_timeout (5 s) with a ValueError of its
# own making. A longer request_timeout is the workaround (docs/compat.md).
client.request_timeout = 15
me = {}


def out(**fields):
    print(json.dumps(fields, default=str), flush=True)


def on_connect(auth_token, identity):
    local_config.set_string("auth_token", auth_token)
    me["identity"] = identity
    out(kind="connected", token=auth_token, identity=str(identity))


def on_applied():
    mine = User.filter_by_identity(me.get("identity"))
    out(
        kind="applied",
        users=sorted((str(u.identity), u.name, u.online) for u in User.iter()),
        messages=sorted(m.text for m in Message.iter()),
        me=None if mine is None else mine.name,
    )


def on_user(op, old, new, event):
    out(kind="user", op=op, old=None if old is None else [old.name, old.online],
        new=None if new is None else [str(new.identity), new.name, new.online],
        reducer=None if event is None else event.reducer_name)


def on_message(op, old, new, event):
    out(kind="message", op=op, text=None if new is None else new.text,
        sender=None if new is None else str(new.sender), sent=None if new is None else new.sent,
        reducer=None if event is None else event.reducer_name,
        caller=None if event is None else str(event.caller_identity),
        mine=len(Message.filter_by_sender(me.get("identity"))))


def on_send_message(sender, address, status, message, text):
    out(kind="send_message", sender=str(sender), status=status, message=message, text=text)


def on_set_name(sender, address, status, message, name):
    out(kind="set_name", sender=str(sender), status=status, message=message, name=name)


User.register_row_update(on_user)
Message.register_row_update(on_message)
send_message_reducer.register_on_send_message(on_send_message)
set_name_reducer.register_on_set_name(on_set_name)
client.register_on_subscription_applied(on_applied)
client.schedule_event(0.2, lambda: out(kind="scheduled"))


def commands(loop):
    for line in sys.stdin:
        command, _, arg = line.rstrip("\n").partition(" ")
        if command == "say":
            send_message_reducer.send_message(arg)
        elif command == "name":
            set_name_reducer.set_name(arg)
        elif command == "subscribe":
            client.subscribe([arg])
    loop.call_soon_threadsafe(client.force_close)


async def main():
    threading.Thread(target=commands, args=(asyncio.get_running_loop(),), daemon=True).start()
    try:
        await client.run(token, host, database, False, on_connect,
                         ["SELECT * FROM User", "SELECT * FROM Message"])
    except Exception as exc:
        out(kind="closed", error=str(exc))
        return
    out(kind="closed", error=None)


asyncio.run(main())
"""


class SdkClient:
    """:data:`CLIENT` in a subprocess; ``expect`` waits for a line matching a predicate."""

    def __init__(self, folder: Path, host: str, database: str, token: str | None) -> None:
        args = [sys.executable, "client.py", host, database] + ([token] if token else [])
        env = {**os.environ, "HOME": str(folder), "PYTHONPATH": str(folder)}
        self.proc = subprocess.Popen(
            args,
            cwd=folder,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, test: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        for event in self.seen:
            if test(event):
                self.seen.remove(event)
                return event
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"not seen; got {self.seen} and output {self.output[-20:]}"
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.output.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue  # the SDK prints some things of its own
            if test(event):
                return event
            self.seen.append(event)

    def kind(self, kind: str, **fields: Any) -> dict[str, Any]:
        return self.expect(
            lambda e: e.get("kind") == kind and all(e.get(k) == v for k, v in fields.items())
        )

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def quit(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        closed = self.kind("closed")
        self.proc.wait(30)
        self._close()
        return closed

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._close()

    def _close(self) -> None:
        """After the process ended: its output ends too, then the pipes are closed."""
        self._reader.join(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


@pytest.fixture(scope="module")
def chat(base_url: str, make_user: Callable[..., tuple[str, str]]) -> tuple[str, str]:
    """A public database running the quickstart chat module: (owner/name, owner's key)."""
    owner, key = make_user(prefix="stdb")
    headers = {"Authorization": f"Bearer {key}"}
    r = httpx.post(
        f"{base_url}/v1/databases",
        json={"name": CHAT_NAME, "is_private": False},
        headers=headers,
        timeout=60,
    )
    assert r.status_code == 201, r.text
    database = f"{owner}/{CHAT_NAME}"
    r = httpx.post(
        f"{base_url}/v1/databases/{database}/module",
        json={"files": {"chat_module.py": CHAT}},
        headers=headers,
        timeout=120,
    )
    assert r.status_code == 201, r.text
    return database, key


@pytest.fixture(scope="module")
def generated(
    base_url: str, chat: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """``module_bindings/`` as ``millpond generate --lang spacetimedb-python`` writes it."""
    database, key = chat
    out = tmp_path_factory.mktemp("generated") / "module_bindings"
    argv = ["--url", base_url, "--key", key, "generate", database]
    argv += ["--lang", "spacetimedb-python", "--out", str(out)]
    env = {"MILLPOND_API_KEY": None, "MILLPOND_URL": None}
    result = CliRunner().invoke(app, argv, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["lang"] == "spacetimedb-python"
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "clean_up.py",
        "message.py",
        "mute_reducer.py",
        "muted.py",
        "send_message_reducer.py",
        "set_name_reducer.py",
        "user.py",
    ]  # no lifecycle or scheduled reducers: clients do not call those
    return out


@pytest.fixture
def bindings(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Path]:
    """Makes a new folder with the generated ``module_bindings/`` and the client script."""

    def make() -> Path:
        folder = tmp_path_factory.mktemp("stdb")
        shutil.copytree(generated, folder / "module_bindings")
        (folder / "client.py").write_text(CLIENT)
        return folder

    return make


@pytest.fixture
def clients() -> Iterator[list[SdkClient]]:
    started: list[SdkClient] = []
    yield started
    for client in started:
        client.kill()


def _host(base_url: str) -> str:
    return base_url.removeprefix("http://")


def test_quickstart_chat_between_a_user_and_an_anonymous_guest(
    base_url: str,
    chat: tuple[str, str],
    bindings: Callable[[], Path],
    clients: list[SdkClient],
) -> None:
    database, key = chat
    host = _host(base_url)
    alice = SdkClient(bindings(), host, database, key)
    clients.append(alice)
    hello = alice.kind("connected")
    assert hello["token"] == key and len(hello["identity"]) == 64
    alice.kind("applied")
    alice.kind("scheduled")  # schedule_event fired in the client's loop
    alice.send("name Alice")
    alice.kind("set_name", status="committed", name="Alice", sender=hello["identity"])
    renamed = alice.kind("user", op="update")
    assert renamed["new"] == [hello["identity"], "Alice", True]

    guest_folder = bindings()
    guest = SdkClient(guest_folder, host, database, None)
    clients.append(guest)
    guest_hello = guest.kind("connected")
    assert guest_hello["token"].startswith("mpt_") and guest_hello["identity"] != hello["identity"]
    applied = guest.kind("applied")
    assert [hello["identity"], "Alice", True] in applied["users"]
    # the guest's @client_connected made its user row; Alice's cache gets it
    alice.kind("user", op="insert", new=[guest_hello["identity"], None, True])

    alice.send("say Hello, World!")
    seen = guest.kind("message", op="insert", text="Hello, World!")
    assert seen["sender"] == hello["identity"] and seen["reducer"] == "send_message"
    assert seen["caller"] == hello["identity"] and isinstance(seen["sent"], int)
    event = guest.kind("send_message", text="Hello, World!")
    assert event["status"] == "committed" and event["sender"] == hello["identity"]
    mine = alice.kind("message", op="insert", text="Hello, World!")
    assert mine["mine"] == 1  # Message.filter_by_sender(own identity)
    alice.kind("send_message", status="committed", text="Hello, World!")

    alice.send("say    ")  # rejected by the reducer: only its caller hears of it
    failed = alice.kind("send_message", status="failed")
    assert failed["message"] == "Messages must not be empty" and not failed["text"].strip()
    guest.send("say from the guest")
    alice.kind("message", op="insert", text="from the guest", sender=guest_hello["identity"])
    assert not [e for e in guest.seen if e.get("status") == "failed"]

    assert guest.quit()["error"] is None
    # its @client_disconnected: Alice sees the guest go offline
    alice.kind("user", op="update", new=[guest_hello["identity"], None, False])

    # the guest comes back with the token the SDK stored: the same identity
    back = SdkClient(guest_folder, host, database, None)
    clients.append(back)
    assert back.kind("connected")["identity"] == guest_hello["identity"]
    again = back.kind("applied")
    assert "Hello, World!" in again["messages"] and "from the guest" in again["messages"]


def test_a_module_named_without_its_owner(
    base_url: str,
    chat: tuple[str, str],
    bindings: Callable[[], Path],
    clients: list[SdkClient],
) -> None:
    """By its name alone, as SpacetimeDB named modules: the one public database of it."""
    client = SdkClient(bindings(), _host(base_url), CHAT_NAME, None)
    clients.append(client)
    assert client.kind("connected")["token"].startswith("mpt_")
    client.kind("applied")  # (its clean close is the quickstart test's guest's)


def test_refusals_close_the_socket_with_a_reason(
    base_url: str,
    chat: tuple[str, str],
    bindings: Callable[[], Path],
    clients: list[SdkClient],
    make_user: Callable[..., tuple[str, str]],
) -> None:
    database, owner_key = chat
    owner = database.split("/")[0]
    for _ in range(2):  # two public databases named "twin": ambiguous
        _, key = make_user(prefix="twin")
        r = httpx.post(
            f"{base_url}/v1/databases",
            json={"name": "twin", "is_private": False},
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        assert r.status_code == 201, r.text
    for where, token, reason in [
        (f"{owner}/nosuch", owner_key, "database_not_found"),
        (f"{owner}/nosuch", None, "unauthorized"),  # no key, and no anonymous identities
        (database, "mp_not_a_key", "unauthorized"),
        ("nosuchname", None, "no public database is named so"),
        ("twin", None, "several public databases are named so"),
    ]:
        client = SdkClient(bindings(), _host(base_url), where, token)
        clients.append(client)
        closed = client.kind("closed")
        assert reason in closed["error"], (where, closed)
