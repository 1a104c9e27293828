"""``AsyncMillpond``: the client. Resources hang off it (``mp.databases``,
``mp.keys``, ``mp.service_accounts``, ``mp.users``); ``health()``, ``me()`` and
``query()`` are on the client itself, as are the bit.io SDK's method names
(``create_database``, ``revoke_keys``, …) for code written against that SDK.

Every API method takes keyword-only ``timeout=`` (seconds, or an ``httpx.Timeout``) and
``max_retries=`` overriding the client's for that call.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from ...backoff import Backoff
from ...errors import ConfigurationError
from ...models import (
    ApiKeyCreated,
    Database,
    DataFormat,
    Health,
    Me,
    QueryRequest,
    QueryResult,
    ServiceAccount,
)
from ...models.flags import EventsAccepted, IdentifyCompany, TraitValue
from .._base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ENVIRONMENT_ENV,
    Call,
    ClientConfig,
    TimeoutTypes,
    body,
    parse_model,
    segment,
    split_database,
)
from .._event_workers import AsyncEventWorker
from .._events import (
    Event,
    EventOptions,
    EventQueue,
    EventStats,
    identify_event,
    track_event,
    with_keys,
)
from .._flags_live_async import AsyncLiveFlags
from .._local import LocalFlags
from .._retry import RetryPolicy
from ..realtime import AsyncRealtime, CallbackMode
from ._transport import AsyncTransport
from .databases import AsyncDatabases
from .keys import AsyncKeys
from .service_accounts import AsyncServiceAccounts
from .transfer import Exports, Imports
from .users import AsyncUsers


class AsyncMillpond:
    """A millpond API client::

        async with AsyncMillpond() as mp:  # MILLPOND_API_KEY, MILLPOND_URL
            db = await mp.databases.create("my-db")
            result = await mp.query(db.full_name, "SELECT 1 AS one")

    ``api_key`` defaults to ``$MILLPOND_API_KEY`` (``ConfigurationError`` without one);
    ``base_url`` to ``$MILLPOND_URL``, else ``http://127.0.0.1:8000``. ``timeout`` applies
    to every request (``None``: no limit). Failed requests are retried up to
    ``max_retries`` times as ``retry_policy`` says (see ``RetryPolicy``). An
    ``http_client`` passed in is used as is (proxies, TLS, hooks) and not closed here.
    ``environment`` (default ``$MILLPOND_ENVIRONMENT``) names the flags environment that
    flag calls use when the key is not bound to one; ``offline=True`` makes no network
    calls at all (flag checks answer from defaults; no API key needed).
    ``event_options`` (an ``EventOptions``) sizes the buffer of ``identify``/``track`` events.
    ``local_evaluation=True`` checks flags in-process from the environment's live stream
    (rules and the companies/users checked, kept current over a WebSocket): no round trip
    per check once warm; the server answers whatever it cannot yet.
    """

    databases: AsyncDatabases
    keys: AsyncKeys
    service_accounts: AsyncServiceAccounts
    users: AsyncUsers
    imports: Imports
    exports: Exports

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_policy: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        environment: str | None = None,
        offline: bool = False,
        event_options: EventOptions | None = None,
        local_evaluation: bool = False,
    ) -> None:
        config = ClientConfig.resolve(
            api_key,
            base_url,
            timeout,
            max_retries,
            retry_policy,
            environment=environment,
            offline=offline,
        )
        self._transport = AsyncTransport(config, http_client)
        self.databases = AsyncDatabases(self._transport)
        self.keys = AsyncKeys(self._transport)
        self.service_accounts = AsyncServiceAccounts(self._transport)
        self.users = AsyncUsers(self._transport)
        self.imports = Imports(self._transport)
        self.exports = Exports(self._transport)
        self._environment_id: str | None = None
        queue = EventQueue(
            event_options or EventOptions(), config.retry_policy, offline=config.offline
        )
        self._events = AsyncEventWorker(queue, self._send_batch)
        self._live = (
            AsyncLiveFlags(config) if local_evaluation and not config.offline else None
        )
        self._local: LocalFlags | None = self._live

    @property
    def base_url(self) -> str:
        return self._transport.config.base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    async def aclose(self) -> None:
        """Send the buffered events (at most ``event_options.close_timeout`` seconds), then
        release the connections (not those of an ``http_client`` passed in)."""
        await self._events.aclose()
        if self._live is not None:
            await self._live.aclose()
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the flags environment -------------------------------------------------------------

    async def _environment(self) -> str:
        """The flags environment of flag calls: the ``environment`` option, else the one
        the API key is bound to (asked once), else ``ConfigurationError``."""
        if self._environment_id is None:
            config = self._transport.config
            if config.environment is not None:
                self._environment_id = config.environment
            else:
                bound = (await self.me()).key.environment_id
                if bound is None:
                    raise ConfigurationError(
                        "flag calls need an environment: pass environment=... (an id or a"
                        f" name) or set {ENVIRONMENT_ENV}, or use a key bound to one"
                        " (`millpond flags keys create`)"
                    )
                self._environment_id = bound
        return self._environment_id

    # -- the client's own calls ------------------------------------------------------------

    async def health(
        self, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> Health:
        """The server's status and its Postgres's."""
        call = Call("GET", "/v1/health", parse_model(Health))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def me(self, *, timeout: TimeoutTypes = None, max_retries: int | None = None) -> Me:
        """Who the API key belongs to: the user, the service account if any, the key."""
        call = Call("GET", "/v1/me", parse_model(Me))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def query(
        self,
        db: str,
        sql: str,
        data_format: DataFormat | None = None,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> QueryResult:
        """Run ``sql`` on database ``"owner/name"`` in one transaction; the result of the
        last statement. ``data_format="objects"`` gives rows as dicts, ``"list"`` (the
        default) as lists. Prefer a direct Postgres connection for heavy work."""
        split_database(db)
        request = QueryRequest.model_construct(database=db, sql=sql, data_format=data_format)
        call = Call("POST", "/v1/query", parse_model(QueryResult), json=body(request))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def realtime(
        self,
        db: str,
        *,
        callbacks: CallbackMode | None = None,
        reconnect_backoff: Backoff | None = None,
        heartbeat_interval: float | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
    ) -> AsyncRealtime:
        """A realtime connection to database ``"owner/name"``, connected: subscribe to
        queries, read the client cache, register callbacks (see ``AsyncRealtime``).

        ``callbacks`` (sync client only): ``"update"`` (default) queues callbacks until
        ``rt.update()`` on the caller's thread; ``"thread"`` runs them on the client's
        background thread. The async client runs them on its event loop (leave None).
        ``reconnect_backoff`` paces reconnects (default ``Backoff()``: 0.5 s doubling,
        capped at 8 s); ``max_retries`` failed reconnects in a row stop the client (None:
        never give up). ``timeout``: seconds to connect and to wait for answers (None:
        the client's connect timeout). ``heartbeat_interval``: seconds of silence before
        the client pings (None: the server's interval); three intervals of silence drop
        the connection.
        """
        rt = AsyncRealtime(
            self._transport.config,
            db,
            callbacks=callbacks,
            reconnect_backoff=reconnect_backoff,
            heartbeat_interval=heartbeat_interval,
            timeout=timeout,
            max_retries=max_retries,
        )
        await rt.connect()
        return rt

    # -- identify and track events ---------------------------------------------------------

    async def identify(
        self,
        keys: Mapping[str, str],
        *,
        company: IdentifyCompany | Mapping[str, Any] | None = None,
        name: str | None = None,
        traits: Mapping[str, TraitValue] | None = None,
    ) -> None:
        """Create or update the user with ``keys`` (and its ``company``: keys, name,
        traits), in the flags environment. Returns at once: the event is buffered and sent
        in a batch in the background (see ``flush``, ``event_stats``); bad arguments raise
        ``ValueError`` here."""
        self._events.push(identify_event(keys, company, name, traits))

    async def track(
        self,
        event: str,
        *,
        company: Mapping[str, str] | None = None,
        user: Mapping[str, str] | None = None,
        quantity: int = 1,
        traits: Mapping[str, TraitValue] | None = None,
    ) -> None:
        """Record ``quantity`` units of usage of ``event`` for a company and/or user (given
        by their keys): metrics count these events and sum their quantities. Returns at
        once, like ``identify``; each event carries an idempotency key, so a batch sent
        again never counts twice."""
        tracked = track_event(event, company, user, quantity, traits)
        self._events.push(tracked)
        local = getattr(self, "_local", None)
        if local is not None:
            local.note_track(event, tracked.company, tracked.user, quantity)

    async def flush(self, *, timeout: float | None = 10.0) -> bool:
        """Send the buffered events now and wait: True once all buffered before the call
        were sent; False if ``timeout`` seconds passed first (``None``: no limit) or some
        were dropped or refused meanwhile (see ``event_stats``)."""
        return await self._events.flush(timeout)

    @property
    def event_stats(self) -> EventStats:
        """Counters of the ``identify``/``track`` events: queued, sent, duplicates,
        dropped, failed, retries, pending."""
        return self._events.stats()

    async def send_events(
        self,
        events: Sequence[Event],
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> EventsAccepted:
        """Send ``IdentifyEvent``/``TrackEvent`` models now, in one batch (1 to 1,000), and
        return the server's answer: events stored, and duplicates it already had. Events
        without an ``idempotency_key`` get one first, so retries never count twice.
        (``identify`` and ``track`` buffer instead; offline clients cannot send.)"""
        if not 1 <= len(events) <= 1000:
            raise ValueError(f"send 1 to 1000 events at once, not {len(events)}")
        if self._transport.config.offline:
            raise ConfigurationError("this client is offline (offline=True): it sends nothing")
        env = await self._environment()
        call = Call(
            "POST",
            f"/v1/flags/environments/{segment(env)}/events",
            parse_model(EventsAccepted),
            json={"events": [body(e) for e in with_keys(events)]},
            idempotent=True,
        )
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def _send_batch(self, events: builtins.list[Event]) -> EventsAccepted:
        return await self.send_events(events)

    # -- the bit.io SDK's names --------------------------------------------------------------

    async def create_database(
        self,
        name: str,
        is_private: bool = True,
        storage_limit_bytes: int | None = None,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Database:
        """``databases.create``."""
        return await self.databases.create(
            name, is_private, storage_limit_bytes, timeout=timeout, max_retries=max_retries
        )

    async def list_databases(
        self, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> builtins.list[Database]:
        """``databases.list``."""
        return await self.databases.list(timeout=timeout, max_retries=max_retries)

    async def get_database(
        self, db_name: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> Database:
        """``databases.get``."""
        return await self.databases.get(db_name, timeout=timeout, max_retries=max_retries)

    async def update_database(
        self,
        db_name: str,
        name: str | None = None,
        is_private: bool | None = None,
        storage_limit_bytes: int | None = None,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Database:
        """``databases.update``."""
        return await self.databases.update(
            db_name,
            name,
            is_private,
            storage_limit_bytes,
            timeout=timeout,
            max_retries=max_retries,
        )

    async def delete_database(
        self, db_name: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> None:
        """``databases.delete``."""
        await self.databases.delete(db_name, timeout=timeout, max_retries=max_retries)

    async def create_key(
        self, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> ApiKeyCreated:
        """``keys.create()``: a new key with the caller's rights."""
        return await self.keys.create(timeout=timeout, max_retries=max_retries)

    async def revoke_keys(
        self,
        api_key: str | None = None,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> int:
        """Revoke ``api_key`` only, or with no argument every key of the caller (including
        the one in use). Returns how many were revoked."""
        if api_key is not None:
            await self.keys.revoke(api_key=api_key, timeout=timeout, max_retries=max_retries)
            return 1
        return await self.keys.revoke_all(timeout=timeout, max_retries=max_retries)

    async def list_service_accounts(
        self, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> builtins.list[ServiceAccount]:
        """``service_accounts.list``."""
        return await self.service_accounts.list(timeout=timeout, max_retries=max_retries)

    async def get_service_account(
        self,
        service_account_id: int | str,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> ServiceAccount:
        """``service_accounts.get``."""
        return await self.service_accounts.get(
            service_account_id, timeout=timeout, max_retries=max_retries
        )

    async def create_service_account_key(
        self,
        service_account_id: int | str,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> ApiKeyCreated:
        """``service_accounts.create_key``."""
        return await self.service_accounts.create_key(
            service_account_id, timeout=timeout, max_retries=max_retries
        )

    async def revoke_service_account_keys(
        self,
        service_account_id: int | str,
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> int:
        """``service_accounts.revoke_keys``: revoke all of its keys; how many."""
        return await self.service_accounts.revoke_keys(
            service_account_id, timeout=timeout, max_retries=max_retries
        )
