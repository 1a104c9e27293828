"""Local flag evaluation on the live stream: the sans-I/O part, shared by the sync and
async drivers (:mod:`._flags_live_sync`, :mod:`._flags_live_async`).

The stream (``/v1/flags/stream``) is the realtime protocol over the control database's
flag tables, so a driver holds a realtime client whose cache mirrors the rows it
subscribed to. :class:`FlagMirror` decides what to subscribe to and evaluates checks from
that cache with the shared engine:

- every ruleset of the environment (``flag_rulesets``), compiled once per change;
- for each company or user a check names, its key rows (``flag_company_keys`` /
  ``flag_user_keys``) — which tell its id, or that it does not exist (yet) — then, once
  its id is known, its row, its overrides and its usage metrics of the current periods.

A check that names a company or user whose rows are not mirrored yet cannot be answered
locally: :meth:`FlagMirror.evaluate` returns ``None`` (the client asks the server that
once) and queues a :class:`Watch` that the driver turns into subscriptions. A key row
inserted later (a company identified after we looked) queues the entity's watch too.

``track()`` calls :meth:`FlagMirror.note_track`: the event counts locally at once, so a
usage limit bites before the server's counters catch up. A local count is dropped when the
server's metric row for that entity and event next changes (which then includes it, or
will shortly: counts may lag, never double for long).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from ..engine.flags import (
    PERIODS,
    CompanyContext,
    CompiledFlag,
    EvalContext,
    MetricKey,
    UserContext,
    bucket_start,
    compile_ruleset,
    not_found,
)
from ..models.flags import CompanyOverride, FlagCheck, FlagRuleset

_log = logging.getLogger("millpond.flags")

Kind = Literal["company", "user"]

_KEYS_TABLE = {"company": "flag_company_keys", "user": "flag_user_keys"}
_ROW_TABLE = {"company": "flag_companies", "user": "flag_users"}
_ID_COLUMN = {"company": "company_id", "user": "user_id"}


class CacheRows(Protocol):
    """What the mirror reads of the realtime client's cache (its ``TableView``)."""

    def filter_by(self, **values: Any) -> list[Any]: ...

    def find(self, *key: Any) -> Any: ...


@dataclass(frozen=True)
class Watch:
    """Subscriptions the driver should make: for ``keys`` (key pairs of one kind), or for
    the entity ``entity_id``."""

    kind: Kind
    keys: tuple[tuple[str, str], ...] = ()
    entity_id: str | None = None


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


class FlagMirror:
    """Compiled rulesets and the watch bookkeeping of one environment; evaluation reads
    companies, users and metrics from the realtime cache through ``table``."""

    def __init__(
        self,
        table: Callable[[str], CacheRows],
        queue_watch: Callable[[Watch], None],
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._table = table
        self._queue_watch = queue_watch
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self.environment_id: str | None = None
        self.flags: dict[str, CompiledFlag] = {}
        self.ready = False
        self._watched_keys: set[tuple[Kind, str, str]] = set()
        self._watched_ids: set[tuple[Kind, str]] = set()
        self._requested: set[Watch] = set()
        self._local_usage: dict[tuple[str, str], float] = {}
        self._local_quantity: dict[tuple[str, str], float] = {}

    # -- what to subscribe to ------------------------------------------------------------

    def ruleset_query(self) -> str:
        assert self.environment_id is not None
        return f"SELECT * FROM flag_rulesets WHERE environment_id = {_literal(self.environment_id)}"

    def queries(self, watch: Watch, now: datetime | None = None) -> list[str]:
        """The subscription queries of a watch: the selective column first, since the
        client cache indexes a query's first equality (every row shares environment_id)."""
        env = _literal(self.environment_id or "")
        if watch.entity_id is None:
            table = _KEYS_TABLE[watch.kind]
            return [
                f"SELECT * FROM {table} WHERE value = {_literal(value)}"
                f" AND name = {_literal(name)} AND environment_id = {env}"
                for name, value in watch.keys
            ]
        entity = _literal(watch.entity_id)
        moment = now or self._clock()
        since = min(bucket_start("current_week", moment), bucket_start("current_month", moment))
        queries = [
            f"SELECT * FROM {_ROW_TABLE[watch.kind]}"
            f" WHERE id = {entity} AND environment_id = {env}",
            f"SELECT * FROM flag_metrics WHERE entity_id = {entity} AND environment_id = {env}"
            f" AND (period = 'all_time' OR bucket_start >= '{since.isoformat()}')",
        ]
        if watch.kind == "company":
            queries.append(
                f"SELECT * FROM flag_company_overrides WHERE company_id = {entity}"
                f" AND environment_id = {env}"
            )
        return queries

    def watched(self, watch: Watch) -> None:
        """The driver subscribed ``watch``: its rows are in the cache. Queue the entities
        its key rows point at."""
        with self._lock:
            self._requested.discard(watch)
            if watch.entity_id is not None:
                self._watched_ids.add((watch.kind, watch.entity_id))
                return
            self._watched_keys.update((watch.kind, n, v) for n, v in watch.keys)
        for name, value in watch.keys:
            entity = self._entity_id(watch.kind, name, value)
            if entity is not None:
                self._request(Watch(watch.kind, entity_id=entity))

    def watch_failed(self, watch: Watch) -> None:
        with self._lock:
            self._requested.discard(watch)

    def reset(self) -> None:
        """The stream was lost for good or the process forked: forget everything."""
        with self._lock:
            self.ready = False
            self.flags = {}
            self._watched_keys.clear()
            self._watched_ids.clear()
            self._requested.clear()

    def _request(self, watch: Watch) -> None:
        with self._lock:
            if watch in self._requested:
                return
            self._requested.add(watch)
        self._queue_watch(watch)

    # -- stream callbacks -----------------------------------------------------------------

    def load_rulesets(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """The rulesets as of the subscription: replace everything."""
        flags: dict[str, CompiledFlag] = {}
        for row in rows:
            compiled = _compile(row)
            if compiled is not None:
                flags[str(row["flag_key"])] = compiled
        with self._lock:
            self.flags = flags
            self.ready = True

    def ruleset_changed(self, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
        flags = dict(self.flags)
        if old is not None:
            flags.pop(str(old["flag_key"]), None)
        if new is not None:
            compiled = _compile(new)
            if compiled is not None:
                flags[str(new["flag_key"])] = compiled
        self.flags = flags  # one reference swap: readers see the old or the new dict

    def key_inserted(self, kind: Kind, row: Mapping[str, Any]) -> None:
        """A key row arrived for a watched key: watch the entity it names."""
        pair = (kind, str(row["name"]), str(row["value"]))
        if pair in self._watched_keys:
            self._request(Watch(kind, entity_id=str(row[_ID_COLUMN[kind]])))

    def metric_changed(self, row: Mapping[str, Any]) -> None:
        """The server's counter moved: drop the local counts it now includes."""
        key = (str(row["entity_id"]), str(row["event"]))
        self._local_usage.pop(key, None)
        self._local_quantity.pop(key, None)

    # -- local usage ------------------------------------------------------------------------

    def note_track(
        self,
        event: str,
        company: Mapping[str, str] | None,
        user: Mapping[str, str] | None,
        quantity: int,
    ) -> None:
        for kind, keys in (("company", company), ("user", user)):
            entity = self._resolve_id(kind, keys) if keys else None  # type: ignore[arg-type]
            if entity is not None:
                key = (entity, event)
                self._local_usage[key] = self._local_usage.get(key, 0) + 1
                self._local_quantity[key] = self._local_quantity.get(key, 0) + quantity

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(
        self,
        keys: Sequence[str] | None,
        company: Mapping[str, str] | None,
        user: Mapping[str, str] | None,
    ) -> list[FlagCheck] | None:
        """The checks, or None when the mirror cannot answer (not loaded; a company or
        user not mirrored yet — then it is watched from now on)."""
        if not self.ready:
            return None
        flags = self.flags
        now = self._clock()
        company_ctx = user_ctx = None
        if company:
            found = self._context("company", company, now)
            if found is None:
                return None
            company_ctx = found[0]
        if user:
            found = self._context("user", user, now)
            if found is None:
                return None
            user_ctx = found[0]
        ctx = EvalContext(company_ctx, user_ctx, now)  # type: ignore[arg-type]
        results = []
        for key in flags if keys is None else keys:
            flag = flags.get(key)
            if flag is not None:
                results.append(flag.check(ctx))
            else:
                results.append(
                    not_found(key).to_check(
                        company_id=company_ctx.id if company_ctx is not None else None,
                        user_id=user_ctx.id if user_ctx is not None else None,
                    )
                )
        return results

    def _context(
        self, kind: Kind, keys: Mapping[str, str], now: datetime
    ) -> tuple[CompanyContext | UserContext | None] | None:
        """``(context,)`` — context None when no such entity — or None when unknown."""
        missing = [(n, v) for n, v in keys.items() if (kind, n, v) not in self._watched_keys]
        if missing:
            self._request(Watch(kind, keys=tuple(missing)))
            return None
        entity = self._resolve_id(kind, keys)
        if entity is None:
            return (None,)
        if (kind, entity) not in self._watched_ids:
            self._request(Watch(kind, entity_id=entity))
            return None
        row = self._table(_ROW_TABLE[kind]).find(entity)
        if row is None:  # deleted since
            return (None,)
        metrics = self._metrics(entity, now)
        if kind == "user":
            return (UserContext(entity, keys=row["keys"], traits=row["traits"], metrics=metrics),)
        overrides = sorted(
            self._table("flag_company_overrides").filter_by(company_id=entity),
            key=lambda o: (str(o["created_at"]), str(o["id"])),
        )
        return (
            CompanyContext(
                entity,
                keys=row["keys"],
                traits=row["traits"],
                plan_id=row["plan_id"],
                metrics=metrics,
                overrides=[_override(o) for o in overrides],
            ),
        )

    def _resolve_id(self, kind: Kind, keys: Mapping[str, str]) -> str | None:
        """The entity's id by its first key that is known (the server's rule)."""
        for name, value in keys.items():
            entity = self._entity_id(kind, name, value)
            if entity is not None:
                return entity
        return None

    def _entity_id(self, kind: Kind, name: str, value: str) -> str | None:
        rows = self._table(_KEYS_TABLE[kind]).filter_by(name=name, value=value)
        return str(rows[0][_ID_COLUMN[kind]]) if rows else None

    def _metrics(self, entity: str, now: datetime) -> dict[MetricKey, float]:
        current = {p: bucket_start(p, now) for p in PERIODS}
        figures: dict[MetricKey, float] = {}
        for row in self._table("flag_metrics").filter_by(entity_id=entity):
            period = str(row["period"])
            if _as_datetime(row["bucket_start"]) != current.get(period):
                continue
            event = str(row["event"])
            figures[(event, period, "count")] = float(row["count"])  # type: ignore[index]
            figures[(event, period, "sum")] = float(row["quantity"])  # type: ignore[index]
        for (who, event), count in self._local_usage.items():
            if who == entity:
                quantity = self._local_quantity.get((who, event), 0)
                for period in PERIODS:
                    for agg, extra in (("count", count), ("sum", quantity)):
                        key: Any = (event, period, agg)
                        figures[key] = figures.get(key, 0) + extra
        return figures


class NoRows:
    """The cache before the realtime client exists: no rows."""

    def filter_by(self, **values: Any) -> list[Any]:
        return []

    def find(self, *key: Any) -> Any:
        return None


class LiveBase:
    """What the sync and async drivers share: the mirror, the ``LocalFlags`` methods,
    and what happens when the stream stops for good. A driver sets ``_rt`` to its realtime
    client and implements :meth:`start` and :meth:`_enqueue`."""

    def __init__(self) -> None:
        self._rt: Any = None
        self._closed = False
        self.failed: BaseException | None = None
        """Why the stream stopped for good (checks then go to the server)."""
        self.mirror = FlagMirror(self._table, self._enqueue)

    def start(self) -> None:
        raise NotImplementedError

    def _enqueue(self, watch: Watch) -> None:
        raise NotImplementedError

    def evaluate(
        self,
        keys: Sequence[str] | None,
        company: Mapping[str, str] | None,
        user: Mapping[str, str] | None,
    ) -> list[FlagCheck] | None:
        self.start()
        return self.mirror.evaluate(keys, company, user)

    def note_track(
        self,
        event: str,
        company: Mapping[str, str] | None,
        user: Mapping[str, str] | None,
        quantity: int,
    ) -> None:
        self.mirror.note_track(event, company, user, quantity)

    @property
    def ready(self) -> bool:
        return self.mirror.ready

    def _table(self, name: str) -> CacheRows:
        rt = self._rt
        return rt.table(name) if rt is not None else NoRows()

    def _failed(self, error: BaseException) -> None:
        if self._closed:
            return
        _log.warning("flags stream stopped; checks go to the server: %s", error)
        self.failed = error
        self.mirror.reset()


def attach(rt: Any, mirror: FlagMirror, failed: Callable[[BaseException], None]) -> None:
    """Register the mirror's callbacks on a realtime client (sync or async: the same
    callback API), before it connects."""
    rt.on_connect(lambda info: setattr(mirror, "environment_id", info.hello["environment_id"]))
    rt.on_error(failed)
    rulesets = rt.table("flag_rulesets")
    rulesets.on_insert(lambda row: mirror.ruleset_changed(None, row))
    rulesets.on_update(mirror.ruleset_changed)
    rulesets.on_delete(lambda row: mirror.ruleset_changed(row, None))
    rt.table("flag_company_keys").on_insert(lambda row: mirror.key_inserted("company", row))
    rt.table("flag_user_keys").on_insert(lambda row: mirror.key_inserted("user", row))
    metrics = rt.table("flag_metrics")
    metrics.on_insert(mirror.metric_changed)
    metrics.on_update(lambda old, new: mirror.metric_changed(new))


def _compile(row: Mapping[str, Any]) -> CompiledFlag | None:
    if row.get("deleted_at") is not None:
        return None
    try:
        return compile_ruleset(FlagRuleset.model_validate(row["ruleset"]))
    except Exception as exc:  # a newer server's ruleset we cannot read: the server answers
        _log.warning("cannot compile flag %r locally: %s", row.get("flag_key"), exc)
        return None


_OVERRIDE_FIELDS = (
    "id",
    "company_id",
    "feature_id",
    "value_type",
    "value_bool",
    "value_numeric",
    "value_trait_key",
    "metric_period",
    "expires_at",
)


def _override(row: Mapping[str, Any]) -> CompanyOverride:
    return CompanyOverride.model_validate({f: row[f] for f in _OVERRIDE_FIELDS if f in row})
