"""Identify and track events, accepted in batches.

A batch is one transaction, committed before the answer (so an acknowledged event is in
Postgres, never only in memory):

1. every event is inserted into ``flag_events`` with ``ON CONFLICT (environment_id,
   idempotency_key) DO NOTHING``; the ids returned are the new events (a key seen before —
   in an earlier batch, a concurrent one, or earlier in this one — is a duplicate, and has
   no further effect);
2. the new events are applied in order: identify upserts the user (and its company, and
   the membership); track resolves (or creates) its company and user by keys, and adds to
   the usage counters of each, for its event, in the buckets of ``all_time``, its UTC day,
   week and month (by ``sent_at``, never later than when received);
3. the resolved ids are written on the event rows and the counters upserted in one
   statement (rows in key order, so concurrent batches lock them in the same order).

A crash before the commit loses the whole batch and the client, unanswered, sends it
again; a crash after it makes the retry a set of duplicates. Events without an
idempotency key cannot be told from a retry: the SDK gives each event a key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from psycopg import AsyncConnection, errors
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from millpond.models.flags import EventRequest, EventsAccepted, IdentifyEvent, TrackEvent

from ...engine.flags import PERIODS, bucket_start
from ..errors import ServiceError
from ..store import Store
from . import entities
from .access import environment_not_found
from .changes import new_id

_log = logging.getLogger("millpond.flags")
_ATTEMPTS = 4

MetricRow = tuple[str, str, str, str, datetime]
"""(entity id, entity type, event, period, bucket start)."""


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def ingest(store: Store, env_id: str, events: Sequence[EventRequest]) -> EventsAccepted:
    """Store and apply a batch; retried on the races two batches can run into (creating the
    same company at once, deadlocks between counters)."""
    for attempt in range(_ATTEMPTS):
        try:
            async with store.transaction() as conn:
                return await _ingest(conn, env_id, events, datetime.now(UTC))
        except errors.ForeignKeyViolation:
            raise environment_not_found(env_id) from None
        except (
            errors.UniqueViolation,
            errors.DeadlockDetected,
            errors.SerializationFailure,
        ) as exc:
            if attempt + 1 == _ATTEMPTS:
                raise ServiceError(
                    409, "event_conflict", "concurrent batches kept conflicting; send it again"
                ) from exc
            _log.info("event batch retried after %s", type(exc).__name__)
            await asyncio.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


async def _ingest(
    conn: AsyncConnection[DictRow],
    env_id: str,
    events: Sequence[EventRequest],
    received_at: datetime,
) -> EventsAccepted:
    ids = [new_id("evt") for _ in events]
    cur = await conn.execute(
        "INSERT INTO flag_events (id, environment_id, idempotency_key, event_type, event,"
        " quantity, body, sent_at, received_at)"
        " SELECT i, %s, k, t, e, q, b, s, %s"
        " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[],"
        " %s::jsonb[], %s::timestamptz[]) WITH ORDINALITY AS v(i, k, t, e, q, b, s, n)"
        " ORDER BY n"
        " ON CONFLICT (environment_id, idempotency_key) DO NOTHING RETURNING id",
        (
            env_id,
            received_at,
            ids,
            [e.idempotency_key for e in events],
            [e.event_type for e in events],
            [e.event if isinstance(e, TrackEvent) else None for e in events],
            [e.quantity if isinstance(e, TrackEvent) else None for e in events],
            [Jsonb(e.model_dump(mode="json", exclude_none=True)) for e in events],
            [e.sent_at for e in events],
        ),
    )
    inserted = {row["id"] for row in await cur.fetchall()}
    resolved: dict[str, tuple[str | None, str | None]] = {}
    counters: dict[MetricRow, list[int]] = {}
    seen: dict[tuple[str, frozenset[tuple[str, str]]], str] = {}

    async def entity(kind: entities.Kind, keys: Mapping[str, str]) -> str:
        cache_key = (kind.name, frozenset(keys.items()))
        found = seen.get(cache_key)
        if found is None:
            found = seen[cache_key] = await entities.touch(conn, kind, env_id, keys)
        return found

    for event_id, event in zip(ids, events, strict=True):
        if event_id not in inserted:
            continue
        if isinstance(event, IdentifyEvent):
            seen.clear()  # keys may move
            company_id = None
            if event.company is not None:
                _, company = await entities.upsert(
                    conn,
                    entities.COMPANY,
                    env_id,
                    event.company.keys,
                    name=event.company.name,
                    traits=event.company.traits,
                )
                company_id = company.id
            _, user = await entities.upsert(
                conn, entities.USER, env_id, event.keys, name=event.name, traits=event.traits
            )
            if company_id is not None:
                await entities.add_membership(conn, env_id, user.id, company_id)
            resolved[event_id] = (company_id, user.id)
            continue
        company_id = await entity(entities.COMPANY, event.company) if event.company else None
        user_id = await entity(entities.USER, event.user) if event.user else None
        resolved[event_id] = (company_id, user_id)
        at = min(_utc(event.sent_at), received_at) if event.sent_at else received_at
        for entity_id, entity_type in ((company_id, "company"), (user_id, "user")):
            if entity_id is None:
                continue
            for period in PERIODS:
                row = (entity_id, entity_type, event.event, period, bucket_start(period, at))
                figures = counters.setdefault(row, [0, 0])
                figures[0] += 1
                figures[1] += event.quantity
    if resolved:
        await conn.execute(
            "UPDATE flag_events e SET company_id = v.c, user_id = v.u"
            " FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(i, c, u) WHERE e.id = v.i",
            (list(resolved), [c for c, _ in resolved.values()], [u for _, u in resolved.values()]),
        )
    if counters:
        rows = sorted(counters)
        await conn.execute(
            "INSERT INTO flag_metrics (environment_id, entity_id, entity_type, event, period,"
            " bucket_start, count, quantity)"
            " SELECT %s, e, t, ev, p, b, c, q"
            " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[],"
            " %s::bigint[], %s::numeric[]) WITH ORDINALITY AS m(e, t, ev, p, b, c, q, n)"
            " ORDER BY n"
            " ON CONFLICT (environment_id, entity_id, event, period, bucket_start) DO UPDATE"
            " SET count = flag_metrics.count + EXCLUDED.count,"
            " quantity = flag_metrics.quantity + EXCLUDED.quantity, updated_at = now()",
            (
                env_id,
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
                [r[4] for r in rows],
                [counters[r][0] for r in rows],
                [counters[r][1] for r in rows],
            ),
        )
    return EventsAccepted(accepted=len(inserted), duplicates=len(events) - len(inserted))
