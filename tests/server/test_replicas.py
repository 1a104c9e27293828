"""Two stateless `millpond up` replicas, A and B, on one external Postgres: what a client
starts through one replica, the other runs, sees or refuses.

* jobs queued through A (an upload, an export) run on B — A's job runner is stopped and
  the jobs' rows name B's worker — and the export downloads through both replicas;
* realtime subscribers on each replica see every write made through either, in order;
* a key revoked through A is refused by A at once, and by B once the change's NOTIFY
  reaches it (long before its 30 s cache would have let the key go);
* a flag changed through A is what B's checks answer, and B's flags stream receives it;
* the running-jobs limit is one count across replicas (even for creations at once on
  both), while each replica counts realtime connections on its own, as documented.

The replicas share ``<data_dir>/transfer/jobs`` (a symlink standing for the shared volume
of ``transfer_shared_storage``) but each keeps its own ``node-id``: B runs A's upload only
because storage is declared shared."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from _waiting import wait_until
from millpond.server.config import Settings
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread, free_port, start_server

RUNNING_JOBS = 2  # account_max_running_jobs
SOCKETS = 2  # account_max_realtime_connections ("on each replica")
NOTIFIED_S = 10.0  # bound on a NOTIFY's trip to the other replica: a third of a cache TTL
_names = itertools.count()


class Replica:
    """A running server and an HTTP client to it."""

    def __init__(self, name: str, running: ServerThread) -> None:
        self.name, self.running, self.url = name, running, running.url
        self.http = httpx.Client(base_url=running.url, timeout=60)

    def call(self, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return self.http.request(method, path, headers=headers, **kwargs)

    def ok(self, method: str, path: str, key: str, status: int = 200, **kwargs: Any) -> Any:
        r = self.call(method, path, key, **kwargs)
        assert r.status_code == status, f"{self.name}: {method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def query(self, key: str, db: str, sql: str) -> Any:
        return self.ok("POST", "/v1/query", key, json={"database": db, "sql": sql})["data"]

    def job(self, kind: str, job_id: str, key: str) -> dict[str, Any]:
        """The job once it finished (polled through this replica)."""
        job: dict[str, Any] = {}

        def finished() -> bool:
            job.update(self.ok("GET", f"/v1/{kind}/{job_id}", key))
            return job["state"] in ("DONE", "FAILED")

        wait_until(finished, timeout=60, what=f"{kind} {job_id} to finish")
        return job

    def node_id(self) -> str:
        return (self.running.settings.data_dir / "transfer" / "node-id").read_text().strip()

    def stop_job_runner(self) -> None:
        """Stop this replica's transfer worker: it still accepts jobs, and runs none."""
        app: Any = self.running.server.config.app
        worker = app.state.services.transfer.worker
        asyncio.run_coroutine_threadsafe(worker.stop(), worker.loop).result(60)


@dataclass
class Pair:
    a: Replica
    b: Replica
    admin_key: str
    control_url: str  # a superuser's, to the control database


def _settings(data_dir: Path, database_url: str) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=free_port(),
        gateway_port=free_port(),
        data_dir=data_dir,
        database_url=database_url,
        realtime_idle_seconds=0.5,
        module_workers=1,
        transfer_shared_storage=True,
        transfer_allow_private_urls=True,  # imports from this module's HTTP server
        account_max_running_jobs=RUNNING_JOBS,
        account_max_realtime_connections=SOCKETS,
        flags_cache_ttl_s=600,  # only the NOTIFY can drop B's compiled flags in time
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("replicas")
    pg = EmbeddedPostgres(root / "pg")
    pg.start()
    started: list[ServerThread] = []
    try:
        (root / "a").mkdir()
        started.append(start_server(_settings(root / "a", pg.url())))  # makes the admin
        admin_key = started[0].admin_key
        (root / "b" / "transfer").mkdir(parents=True, mode=0o700)
        (root / "b" / "transfer" / "jobs").symlink_to(root / "a" / "transfer" / "jobs")
        (root / "b" / "admin-key").write_text(admin_key + "\n")
        started.append(start_server(_settings(root / "b", pg.url())))
        a, b = Replica("A", started[0]), Replica("B", started[1])
        with a.http, b.http:
            yield Pair(a, b, admin_key, pg.url(started[0].settings.control_database))
    finally:
        for running in reversed(started):
            running.stop()
        pg.stop()


@dataclass
class Tenant:
    """A user (no admin: limits apply) with a database ``db`` holding a table ``notes``."""

    name: str
    key: str
    db: str


@pytest.fixture
def tenant(pair: Pair) -> Tenant:
    name = f"rep{next(_names)}"
    made = pair.a.ok("POST", "/v1/users", pair.admin_key, 201, json={"username": name})
    key = made["api_key"]["secret"]
    pair.a.ok("POST", "/v1/databases", key, 201, json={"name": "d", "is_private": True})
    pair.a.query(key, f"{name}/d", "CREATE TABLE notes (id serial PRIMARY KEY, body text)")
    return Tenant(name, key, f"{name}/d")


class Socket:
    """A realtime or flags-stream socket, past its ``hello``."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        assert self.next()["type"] == "hello"

    def next(self, timeout: float = 20) -> dict[str, Any]:
        while (message := json.loads(self.ws.recv(timeout=timeout)))["type"] == "ping":
            pass
        return dict(message)

    def subscribe(self, sql: str) -> dict[str, Any]:
        self.ws.send(json.dumps({"type": "subscribe", "request_id": "r1", "queries": [sql]}))
        applied = self.next()
        assert applied["type"] == "subscription_applied", applied
        return applied


Open = Callable[[Replica, str, str], Socket]


def _connect(replica: Replica, path: str, key: str) -> ClientConnection:
    url = replica.url.replace("http://", "ws://") + path
    return connect(url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=20)


@pytest.fixture
def sockets() -> Iterator[Open]:
    """``sockets(replica, path, key)`` opens a socket, closed after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda replica, path, key: Socket(stack.enter_context(_connect(replica, path, key)))


# -- jobs ----------------------------------------------------------------------------------


def test_jobs_queued_on_one_replica_run_on_the_other(pair: Pair, tenant: Tenant) -> None:
    a, b = pair.a, pair.b
    a.stop_job_runner()  # A only queues from now on (no other test needs its runner)
    csv = b"id,name\n1,ada\n2,grace\n3,edsger\n"
    form = {"db_name": tenant.db, "table_name": "people"}
    upload = {"file": ("people.csv", csv, "text/csv")}
    queued = a.ok("POST", "/v1/imports", tenant.key, 202, data=form, files=upload)
    imported = b.job("imports", queued["id"], tenant.key)
    assert imported["state"] == "DONE" and imported["attempts"] == 1, imported
    assert [(t["table_name"], t["rows"]) for t in imported["tables"]] == [("people", 3)]
    people = a.query(tenant.key, tenant.db, "SELECT id, name FROM people ORDER BY id")
    assert people == [[1, "ada"], [2, "grace"], [3, "edsger"]]

    body = {"db_name": tenant.db, "table_name": "people", "export_format": "csv"}
    queued = a.ok("POST", "/v1/exports", tenant.key, 202, json=body)
    exported = b.job("exports", queued["id"], tenant.key)
    assert exported["state"] == "DONE" and exported["rows_done"] == 3, exported

    # the rows say who ran them: B's worker (its id begins with B's node id), on the
    # upload A received (A's node), into a file of B's
    assert a.node_id() != b.node_id()
    with psycopg.connect(pair.control_url, autocommit=True) as conn:
        ran = conn.execute(
            "SELECT split_part(worker_id, ':', 1), node_id FROM transfer_jobs"
            " WHERE id = ANY(%s) ORDER BY kind DESC",  # the import, then the export
            ([imported["id"], exported["id"]],),
        ).fetchall()
    assert ran == [(b.node_id(), a.node_id()), (b.node_id(), b.node_id())]

    # the file downloads through B, through A, and A's signed link works on B too
    link_a = a.ok("GET", f"/v1/exports/{exported['id']}", tenant.key)["download_url"]
    assert link_a.startswith(a.url + "/") and exported["download_url"].startswith(b.url + "/")
    links = [exported["download_url"], link_a, link_a.replace(a.url, b.url, 1)]
    downloads = [b.http.get(links[0]), a.http.get(links[1]), b.http.get(links[2])]
    assert [r.status_code for r in downloads] == [200, 200, 200], [r.text for r in downloads]
    assert {r.content.decode() for r in downloads} == {downloads[0].content.decode()}
    assert downloads[0].content.decode().splitlines() == csv.decode().splitlines()


# -- realtime ------------------------------------------------------------------------------


def test_subscribers_on_each_replica_see_writes_through_both(
    pair: Pair, tenant: Tenant, sockets: Open
) -> None:
    watching = [sockets(r, f"/v1/realtime/{tenant.db}", tenant.key) for r in (pair.a, pair.b)]
    for sock in watching:
        sock.subscribe("SELECT * FROM notes")
    written = []
    for n, replica in enumerate((pair.a, pair.b, pair.a, pair.b)):
        written.append(f"{n} through {replica.name}")
        replica.query(tenant.key, tenant.db, f"INSERT INTO notes (body) VALUES ('{written[-1]}')")
    for sock in watching:  # every write, whichever replica took it, in commit order
        seen: list[str] = []
        while len(seen) < len(written):
            message = sock.next()
            assert message["type"] == "transaction", message
            seen += [row["body"] for row in message["tables"]["notes"]["inserts"]]
        assert seen == written


# -- revocation ----------------------------------------------------------------------------


def test_a_key_revoked_through_one_replica_is_refused_by_the_other(
    pair: Pair, tenant: Tenant
) -> None:
    a, b = pair.a, pair.b
    made = a.ok("POST", "/v1/keys", tenant.key, 201, json={"name": "doomed"})
    secret = made["secret"]
    for _ in range(2):  # B has authenticated the key: it is in B's cache now
        assert b.ok("GET", "/v1/me", secret)["user"]["username"] == tenant.name
    a.ok("DELETE", f"/v1/keys/{made['id']}", tenant.key, 204)
    assert a.call("GET", "/v1/me", secret).status_code == 401  # the replica that revoked it
    # B drops its cached keys when the change's NOTIFY arrives (store/cache.py): that trip
    # is all it may take, not the cache entry's 30 s lifetime
    wait_until(
        lambda: b.call("GET", "/v1/me", secret).status_code == 401,
        timeout=NOTIFIED_S,
        what="B to refuse the key revoked through A",
    )
    refused = b.call("POST", "/v1/query", secret, json={"database": tenant.db, "sql": "SELECT 1"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert b.ok("GET", "/v1/me", tenant.key)["user"]["username"] == tenant.name  # others work


# -- flags ---------------------------------------------------------------------------------


def test_a_flag_changed_through_one_replica_reaches_the_other(
    pair: Pair, tenant: Tenant, sockets: Open
) -> None:
    a, b = pair.a, pair.b
    env = a.ok("POST", "/v1/flags/environments", tenant.key, 201, json={"name": "prod"})
    base = f"/v1/flags/environments/{env['id']}"
    a.ok("POST", base + "/flags", tenant.key, 201, json={"key": "beta", "default_value": False})

    def value(replica: Replica) -> bool:
        return bool(replica.ok("POST", base + "/flags/beta/check", tenant.key, json={})["value"])

    assert value(b) is False and value(b) is False  # compiled and cached by B
    stream = sockets(b, f"/v1/flags/stream?environment={env['id']}", tenant.key)
    applied = stream.subscribe(f"SELECT * FROM flag_rulesets WHERE environment_id = '{env['id']}'")
    (row,) = applied["tables"]["flag_rulesets"]["rows"]
    assert (row["flag_key"], row["ruleset"]["flag"]["default_value"]) == ("beta", False)

    a.ok("PATCH", base + "/flags/beta", tenant.key, json={"default_value": True})
    assert value(a) is True
    message = stream.next()
    assert message["type"] == "transaction", message
    (update,) = message["tables"]["flag_rulesets"]["updates"]
    new = update["new"]
    assert (new["flag_key"], new["ruleset"]["flag"]["default_value"]) == ("beta", True)
    wait_until(lambda: value(b), timeout=NOTIFIED_S, what="B's check to answer A's change")


# -- limits --------------------------------------------------------------------------------


@contextlib.contextmanager
def held_file() -> Iterator[tuple[str, threading.Event]]:
    """(url, release): an HTTP server whose CSV file is sent once ``release`` is set; the
    imports fetching it stay running until then."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            release.wait(120)
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"id\n1\n")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/held.csv", release
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def _over_limit(r: httpx.Response, setting: str) -> bool:
    if r.status_code != 403:
        return False
    error = r.json()["error"]
    return bool(error["code"] == "limit_exceeded" and error["details"]["setting"] == setting)


def test_the_running_jobs_limit_holds_across_replicas(pair: Pair, tenant: Tenant) -> None:
    """Counted in the control database under a lock (docs/security.md): one count for the
    account, whichever replica took each job, even when they arrive at once."""
    replicas = [pair.a, pair.b, pair.a, pair.b]
    with held_file() as (url, release):

        def create(n: int) -> httpx.Response:
            body = {"db_name": tenant.db, "table_name": f"held{n}", "file_url": url}
            return replicas[n % len(replicas)].call("POST", "/v1/imports", tenant.key, json=body)

        with ThreadPoolExecutor(len(replicas)) as pool:  # at once, through both replicas
            answers = list(pool.map(create, range(len(replicas))))
        accepted = [r.json()["id"] for r in answers if r.status_code == 202]
        assert len(accepted) == RUNNING_JOBS, [r.text for r in answers]
        refused = [r for r in answers if r.status_code != 202]
        assert all(_over_limit(r, "account_max_running_jobs") for r in refused)
        for n in (4, 5):  # one more through each replica: refused by both
            assert _over_limit(create(n), "account_max_running_jobs")
        release.set()
        for job_id in accepted:
            assert pair.b.job("imports", job_id, tenant.key)["state"] == "DONE"
        again = create(6)  # finished jobs no longer count
        assert again.status_code == 202, again.text
        assert pair.b.job("imports", again.json()["id"], tenant.key)["state"] == "DONE"


def test_each_replica_counts_its_own_realtime_connections(
    pair: Pair, tenant: Tenant, sockets: Open
) -> None:
    """``account_max_realtime_connections``: "on each replica" (docs/configuration.md)."""
    path = f"/v1/realtime/{tenant.db}"
    for replica in (pair.a, pair.a, pair.b, pair.b):  # the limit on A, and again on B
        sockets(replica, path, tenant.key)
    for replica in (pair.a, pair.b):  # one more on either is refused
        with _connect(replica, path, tenant.key) as ws, pytest.raises(ConnectionClosed) as c:
            ws.recv(timeout=20)
        assert c.value.rcvd is not None
        assert (c.value.rcvd.code, c.value.rcvd.reason) == (4029, "limit_exceeded")
