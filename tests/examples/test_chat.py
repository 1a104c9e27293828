"""examples/chat end to end: the commands of its README (create the database, publish the
module), then two terminal clients chatting through the real server: a user, and a guest without
an account who comes back as the same anonymous identity."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "chat"


class Client:
    """``client.py`` in a subprocess, its output lines read as they come."""

    def __init__(self, env: dict[str, str], database: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "client.py"), database],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {text!r} in {self.seen}"
            try:
                self.seen.append(self.lines.get(timeout=remaining))
            except queue.Empty:
                continue

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._reader.join(10)  # the process ended: what did it say?
            while not self.lines.empty():
                self.seen.append(self.lines.get())
            raise AssertionError(f"the client exited ({self.proc.wait(30)}): {self.seen}") from None

    def quit(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        code = self.proc.wait(30)
        self._reader.join(10)  # the output ends with the process
        self.proc.stdout.close()
        return code

    def close(self) -> None:
        """End the process, whatever state it is in, and close its pipes."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        self._reader.join(10)
        self.proc.stdout.close()


def _readme_commands() -> list[str]:
    text = (EXAMPLE / "README.md").read_text()
    blocks = re.findall(r"```console\n(.*?)```", text, flags=re.S)
    return [line[2:] for block in blocks for line in block.splitlines() if line.startswith("$ ")]


def test_two_users_chat(
    base_url: str, make_user: Callable[..., tuple[str, str]], tmp_path: Path
) -> None:
    alice, alice_key = make_user(prefix="alice")
    env = {**os.environ, "MILLPOND_URL": base_url, "MILLPOND_API_KEY": alice_key}
    database = f"{alice}/chat"
    commands = _readme_commands()
    assert commands[-1].startswith("python examples/chat/client.py")
    for command in commands[:-1]:  # the setup, as the README says it
        argv = shlex.split(command.replace("alice/", f"{alice}/"))
        if argv[1] == "generate":  # the bindings go to a temporary folder, not the checkout
            argv[argv.index("--out") + 1] = str(tmp_path / "module_bindings")
        assert argv[0] == "millpond"
        done = subprocess.run(
            [sys.executable, "-m", "millpond.cli", *argv[1:]],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert (tmp_path / "module_bindings" / "__init__.py").is_file()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    # bob has no account: an anonymous guest, whose token the client keeps
    guest_env = {**env, "MILLPOND_API_KEY": "", "CHAT_TOKEN_FILE": str(tmp_path / "bob.token")}
    bob = Client(guest_env, database)
    alice_client = Client(env, database)
    bob_code: int | None = None
    try:
        for client in (bob, alice_client):
            client.expect("connected; type a message, /name NAME, or Ctrl-D to quit")
        alice_client.type("/name Alice")
        alice_client.type("hello from alice")
        bob.expect("Alice: hello from alice")
        bob.type("/name Bob")
        bob.type("   ")
        bob.expect("! Messages must not be empty")
        bob.type("hi Alice")
        alice_client.expect("Bob: hi Alice")
        alice_client.expect("Alice: hello from alice")  # her own message comes back too
        bob_code = bob.quit()
        alice_client.expect("Bob is offline")  # the module's client_disconnected
    finally:
        codes = [bob.quit() if bob_code is None else bob_code, alice_client.quit()]
    assert codes == [0, 0], (bob.seen, alice_client.seen)
    # the guest comes back as the same identity: still Bob
    again = Client(guest_env, database)
    try:
        again.expect("Bob: hi Alice")
        again.type("back again")
        again.expect("Bob: back again")
    finally:
        assert again.quit() == 0, again.seen
    logs = subprocess.run(
        [sys.executable, "-m", "millpond.cli", "logs", database],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert logs.stdout.count("message from") == 3


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "millpond.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def test_the_chat_ends_consistent_when_its_server_is_killed(tmp_path: Path) -> None:
    """Kill the server mid-session: the clients come back with the restarted server, every
    message once; once they leave, every user is offline (the killed server's connections
    got their client_disconnected from the new one); the hourly clean-up survived, runs
    and deletes only old messages; the muted table stays the module's."""
    import json

    import httpx
    from tests.client_realtime.test_failover import Replica

    from millpond.server.postgres.embedded import EmbeddedPostgres

    external = EmbeddedPostgres(tmp_path / "pg")
    external.start()
    server = Replica(tmp_path / "server", external.url())
    server.env |= {
        "MILLPOND_MODULE_REPLICA_HEARTBEAT_S": "0.5",
        "MILLPOND_MODULE_REPLICA_TIMEOUT_S": "3",
        "MILLPOND_MODULE_WORKERS": "1",
    }
    clients: list[Client] = []
    try:
        server.start()
        key = (server.data_dir / "admin-key").read_text().strip()
        env = {**os.environ, "MILLPOND_URL": server.url, "MILLPOND_API_KEY": key}
        database = "admin/chat"
        _cli(env, "db", "create", "chat", "--public")
        _cli(env, "publish", database, str(EXAMPLE / "chat_module.py"))
        _cli(env, "generate", database, "--out", str(tmp_path / "module_bindings"))
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
        guest_env = {**env, "MILLPOND_API_KEY": "", "CHAT_TOKEN_FILE": str(tmp_path / "g.token")}
        alice, guest = Client(env, database), Client(guest_env, database)
        clients += [alice, guest]
        for client in clients:
            client.expect("connected; type a message, /name NAME, or Ctrl-D to quit")
        alice.type("/name Alice")
        alice.type("before the crash")
        guest.expect("Alice: before the crash")

        server.kill()
        server.start()  # the same port: the clients reconnect by themselves
        alice.type("after the restart")
        guest.expect("Alice: after the restart", timeout=60)
        guest.type("/name Guest")
        codes = [c.quit() for c in clients]
        assert codes == [0, 0], (alice.seen, guest.seen)

        def query(sql: str) -> list[list[object]]:
            r = httpx.post(
                f"{server.url}/v1/query",
                json={"database": database, "sql": sql},
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            rows: list[list[object]] = r.json()["data"]
            return rows

        def settled() -> bool:
            online = query('SELECT count(*) FROM "user" WHERE online')
            left = query("SELECT count(*) FROM millpond_connections")
            return online == [[0]] and left == [[0]]

        deadline = time.monotonic() + 60
        while not settled():
            assert time.monotonic() < deadline, query('SELECT * FROM "user"')
            time.sleep(0.1)
        texts = [r[0] for r in query("SELECT text FROM message ORDER BY id")]
        assert texts == ["before the crash", "after the restart"]
        assert sorted(r[0] for r in query('SELECT name FROM "user"')) == ["Alice", "Guest"]

        # the hourly clean-up is still scheduled; run it now: only old messages go
        [recurring] = json.loads(_cli(env, "schedules", database))
        assert recurring["reducer"] == "clean_up" and recurring["state"] == "recurring"
        [[me]] = query("SELECT identity FROM \"user\" WHERE name = 'Alice'")
        query(
            f"INSERT INTO message (sender, sent, text) VALUES ('{me}', now() - interval '2 days',"
            " 'ancient'); INSERT INTO clean_up (scheduled_at)"
            " VALUES (jsonb_build_object('time', now()))"
        )
        deadline = time.monotonic() + 30
        while query("SELECT count(*) FROM message WHERE text = 'ancient'") != [[0]]:
            assert time.monotonic() < deadline, "the clean-up did not run"
            time.sleep(0.1)
        assert [r[0] for r in query("SELECT text FROM message ORDER BY id")] == texts
        assert len(json.loads(_cli(env, "schedules", database))) == 1

        # muted: the owner's private reducer and table; the guest cannot send, nor read it
        [[guest_id]] = query("SELECT identity FROM \"user\" WHERE name = 'Guest'")
        _cli(env, "call", database, "mute", json.dumps(guest_id))
        guest = Client(guest_env, database)
        clients.append(guest)
        guest.expect("connected; type a message, /name NAME, or Ctrl-D to quit")
        guest.type("let me speak")
        guest.expect("! You are muted")
        assert guest.quit() == 0
        token = (tmp_path / "g.token").read_text().strip()
        r = httpx.post(
            f"{server.url}/v1/databases/{database}/call/send_message",
            json=["sneaky"],
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 422 and "muted" in r.text
    finally:
        for client in clients:
            client.close()
        server.stop()
        external.stop()
