""":class:`SqlAlchemyFlagStore`: flags in the application's database, evaluated locally.

Reads: a compiled copy of every live flag, refreshed at most every ``ttl`` seconds by one
indexed query for the rows whose version is above the last one seen (flypper's delta
sync); ``ttl=0`` syncs before every check. Writes: one short transaction that bumps the
global version and writes the flag's row with it, so a reader never misses a change and
never sees one twice. Thread-safe: the copy is replaced whole, under a lock.

flypper's gates map onto the shared engine's rules: ``enabled_for_actors`` is an
``actor_list`` condition, ``enabled_for_percentage_of_actors`` a ``rollout`` condition
(its hash salted by the flag key), either of them turning the flag on; ``enabled=False``
turns it off whatever the gates; no gate at all means on for everyone. An actor key
``user_<key>`` or ``company_<key>`` names an entity's key (``user_id`` is the user's
``id`` key); a bare one (``email``) is the user's. Other rules (traits…) can be given as
engine rules.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Connection, Engine, MetaData, Table, select, update
from sqlalchemy.orm import Session, scoped_session

from ..client._async.flag_context import entities
from ..engine.flags import CompanyContext, CompiledFlag, EvalContext, UserContext, not_found
from ..engine.flags import compile_ruleset as compile_flag_ruleset
from ..models.flags import Condition, Flag, FlagCheck, FlagRuleset, Rule
from ._tables import FLAGS_TABLE, METADATA_TABLE, build_flags_table, build_metadata_table

Keys = Mapping[str, str]


@dataclass(frozen=True)
class FlagRow:
    """A flag as stored."""

    key: str
    ruleset: FlagRuleset
    version: int
    deleted: bool
    updated_at: float


def _actor(actor_key: str) -> tuple[str, str]:
    entity, sep, key = actor_key.partition("_")
    if sep and key and entity in ("user", "company"):
        return entity, key
    return "user", actor_key


def flypper_rules(
    enabled_for_actors: Mapping[str, Any] | None,
    enabled_for_percentage_of_actors: Mapping[str, Any] | None,
) -> list[Rule]:
    """flypper's gates as engine rules (either one matching turns the flag on)."""
    rules = []
    if enabled_for_actors:
        entity, key = _actor(str(enabled_for_actors["actor_key"]))
        actors = [{key: str(a)} for a in enabled_for_actors.get("actor_ids", [])]
        rules.append(
            Rule(
                id="actors",
                value=True,
                conditions=[
                    Condition(condition_type="actor_list", actor_entity=entity, actors=actors)
                ],
            )
        )
    if enabled_for_percentage_of_actors:
        entity, key = _actor(str(enabled_for_percentage_of_actors["actor_key"]))
        percentage = float(enabled_for_percentage_of_actors["percentage"])
        rules.append(
            Rule(
                id="percentage",
                value=True,
                conditions=[
                    Condition(
                        condition_type="rollout",
                        actor_entity=entity,
                        actor_key=key,
                        percentage=percentage,
                    )
                ],
            )
        )
    return rules


class SqlAlchemyFlagStore:
    """Flags in your own database. Give ``engine=`` (short transactions of its own) or
    ``session=`` (a ``Session`` or ``scoped_session``: used per operation, committed after
    each write, as flypper-sqlalchemy does)."""

    def __init__(
        self,
        *,
        engine: Engine | None = None,
        session: Session | scoped_session[Session] | None = None,
        ttl: float = 10.0,
        metadata: MetaData | None = None,
        flags_table: Table | None = None,
        metadata_table: Table | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (engine is None) == (session is None):
            raise ValueError("give engine=... or session=..., one of them")
        self.engine = engine
        self.session = session
        self.ttl = ttl
        self.metadata = metadata or MetaData()
        self.flags = _table(flags_table, self.metadata, FLAGS_TABLE, build_flags_table)
        self.versions = _table(metadata_table, self.metadata, METADATA_TABLE, build_metadata_table)
        self._clock = clock
        self._lock = threading.Lock()
        self._compiled: dict[str, CompiledFlag] = {}
        self._last_version = 0
        self._next_sync = 0.0

    # -- tables -----------------------------------------------------------------------

    build_flags_table = staticmethod(build_flags_table)
    build_metadata_table = staticmethod(build_metadata_table)

    def create_tables(self) -> None:
        """``CREATE TABLE IF NOT EXISTS`` both tables."""
        with self._connection() as conn:
            self.metadata.create_all(conn, tables=[self.flags, self.versions])

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        if self.engine is not None:
            with self.engine.begin() as conn:
                yield conn
            return
        assert self.session is not None
        try:
            yield self.session.connection()
            self.session.commit()
        except BaseException:
            self.session.rollback()
            raise

    # -- writes ---------------------------------------------------------------------------

    def upsert_flag(
        self,
        key: str,
        *,
        enabled: bool = True,
        enabled_for_actors: Mapping[str, Any] | None = None,
        enabled_for_percentage_of_actors: Mapping[str, Any] | None = None,
        rules: Sequence[Rule | Mapping[str, Any]] | None = None,
        name: str = "",
        description: str = "",
    ) -> FlagRow:
        """Create or replace a flag (flypper's fields, or engine ``rules``)."""
        gates = flypper_rules(enabled_for_actors, enabled_for_percentage_of_actors)
        extra = [r if isinstance(r, Rule) else Rule.model_validate(r) for r in rules or ()]
        all_rules = gates + extra if enabled else []
        default = enabled and not gates and not extra
        flag = Flag(key=key, name=name, description=description, default_value=default)
        ruleset = FlagRuleset(flag=flag, rules=all_rules)
        compile_flag_ruleset(ruleset)  # refuse what cannot be evaluated, before writing
        return self._write(key, ruleset, deleted=False)

    def delete_flag(self, key: str) -> FlagRow:
        """Soft delete: checks answer FLAG_NOT_FOUND until :meth:`restore_flag`."""
        return self._write(key, self._row(key).ruleset, deleted=True)

    def restore_flag(self, key: str) -> FlagRow:
        return self._write(key, self._row(key).ruleset, deleted=False)

    def _write(self, key: str, ruleset: FlagRuleset, deleted: bool) -> FlagRow:
        now = time.time()
        with self._connection() as conn:
            version = self._bump(conn)
            values = {
                "ruleset": ruleset.model_dump_json(),
                "version": version,
                "deleted": deleted,
                "updated_at": now,
            }
            done = conn.execute(update(self.flags).where(self.flags.c.key == key).values(values))
            if done.rowcount == 0:
                conn.execute(self.flags.insert().values(key=key, **values))
        self._next_sync = 0.0  # our own change shows at the next check
        return FlagRow(key, ruleset, version, deleted, now)

    def _bump(self, conn: Connection) -> int:
        table = self.versions
        where = table.c.name == "version"
        done = conn.execute(update(table).where(where).values(value=table.c.value + 1))
        if done.rowcount == 0:
            conn.execute(table.insert().values(name="version", value=1))
        return int(conn.execute(select(table.c.value).where(where)).scalar_one())

    # -- reads ----------------------------------------------------------------------------

    def _row(self, key: str) -> FlagRow:
        with self._connection() as conn:
            row = conn.execute(select(self.flags).where(self.flags.c.key == key)).first()
        if row is None:
            raise KeyError(f"no flag {key!r}")
        return _row(row._mapping)

    def list_flags(self, *, deleted: bool = False) -> list[FlagRow]:
        """Live flags by key (``deleted=True``: the deleted ones)."""
        query = select(self.flags).where(self.flags.c.deleted == deleted).order_by(self.flags.c.key)
        with self._connection() as conn:
            return [_row(r._mapping) for r in conn.execute(query)]

    def sync(self, *, force: bool = False) -> int:
        """Apply the changes since the last sync (at most every ``ttl`` seconds unless
        ``force``); returns how many rows changed."""
        now = self._clock()
        if not force and now < self._next_sync:
            return 0
        query = select(self.flags).where(self.flags.c.version > self._last_version)
        with self._connection() as conn:
            rows = [_row(r._mapping) for r in conn.execute(query)]
        with self._lock:
            compiled = dict(self._compiled)
            for row in rows:
                if row.deleted:
                    compiled.pop(row.key, None)
                else:
                    compiled[row.key] = compile_flag_ruleset(row.ruleset)
                self._last_version = max(self._last_version, row.version)
            self._compiled = compiled
            self._next_sync = now + self.ttl
        return len(rows)

    # -- evaluation (the SDK's LocalFlags) --------------------------------------------------

    def evaluate(
        self,
        keys: Sequence[str] | None,
        company: Keys | None,
        user: Keys | None,
        *,
        company_traits: Mapping[str, Any] | None = None,
        user_traits: Mapping[str, Any] | None = None,
    ) -> list[FlagCheck]:
        self.sync()
        flags = self._compiled
        ctx = EvalContext(
            CompanyContext(None, keys=company, traits=company_traits) if company else None,
            UserContext(None, keys=user, traits=user_traits) if user else None,
        )
        found = []
        for key in flags if keys is None else keys:
            flag = flags.get(key)
            found.append(flag.check(ctx) if flag is not None else not_found(key).to_check())
        return found

    def note_track(
        self, event: str, company: Keys | None, user: Keys | None, quantity: int
    ) -> None:
        """No usage metrics here: track events are not counted."""

    def check_flag(
        self,
        key: str,
        *,
        company: Keys | None = None,
        user: Keys | None = None,
        **entries: Any,
    ) -> bool:
        """Whether ``key`` is on; entries ``user_id="42"`` name the user by its keys."""
        c, u = entities(company, user, entries)
        return self.evaluate([key], c, u)[0].value

    def context(
        self, *, company: Keys | None = None, user: Keys | None = None, **entries: Any
    ) -> StoreContext:
        """A request context: one snapshot of the flags for its company/user."""
        c, u = entities(company, user, entries)
        return StoreContext(self, c, u)


class StoreContext:
    """flypper's ``Context``: ``is_enabled``/``is_disabled`` from one snapshot; a
    question's own entries override the context's."""

    def __init__(self, store: SqlAlchemyFlagStore, company: Keys | None, user: Keys | None):
        self.store = store
        self.company = dict(company or {})
        self.user = dict(user or {})
        self._snapshot = {c.flag: c for c in store.evaluate(None, company, user)}

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass

    def is_enabled(self, flag: str, **entries: Any) -> bool:
        if entries:
            c, u = entities(None, None, entries)
            company = {**self.company, **(c or {})} or None
            user = {**self.user, **(u or {})} or None
            return self.store.evaluate([flag], company, user)[0].value
        found = self._snapshot.get(flag)
        return found.value if found is not None else False

    def is_disabled(self, flag: str, **entries: Any) -> bool:
        return not self.is_enabled(flag, **entries)


def _table(
    given: Table | None, metadata: MetaData, name: str, build: Callable[[MetaData], Table]
) -> Table:
    """The table given, else the one ``metadata`` already has (an app that built it for
    ``create_all()`` or its ORM), else a new one."""
    if given is not None:
        return given
    known = metadata.tables.get(name)
    return known if known is not None else build(metadata)


def _row(data: Any) -> FlagRow:
    """A flag from a row's mapping."""
    return FlagRow(
        key=str(data["key"]),
        ruleset=FlagRuleset.model_validate(json.loads(data["ruleset"])),
        version=int(data["version"]),
        deleted=bool(data["deleted"]),
        updated_at=float(data["updated_at"]),
    )
