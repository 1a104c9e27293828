"""``AsyncMillpond``: the client. Resources hang off it (``mp.databases``,
``mp.keys``, ``mp.service_accounts``, ``mp.users``, ``mp.clusters``); ``health()``, ``me()`` and
``query()`` are on the client itself, as are the bit.io SDK's method names
(``create_database``, ``revoke_keys``, …) for code written against that SDK.

Every API method takes keyword-only ``timeout=`` (seconds, or an ``httpx.Timeout``) and
``max_retries=`` overriding the client's for that call.
"""

from __future__ import annotations

import builtins
import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx

from ...backoff import Backoff
from ...errors import ConfigurationError, MillpondError
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
from ...models.flags import EventsAccepted, FlagCheck, FlagChecks, IdentifyCompany, TraitValue
from ...models.modules import CallResult
from .._base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ENVIRONMENT_ENV,
    Call,
    ClientConfig,
    TimeoutTypes,
    body,
    parse_model,
    read_token_file,
    segment,
    split_database,
    write_token_file,
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
from .._flagcache import CacheProvider, LocalCache, cache_key, default_check
from .._flags_live_async import AsyncLiveFlags
from .._local import LocalFlags
from .._retry import RetryPolicy
from ..realtime import AsyncRealtime, CallbackMode
from ._transport import AsyncTransport
from .clusters import AsyncClusters
from .companies import AsyncCompanies
from .connections import AsyncConnections
from .databases import AsyncDatabases
from .flag_context import AsyncFlagContext, entities
from .flags import AsyncFlags
from .keys import AsyncKeys
from .modules import AsyncModules
from .service_accounts import AsyncServiceAccounts
from .transfer import Exports, Imports
from .users import AsyncUsers

if TYPE_CHECKING:
    from psycopg import AsyncConnection, AsyncCursor

_log = logging.getLogger("millpond.flags")


def _flag_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise TypeError(f"a flag key is a non-empty string, not {key!r}")
    return key


def flag_entities(
    company: Mapping[str, str] | None, user: Mapping[str, str] | None
) -> tuple[dict[str, str] | None, dict[str, str] | None]:
    """Company and user keys as plain dicts of strings (None when not given)."""
    found = []
    for name, keys in (("company", company), ("user", user)):
        if keys is not None and not isinstance(keys, Mapping):
            raise TypeError(f"{name} is a mapping of its keys, e.g. {{'id': '42'}}, not {keys!r}")
        found.append({str(k): str(v) for k, v in keys.items()} if keys else None)
    return found[0], found[1]


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
    modules: AsyncModules
    flags: AsyncFlags
    companies: AsyncCompanies
    keys: AsyncKeys
    service_accounts: AsyncServiceAccounts
    users: AsyncUsers
    clusters: AsyncClusters
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
        cache_providers: Sequence[CacheProvider] | None = None,
        flag_defaults: Mapping[str, bool] | None = None,
        flag_store: LocalFlags | None = None,
        gateway_port: int | None = None,
        pool_min_size: int = 0,
        pool_max_size: int = 10,
        _keyless: bool = False,
    ) -> None:
        config = ClientConfig.resolve(
            api_key,
            base_url,
            timeout,
            max_retries,
            retry_policy,
            environment=environment,
            offline=offline,
            keyless=_keyless,
        )
        self._transport = AsyncTransport(config, http_client)
        self.databases = AsyncDatabases(self._transport)
        self.modules = AsyncModules(self._transport)
        self.keys = AsyncKeys(self._transport)
        self.service_accounts = AsyncServiceAccounts(self._transport)
        self.users = AsyncUsers(self._transport)
        self.clusters = AsyncClusters(self._transport)
        self.imports = Imports(self._transport)
        self.exports = Exports(self._transport)
        self._environment_id: str | None = None
        queue = EventQueue(
            event_options or EventOptions(), config.retry_policy, offline=config.offline
        )
        self._events = AsyncEventWorker(queue, self._send_batch)
        self._live = AsyncLiveFlags(config) if local_evaluation and not config.offline else None
        if flag_store is not None and self._live is not None:
            raise ValueError("give local_evaluation=True or flag_store=..., not both")
        self._local: LocalFlags | None = flag_store if flag_store is not None else self._live
        self._cache_providers: tuple[CacheProvider, ...] = (
            (LocalCache(),) if cache_providers is None else tuple(cache_providers)
        )
        self._flag_defaults = dict(flag_defaults or {})
        self.flags = AsyncFlags(self._transport, self._environment)
        self._connections = AsyncConnections(config, gateway_port, pool_min_size, pool_max_size)
        self.companies = AsyncCompanies(self._transport, self._environment)

    @classmethod
    async def anonymous(
        cls,
        db: str,
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        base_url: str | None = None,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_policy: RetryPolicy | None = None,
    ) -> Self:
        """A client that is an anonymous identity of ``db``'s module (no account needed)::

            mp = await AsyncMillpond.anonymous("alice/chat", token_file="~/.chat-token")
            await mp.call("alice/chat", "send_message", "hi")   # ctx.sender == mp.identity
            rt = await mp.realtime("alice/chat")

        The identity's token is ``token``, else the one kept in ``token_file``, else a new
        one the server makes (``modules.create_identity``), written to ``token_file``
        (mode 0600) so the next run is the same identity. The token works on ``db`` only:
        reducer calls, the module's schema and the realtime connection. A revoked token
        raises ``AuthenticationError`` (``identity_revoked``): delete the file for a new
        identity."""
        path = Path(token_file).expanduser() if token_file is not None else None
        if token is None and path is not None:
            token = read_token_file(path)
        options: dict[str, Any] = {
            "base_url": base_url,
            "timeout": timeout,
            "max_retries": max_retries,
            "retry_policy": retry_policy,
        }
        if token is None:
            async with cls(_keyless=True, **options) as minter:
                token = (await minter.modules.create_identity(db)).token
            if path is not None:
                write_token_file(path, token)
        return cls(api_key=token, **options)

    @property
    def identity(self) -> str | None:
        """The anonymous identity this client is (``anonymous()``); None for an API key."""
        return self._transport.config.identity

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
        await self._connections.aclose()
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

    async def call(
        self,
        db: str,
        reducer: str,
        *args: Any,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
        **kwargs: Any,
    ) -> CallResult:
        """Call a reducer of ``db``'s module (``modules.call``): one transaction;
        ``ReducerError`` if it did not commit."""
        return await self.modules.call(
            db, reducer, *args, timeout=timeout, max_retries=max_retries, **kwargs
        )

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

    # -- direct connections (psycopg) --------------------------------------------------------

    def connection_string(self, db: str, *, with_password: bool = True) -> str:
        """A libpq connection string for ``"owner/name"`` through the Postgres gateway, your
        API key as its password (``with_password=False`` leaves it out): for psql, any
        driver or ORM. It holds a secret: do not log it."""
        return self._connections.conninfo(db, with_password=with_password)

    async def get_connection(self, db: str, **kwargs: Any) -> AsyncConnection[Any]:
        """A new psycopg connection to ``"owner/name"`` (yours to close; ``kwargs`` go to
        ``psycopg.AsyncConnection.connect``). Needs ``millpond[postgres]``."""
        return await self._connections.connect(db, **kwargs)

    def pooled_connection(self, db: str) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        """``async with amp.pooled_connection(db) as conn``: a connection from this client's
        pool for ``db`` (``pool_min_size``..``pool_max_size``), committed on success and
        rolled back on an exception, then returned to the pool."""
        return self._connections.connection(db)

    def pooled_cursor(self, db: str) -> AbstractAsyncContextManager[AsyncCursor[Any]]:
        """``async with amp.pooled_cursor(db) as cur``: a cursor on a pooled connection;
        the transaction commits on success and rolls back on an exception."""
        return self._connections.cursor(db)

    # -- feature flags ---------------------------------------------------------------------

    async def check_flag(
        self,
        key: str,
        *,
        company: Mapping[str, str] | None = None,
        user: Mapping[str, str] | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> bool:
        """Whether flag ``key`` is on for the company and/or user (each given by any of
        its keys). Never raises for network or server trouble: it then answers
        ``flag_defaults[key]`` (False without one) and logs a warning."""
        check = await self.check_flag_details(
            key, company=company, user=user, timeout=timeout, max_retries=max_retries
        )
        return check.value

    async def check_flag_details(
        self,
        key: str,
        *,
        company: Mapping[str, str] | None = None,
        user: Mapping[str, str] | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> FlagCheck:
        """The check with its reason, rule and entitlement usage. Answered, in order: by
        the cache; by local evaluation (``local_evaluation`` or ``flag_store``) when it
        can; by defaults when offline; by the server. Failures answer the default with
        reason ``ERROR`` and the error's text."""
        company, user = flag_entities(company, user)
        return (await self._checks([_flag_key(key)], company, user, timeout, max_retries))[0]

    async def check_flags(
        self,
        keys: Sequence[str] | None = None,
        *,
        company: Mapping[str, str] | None = None,
        user: Mapping[str, str] | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> builtins.list[FlagCheck]:
        """Several flags (every live flag when ``keys`` is None) for one company/user, in
        one request (or none, answered locally)."""
        company, user = flag_entities(company, user)
        wanted = None if keys is None else [_flag_key(k) for k in keys]
        return await self._checks(wanted, company, user, timeout, max_retries)

    def flag_context(
        self,
        *,
        company: Mapping[str, str] | None = None,
        user: Mapping[str, str] | None = None,
        **entries: Any,
    ) -> AsyncFlagContext:
        """A request context: one snapshot of every flag for this company/user, taken at
        its first question (``user_id="42"`` is ``user={"id": "42"}``; see
        ``AsyncFlagContext``)."""
        c, u = entities(company, user, entries)

        async def check_all(
            company: dict[str, str] | None, user: dict[str, str] | None
        ) -> builtins.list[FlagCheck]:
            return await self.check_flags(company=company, user=user)

        async def check_one(
            flag: str, company: dict[str, str] | None, user: dict[str, str] | None
        ) -> FlagCheck:
            return await self.check_flag_details(flag, company=company, user=user)

        return AsyncFlagContext(check_all, check_one, c, u)

    async def _checks(
        self,
        keys: builtins.list[str] | None,
        company: dict[str, str] | None,
        user: dict[str, str] | None,
        timeout: TimeoutTypes,
        max_retries: int | None,
    ) -> builtins.list[FlagCheck]:
        env = self._transport.config.environment or self._environment_id
        cached = self._cached(env, keys, company, user)
        if cached is not None:
            return cached
        if self._local is not None:
            local = self._local.evaluate(keys, company, user)
            if local is not None:
                return local
        if self._transport.config.offline:
            names = keys if keys is not None else sorted(self._flag_defaults)
            return [default_check(k, self._flag_defaults) for k in names]
        try:
            env = await self._environment()
            found = await self._ask_server(env, keys, company, user, timeout, max_retries)
        except MillpondError as exc:
            _log.warning("flag check failed, answering defaults: %s", exc)
            names = keys if keys is not None else sorted(self._flag_defaults)
            return [default_check(k, self._flag_defaults, exc) for k in names]
        for check in found:
            for provider in self._cache_providers:
                provider.set(cache_key(env, check.flag, company, user), check)
        return found

    def _cached(
        self,
        env: str | None,
        keys: builtins.list[str] | None,
        company: dict[str, str] | None,
        user: dict[str, str] | None,
    ) -> builtins.list[FlagCheck] | None:
        if keys is None or env is None or not self._cache_providers:
            return None
        found = []
        for key in keys:
            hit = None
            for provider in self._cache_providers:
                hit = provider.get(cache_key(env, key, company, user))
                if hit is not None:
                    break
            if hit is None:
                return None
            found.append(hit)
        return found

    async def _ask_server(
        self,
        env: str,
        keys: builtins.list[str] | None,
        company: dict[str, str] | None,
        user: dict[str, str] | None,
        timeout: TimeoutTypes,
        max_retries: int | None,
    ) -> builtins.list[FlagCheck]:
        base = f"/v1/flags/environments/{segment(env)}"
        body = {"company": company, "user": user}
        if keys is not None and len(keys) == 1:
            path = f"{base}/flags/{segment(keys[0])}/check"
            one = Call("POST", path, parse_model(FlagCheck), json=body, idempotent=True)
            return [await self._transport.request(one, timeout=timeout, max_retries=max_retries)]
        bulk = Call("POST", f"{base}/check", parse_model(FlagChecks), json=body, idempotent=True)
        checks = await self._transport.request(bulk, timeout=timeout, max_retries=max_retries)
        if keys is None:
            return checks.flags
        by_key = {check.flag: check for check in checks.flags}
        return [
            by_key.get(k) or FlagCheck(flag=k, value=False, reason="FLAG_NOT_FOUND") for k in keys
        ]

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
        cluster: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Database:
        """``databases.create``."""
        return await self.databases.create(
            name,
            is_private,
            storage_limit_bytes,
            cluster=cluster,
            timeout=timeout,
            max_retries=max_retries,
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
