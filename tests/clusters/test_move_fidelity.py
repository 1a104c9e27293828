"""A move keeps what a database holds: every kind of object and row the per-database
backup's round trip checks (tests/server/test_database_backups.py), the owner's and
readers' privileges, a module's private tables, and its row visibility rules — which
are enforced on the target as on the source (another user still sees only their own
rows)."""

from __future__ import annotations

import textwrap
from typing import Any

from tests.server.test_database_backups import DEFINITIONS_SQL, ROWS_SQL, SOURCE_SQL

from _backups import OBJECTS_SQL

from .conftest import Env, on

VISIBLE = textwrap.dedent(
    """
    from millpond.module import ReducerContext, Identity, table, reducer, primary_key

    @table(public=True, visible_if="owner_identity = :sender")
    class Note:
        id: int = primary_key()
        owner_identity: Identity
        body: str

    @table
    class Hidden:
        id: int = primary_key()

    @reducer
    def add(ctx: ReducerContext, id: int, body: str) -> None:
        ctx.db.note.insert(Note(id=id, owner_identity=ctx.sender, body=body))
        ctx.db.hidden.insert(Hidden(id=id))
    """
)


def _state(env: Env, cluster: str, pg_name: str) -> dict[str, Any]:
    pg = env.second if cluster == "second" else env.services.cluster.embedded
    assert pg is not None
    with on(pg, pg_name) as conn:
        state: dict[str, Any] = {
            name: conn.execute(query.encode()).fetchall() for name, query in ROWS_SQL.items()
        }
        state["definitions"] = conn.execute(DEFINITIONS_SQL.encode()).fetchall()
        state["objects"] = [tuple(r[:4]) for r in conn.execute(OBJECTS_SQL.encode())]
        state["policies"] = conn.execute(
            b"SELECT tablename, policyname, roles::text, qual FROM pg_policies ORDER BY 1, 2"
        ).fetchall()
        for role in ("ro", "rw", "reducer"):
            who = f"{pg_name}_{role}"
            state[role] = conn.execute(
                f"SELECT c.relname, p FROM pg_class c JOIN pg_namespace n ON n.oid ="
                f" c.relnamespace, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) p"
                f" WHERE n.nspname IN ('public', 'archive') AND c.relkind IN ('r', 'v', 'S')"
                f" AND CASE WHEN c.relkind = 'S' THEN p = 'SELECT' AND"
                f" has_sequence_privilege('{who}', c.oid, p)"
                f" ELSE has_table_privilege('{who}', c.oid, p) END ORDER BY 1, 2".encode()
            ).fetchall()
    return state


def test_a_move_keeps_objects_rows_privileges_and_row_visibility(env: Env) -> None:
    db = env.database("faithful")
    full, pg_name = db["full_name"], f"mp_db_{db['id']}"
    env.sql(full, SOURCE_SQL)
    r = env("POST", f"/v1/databases/{full}/module", json={"files": {"m.py": VISIBLE}})
    assert r.status_code == 201, r.text
    other = env.user()
    for key, ident, body in ((env.key, 1, "mine"), (other, 2, "theirs")):
        r = env("POST", f"/v1/databases/{full}/call/add", key, json={"id": ident, "body": body})
        assert r.status_code == 200, r.text
    before = _state(env, "default", pg_name)
    assert before["policies"], "the module made its row visibility policies"

    r = env("POST", f"/v1/databases/{full}/move", json={"cluster": "second"})
    assert r.status_code == 200, r.text
    after = _state(env, "second", pg_name)
    assert after == before

    # the rules are enforced on the target: the other user sees their row only, and no
    # row of the private table
    r = env("POST", "/v1/query", other, json={"database": full, "sql": "SELECT body FROM note"})
    assert r.status_code == 200 and r.json()["data"] == [["theirs"]], r.text
    r = env("POST", "/v1/query", other, json={"database": full, "sql": "SELECT * FROM hidden"})
    assert r.status_code == 400, r.text
    r = env("POST", f"/v1/databases/{full}/call/add", other, json={"id": 3, "body": "later"})
    assert r.status_code == 200, r.text
    r = env("POST", "/v1/query", other, json={"database": full, "sql": "SELECT count(*) FROM note"})
    assert r.json()["data"] == [[2]], r.text
