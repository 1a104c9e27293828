"""Commit order across subscribes: after a second subscribe on a connection,
transactions still arrive in commit order.

``Hub.subscribe`` holds the transactions that arrive while it reads the new query's rows,
then sends those its snapshot already saw (for the older queries), the
``subscription_applied``, and the others. Postgres makes a transaction visible a moment
after it writes its commit record, so concurrent transactions can become visible in
another order than their commit records: a snapshot can see T2 and not T1 although T1
committed first (lower LSN). The hub then reads the snapshot again (the ones it saw must
be the first ones held), so it never sends T2 before T1.

This test makes many such snapshots while independent writers commit as fast as they
can (the inversion it looks for is probabilistic; ``test_races.py`` forces the
interleavings one by one).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import psycopg

from millpond.client.realtime import Event
from millpond.server.testing import ServerThread

from .conftest import make_database

WRITERS = 6
SECONDS = 6.0


def test_transactions_stay_in_commit_order_across_subscribes(
    server: ServerThread, make_user: Callable[..., tuple[str, str]]
) -> None:
    username, key = make_user(prefix="rtorder")
    db = make_database(
        server.url,
        server.admin_key,
        username,
        key,
        server.settings.data_dir,
        "CREATE TABLE t (id int PRIMARY KEY, n int8);"
        f"INSERT INTO t SELECT i, 0 FROM generate_series(1, {WRITERS}) i",
    )
    stop = threading.Event()

    def write(row: int) -> None:
        with psycopg.connect(db.pg_url, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("UPDATE t SET n = n + 1 WHERE id = %s", (row,))

    with db.client() as mp, mp.realtime(db.name, callbacks="thread") as rt:
        delivered: list[tuple[int, int, bool]] = []  # lsn, xid, right after an applied
        boundary = [False]
        rt.on_subscription_applied(lambda event: boundary.__setitem__(0, True))

        def record(event: Event) -> None:
            assert event.lsn_int is not None and event.xid is not None
            delivered.append((event.lsn_int, event.xid, boundary[0]))
            boundary[0] = False

        rt.on_transaction(record)
        rt.subscribe("SELECT * FROM t")
        threads = [threading.Thread(target=write, args=(i,)) for i in range(1, WRITERS + 1)]
        for thread in threads:
            thread.start()
        subscribes = 0
        try:
            deadline = time.monotonic() + SECONDS
            while time.monotonic() < deadline:
                rt.subscribe("SELECT * FROM t")  # the same query: a snapshot, no rows
                subscribes += 1
                out_of_order = [
                    (a, b) for a, b in itertools.pairwise(list(delivered)) if a[0] >= b[0]
                ]
                if out_of_order:
                    break
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    print(f"{len(delivered)} transactions, {subscribes} subscribes")
    assert len({xid for _, xid, _ in delivered}) == len(delivered), "an xid twice"
    assert not out_of_order, f"out of commit order after {subscribes} subscribes: " + ", ".join(
        f"{a[0]:X} before {b[0]:X} (after an applied: {b[2]})" for a, b in out_of_order
    )
