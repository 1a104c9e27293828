"""The realtime consistency test.

Four writers (two through the HTTP query API, two through direct psycopg connections)
insert, update (moving rows between the clients' predicate ranges), upsert and delete
random rows, alone or several in one transaction (some changing the other subscribed
table too), and now and then truncate the table or insert (later delete) 10,000 rows in
one transaction, for a few seconds. Meanwhile four clients with different queries
(equality, range, OR, every row) — a sync client with ``update()``, a sync client with
thread callbacks, two async clients — subscribe and unsubscribe extra queries,
unsubscribe and resubscribe their own, close and reopen, and lose their network (each
goes through a TCP proxy the test cuts, so they reconnect and reconcile by themselves),
at random.

Then the writers stop, a final marker transaction commits, and each client waits until
it has seen it. At that point every client's cache must equal what its queries return
from Postgres (a failure lists every diverging client, each differing row, and every
change its cache made to that row: the event, the connection, the LSN and xid); on every
connection the delivered transactions must have strictly increasing LSNs and no xid
twice; and whenever a callback ran, the cache already held its whole transaction.
The interleavings that once made a cache diverge are forced one by one in
``test_races.py``; the argument for why none remains is in docs/realtime-protocol.md.
``test_failover.py`` runs the same clients and writers across two replicas while one is
killed and Postgres restarts. The machinery is in ``consistency.py``.

The seed is printed (and in every assertion message); ``MILLPOND_RT_SEED=…`` replays the
random choices (the interleaving with the server still varies).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest

from millpond.server.testing import ServerThread

from .conftest import Database, make_database
from .consistency import SCHEMA, SPECS, check, run_scenario


@pytest.fixture
def items_db(server: ServerThread, make_user: Callable[..., tuple[str, str]]) -> Database:
    username, key = make_user(prefix="rtcons")
    return make_database(
        server.url, server.admin_key, username, key, server.settings.data_dir, SCHEMA
    )


def test_every_cache_ends_equal_to_postgres(server: ServerThread, items_db: Database) -> None:
    seed = int(os.environ.get("MILLPOND_RT_SEED") or random.randrange(1 << 32))
    print(f"\nrealtime consistency seed: MILLPOND_RT_SEED={seed}")
    port = int(server.url.rsplit(":", 1)[1])
    outcome = run_scenario(items_db, seed, [port] * len(SPECS))
    summary = check(outcome)
    assert outcome.writers.committed > 100, summary
    assert sum(r.stats.get("reconnects", 0) for r in outcome.records) > 0, summary
