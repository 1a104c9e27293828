"""Row-level security for streamed changes: a subscriber receives a row image (old or
new) only if its own ``SELECT`` would return that row under the table's policies.

The initial rows are read on the subscriber's own role, so Postgres applies the
policies itself. Changes come from the WAL, where no policy applies; for a table with
row-level security enabled (``pg_class.relrowsecurity``), each role subscribed to it
gets a :class:`Rule`, asked of Postgres as that role:

- ``row_security_active(table)`` false (the role owns the table and it is not
  ``FORCE``\\ d, or the role has ``BYPASSRLS``): every row is visible;
- otherwise the policies for ``SELECT`` (or ``ALL``) that apply to the role (``PUBLIC``
  or a role it has the privileges of): the permissive ones OR'd, the restrictive ones
  AND'd, none permissive: no row — Postgres' own combination.

A transaction's images of such a table are then judged in one query per (transaction,
table, role), as that role: the policies' expressions over the images (the table's row
type, aliased by the table's name as in the policies' text; the images a parameter, so
no other session of the role reads them in ``pg_stat_activity``). An image the query does
not accept — or any error — is not sent.

Row visibility rules (``modules/row_visibility.py``) bind a policy to the subscriber's
identity: a rule whose policies' text calls ``millpond.sender()`` is judged per *viewer*
(role and identity), still in one query per (transaction, table, role): the identities of
the role's subscribers are its second parameter, each call of ``millpond.sender()`` in the
text (outside literals and quoted names) is the judged viewer's identity, and the query
answers (viewer, image) pairs. The judge is the server, which knows its subscribers'
identities: no proof is set on the judging session (a policy that reaches the identity
only inside another function sees none there, and streams nothing that needs it).

Rules are cached per (table, role) and read anew when the stream announces the table
anew (pgoutput re-sends a relation after DDL or a GRANT/REVOKE on it: ``CREATE/ALTER/
DROP POLICY``, ``ENABLE/DISABLE/FORCE ROW LEVEL SECURITY``, a new owner, privileges) and
at each subscribe. A rule also says whether the role may ``SELECT`` every column (its
``SELECT *`` fails otherwise: no row). When a rule changed, the role's subscribers to
the table hold rows read under the old one: the hub closes them (4014
``visibility_changed``) before anything judged under the new one reaches them, and they
resubscribe. Tables without row-level security cost a dictionary lookup per change.

Known limit: rules are read when the server relays a transaction, not as of its
commit; a policy *loosened* while transactions written just before it are still being
relayed (the stream's lag, milliseconds) is applied to them too.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from ..modules.row_visibility import SENDER_CALL
from .pgoutput import UNCHANGED, Change, Relation, Transaction

_log = logging.getLogger("millpond.realtime")

PoolFor = Callable[[str], Awaitable[AsyncConnectionPool[Any]]]
"""The connection pool of a subscriber's SQL role (``owner``, ``rw``, ``ro``)."""
Viewer = tuple[str, str | None]
"""Who row-level security judges a subscriber as: its SQL role and its identity (None:
it has none)."""

# the catalog is read with only pg_catalog on the path (the tenant's path may put its
# own operators first); so the policies' text is deparsed with every other name
# schema-qualified, and means the same when evaluated with pg_catalog first
_CATALOG_PATH = "SET LOCAL search_path = pg_catalog"
_TABLE_SQL = """
SELECT c.oid, c.relrowsecurity, row_security_active(c.oid),
       NOT EXISTS (SELECT FROM pg_attribute a
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                     AND NOT has_column_privilege(c.oid, a.attnum, 'SELECT'))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s
"""
_POLICIES_SQL = """
SELECT p.polpermissive, pg_get_expr(p.polqual, p.polrelid)
FROM pg_policy p
WHERE p.polrelid = %s AND p.polcmd IN ('r', '*') AND p.polqual IS NOT NULL
  AND (0::oid = ANY (p.polroles)
       OR EXISTS (SELECT FROM unnest(p.polroles) AS r(oid)
                  WHERE pg_has_role(CURRENT_USER, r.oid, 'USAGE')))
ORDER BY p.polname
"""
_SESSION_SQL = (
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET IntervalStyle = 'iso_8601';"
    " SELECT pg_catalog.set_config('search_path', 'pg_catalog, '"
    " OPERATOR(pg_catalog.||) pg_catalog.current_setting('search_path'), false)"
)
_KEEP_MIN_POOL = 4
"""A role's pool this large or larger lends the checks one connection to keep."""
CODE_CHANGED, REASON_CHANGED = 4014, "visibility_changed"
CODE_FAILED, REASON_FAILED = 4015, "visibility_failed"


class RowSecurityError(Exception):
    """Visibility could not be decided: the rows are not sent."""


@dataclass(frozen=True)
class Rule:
    """How one role sees one table's rows."""

    schema: str
    name: str
    enabled: bool
    """The table has row-level security enabled (``relrowsecurity``)."""
    active: bool = False
    """It applies to the role (``row_security_active``): only rows the policies accept."""
    readable: bool = True
    """The role may ``SELECT`` every column (else its ``SELECT *`` fails: no row)."""
    permissive: tuple[str, ...] = ()
    restrictive: tuple[str, ...] = ()

    @property
    def signature(self) -> tuple[bool, bool, tuple[str, ...], tuple[str, ...]]:
        return (self.active, self.readable, self.permissive, self.restrictive)

    @property
    def sees_all(self) -> bool:
        return self.readable and not self.active

    @property
    def sees_none(self) -> bool:
        return not self.readable or (self.active and not self.permissive)

    @property
    def per_identity(self) -> bool:
        """Its policies call ``millpond.sender()``: what a viewer sees depends on its
        identity."""
        policies = (*self.permissive, *self.restrictive)
        return self.active and any(_for_viewers(q) != q for q in policies)

    def query(self) -> sql.Composed:
        """Of the JSON array of images (the first parameter), the (1-based) positions of
        the visible ones; for a rule per identity, the (viewer, image) positions of the
        visible ones, each viewer's identity (the second parameter, a text array) standing
        for ``millpond.sender()``. The policies' text is SQL: its '%' are doubled."""
        per = self.per_identity

        def text(policy: str) -> sql.SQL:
            return sql.SQL((_for_viewers(policy) if per else policy).replace("%", "%%"))

        either = sql.SQL(" OR ").join(sql.SQL("({})").format(text(q)) for q in self.permissive)
        condition = sql.SQL(" AND ").join(
            [sql.SQL("({})").format(either)]
            + [sql.SQL("({})").format(text(q)) for q in self.restrictive]
        )
        table = sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.name))
        return sql.SQL(
            "SELECT {columns} FROM pg_catalog.jsonb_array_elements({images}::pg_catalog.jsonb)"
            " WITH ORDINALITY AS mp_rows(image, n){viewers}"
            " WHERE coalesce((SELECT {condition} FROM"
            " pg_catalog.jsonb_populate_record(NULL::{table}, mp_rows.image) AS {alias}),"
            " false)"
        ).format(
            columns=sql.SQL(f"{_VIEWERS}.n, mp_rows.n" if per else "mp_rows.n"),
            images=sql.Placeholder(),
            viewers=sql.SQL(
                f", pg_catalog.unnest({{}}::pg_catalog.text[]) WITH ORDINALITY AS {_VIEWERS}"
                "(identity, n)"
                if per
                else ""
            ).format(sql.Placeholder()),
            condition=condition,
            table=table,
            alias=sql.Identifier(self.name),
        )


_VIEWERS = "millpond_viewers"
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")


def _for_viewers(policy: str) -> str:
    """A policy's deparsed text with each call of ``millpond.sender()`` (outside string
    literals and quoted names) made the judged viewer's identity."""
    parts, position = [], 0
    for quoted in _QUOTED.finditer(policy):
        parts += [policy[position : quoted.start()].replace(SENDER_CALL, f"{_VIEWERS}.identity")]
        parts.append(quoted.group())
        position = quoted.end()
    parts.append(policy[position:].replace(SENDER_CALL, f"{_VIEWERS}.identity"))
    return "".join(parts)


@dataclass
class Visibility:
    """What the check decided for one transaction: per role, whether each image of the
    changes to tables under row-level security may be sent."""

    checked: set[int] = field(default_factory=set)
    """``id()`` of the changes that were subject to a check."""
    seen: dict[Viewer, dict[int, tuple[bool, bool]]] = field(default_factory=dict)
    by_identity: bool = False
    """A rule bound to identities was judged: viewers of one role may see different
    images (else each role's verdict is also under ``(role, None)``)."""

    def seen_as(self, role: str | None, identity: str | None) -> Viewer | None:
        """The viewer whose verdict a connection gets: its own, or its role's when no
        rule of the transaction depends on the identity (so the role's connections share
        one message)."""
        if role is None:
            return None
        return (role, identity if self.by_identity else None)

    def allows(self, viewer: Viewer | None, change: Change) -> tuple[bool, bool]:
        """(old image visible, new image visible) for ``viewer``; a change never checked
        for this viewer (it connected meanwhile, or the check failed) shows nothing."""
        if id(change) not in self.checked:
            return True, True
        if viewer is None:
            return False, False
        return self.seen.get(viewer, {}).get(id(change), (False, False))


@dataclass(frozen=True)
class Closing:
    """Subscribers of ``role`` to ``table`` to disconnect: ``code``, ``reason``."""

    table: str
    role: str
    code: int
    reason: str


@dataclass
class _Known:
    relation: Relation | None
    """The stream's announcement the answer is for (None: read at a subscribe)."""
    enabled: bool


class RowFilter:
    """One database's row-level security checks (see the module docstring)."""

    def __init__(self, pool_for: PoolFor) -> None:
        self.pool_for = pool_for
        self._enabled: dict[str, _Known] = {}
        self._rules: dict[tuple[str, str], Rule] = {}
        self._sessions: dict[
            str, tuple[AsyncConnectionPool[Any], psycopg.AsyncConnection[Any]]
        ] = {}

    async def refresh(self, schema: str, name: str, role: str) -> list[Closing]:
        """At subscribe, before the initial rows are read: the table's rule for
        ``role`` anew; the subscribers holding rows read under another one must go."""
        table = f"{schema}.{name}"
        try:
            rule = await self._read_rule(schema, name, role)
        except psycopg.OperationalError:
            raise  # Postgres went away (stopping, restarting): the session closes with 1013
        except (psycopg.Error, RowSecurityError) as exc:
            raise RowSecurityError(f"row-level security of {table} unreadable: {exc}") from exc
        # what the stream knows stays: a change there since is announced anew anyway
        self._enabled.setdefault(table, _Known(None, rule.enabled))
        return self._store(table, role, rule)

    async def check(
        self,
        tx: Transaction,
        subscribed: Callable[[str], bool],
        viewers: Callable[[], set[Viewer]],
    ) -> tuple[Visibility | None, list[Closing]]:
        """Judge ``tx``'s images of tables under row-level security for the ``viewers``
        subscribed; None when it has none (the fast path)."""
        by_table: dict[str, list[Change]] = {}
        closing: list[Closing] = []
        present: set[Viewer] | None = None
        for change in tx.changes:
            rel = change.relation
            table = f"{rel.schema}.{rel.name}"
            if change.kind == "truncate" or not subscribed(table):
                continue
            known = self._enabled.get(table)
            if known is None or known.relation is not rel:
                present = viewers() if present is None else present
                closing += await self._announced(table, rel, {role for role, _ in present})
                known = self._enabled[table]
            if known.enabled:
                by_table.setdefault(table, []).append(change)
        if not by_table:
            return None, closing
        present = viewers() if present is None else present
        visibility = Visibility()
        for table, changes in by_table.items():
            closing += await self._judge(visibility, table, changes, present)
        return visibility, closing

    # -- rules ------------------------------------------------------------------------------

    async def _announced(self, table: str, rel: Relation, roles: set[str]) -> list[Closing]:
        """The stream announced ``rel`` anew (its first change, or one after DDL or a
        GRANT/REVOKE on it): every role's rule anew."""
        closing: list[Closing] = []
        enabled = True  # until a role could read the table's state: fail closed
        known: Relation | None = rel
        for role in sorted(roles):
            try:
                rule = await self._read_rule(rel.schema, rel.name, role)
            except (psycopg.Error, RowSecurityError) as exc:
                _log.warning("row-level security of %s for %s unreadable: %s", table, role, exc)
                self._rules.pop((table, role), None)
                closing.append(_failed(table, role))
                known = None  # ask again next time
                continue
            enabled = rule.enabled
            closing += self._store(table, role, rule)
        self._enabled[table] = _Known(known if roles else None, enabled)
        return closing

    def _store(self, table: str, role: str, rule: Rule) -> list[Closing]:
        """Keep ``rule``; if it differs from the one the role's subscribers got their
        rows under, they must resubscribe."""
        before = self._rules.get((table, role))
        self._rules[(table, role)] = rule
        if before is not None and before.signature != rule.signature:
            return [_changed(table, role)]
        return []

    async def _read_rule(self, schema: str, name: str, role: str) -> Rule:
        pool = await self.pool_for(role)
        async with pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=psycopg.rows.tuple_row)
            await cur.execute(_CATALOG_PATH)
            await cur.execute(_TABLE_SQL, (schema, name))
            found = await cur.fetchone()
            if found is None:
                raise RowSecurityError(f'table "{schema}.{name}" not found')
            oid, enabled, active, readable = found
            if not active:
                return Rule(schema, name, enabled, False, readable)
            await cur.execute(_POLICIES_SQL, (oid,))
            policies = await cur.fetchall()
        return Rule(
            schema,
            name,
            enabled,
            True,
            readable,
            tuple(q for permissive, q in policies if permissive),
            tuple(q for permissive, q in policies if not permissive),
        )

    # -- judging images ---------------------------------------------------------------------

    async def _judge(
        self, visibility: Visibility, table: str, changes: list[Change], viewers: set[Viewer]
    ) -> list[Closing]:
        visibility.checked.update(id(c) for c in changes)
        closing = []
        for role in sorted({role for role, _ in viewers}):
            rule = self._rules.get((table, role))
            identities = sorted({i for r, i in viewers if r == role}, key=lambda i: i or "")
            try:
                if rule is None:  # the role subscribed since the table was announced
                    rel = changes[0].relation
                    rule = await self._read_rule(rel.schema, rel.name, role)
                    closing += self._store(table, role, rule)
                verdicts = await self._visible(role, rule, changes, identities)
            except (psycopg.Error, RowSecurityError) as exc:
                _log.warning("row-level security check on %s for %s failed: %s", table, role, exc)
                closing.append(_failed(table, role))
                continue
            if rule.per_identity and not (rule.sees_all or rule.sees_none):
                visibility.by_identity = True
            else:  # the same for every identity: the role's verdict
                verdicts[None] = next(iter(verdicts.values()))
            for identity, seen in verdicts.items():
                visibility.seen.setdefault((role, identity), {}).update(seen)
        return closing

    async def _visible(
        self, role: str, rule: Rule, changes: list[Change], identities: list[str | None]
    ) -> dict[str | None, dict[int, tuple[bool, bool]]]:
        """For each identity of the role: (old, new) image visible, per change."""
        if rule.sees_all or rule.sees_none:
            same = {id(c): (rule.sees_all, rule.sees_all) for c in changes}
            return dict.fromkeys(identities, same)
        images: list[dict[str, Any]] = []
        for change in changes:
            for image in (change.old, change.new):
                if image is not None:
                    images.append({k: v for k, v in image.items() if v is not UNCHANGED})
        if not rule.per_identity:
            accepted = await self._accepted(role, rule, [json.dumps(images)])
            return dict.fromkeys(identities, _flags(changes, {n for _, n in accepted}))
        accepted = await self._accepted(role, rule, [json.dumps(images), identities])
        by_viewer: list[set[int]] = [set() for _ in identities]
        for viewer, n in accepted:
            by_viewer[viewer - 1].add(n)
        return {i: _flags(changes, seen) for i, seen in zip(identities, by_viewer, strict=True)}

    async def _accepted(self, role: str, rule: Rule, params: list[Any]) -> list[tuple[int, int]]:
        """The (viewer, image) positions the rule's query accepts (viewer 1 for a rule of
        the role as a whole): one round trip, on a connection of the role's pool kept for
        these checks (once more on a new one if that connection was lost meanwhile)."""
        query = rule.query()
        for attempt in range(2):
            conn = await self._session(role)
            try:
                cur = conn.cursor(row_factory=psycopg.rows.tuple_row)
                await cur.execute(query, params)
                rows = await cur.fetchall()
                if self._sessions[role][0].max_size < _KEEP_MIN_POOL:
                    await self._give_back(role)  # a small pool: others need it more
                return [(int(r[0]), int(r[1])) if len(r) == 2 else (1, int(r[0])) for r in rows]
            except psycopg.OperationalError:
                await self._give_back(role)
                if attempt:
                    raise
            except BaseException:
                await self._give_back(role)  # its state is unknown: the pool resets it
                raise
        raise AssertionError("unreachable")

    async def _session(self, role: str) -> psycopg.AsyncConnection[Any]:
        held = self._sessions.get(role)
        if held is not None and not held[1].closed:
            return held[1]
        await self._give_back(role)
        pool = await self.pool_for(role)
        conn: psycopg.AsyncConnection[Any] = await pool.getconn()
        try:
            # the replicated text forms, parsed as the WAL decoder wrote them; names
            # resolved as the policies' deparsed text means them
            await conn.execute(_SESSION_SQL)
        except BaseException:
            await pool.putconn(conn)
            raise
        self._sessions[role] = (pool, conn)
        return conn

    async def _give_back(self, role: str) -> None:
        held = self._sessions.pop(role, None)
        if held is not None:
            await held[0].putconn(held[1])

    async def close(self) -> None:
        """Give the kept connections back to their pools."""
        for role in list(self._sessions):
            try:
                await self._give_back(role)
            except Exception:  # a pool closing meanwhile: nothing to give back to
                _log.debug("row filter connection of %s not returned", role, exc_info=True)


def _flags(changes: list[Change], accepted: set[int]) -> dict[int, tuple[bool, bool]]:
    """(old, new) visible per change, from the positions of the accepted images (the
    images of ``changes`` in order, old before new)."""
    result: dict[int, tuple[bool, bool]] = {}
    position = 0
    for change in changes:
        flags = []
        for image in (change.old, change.new):
            if image is None:
                flags.append(False)
            else:
                position += 1
                flags.append(position in accepted)
        result[id(change)] = (flags[0], flags[1])
    return result


def _failed(table: str, role: str) -> Closing:
    return Closing(table, role, CODE_FAILED, REASON_FAILED)


def _changed(table: str, role: str) -> Closing:
    return Closing(table, role, CODE_CHANGED, REASON_CHANGED)
