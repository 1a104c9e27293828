"""Server settings, declared once: read from ``MILLPOND_*`` environment variables,
overridden by ``millpond up`` options, and listed in docs/configuration.md (a test
checks that every setting is documented there)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every server setting. Environment variable: ``MILLPOND_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MILLPOND_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    port: int = Field(8000, description="Port the HTTP API listens on.")
    tls_cert: Path | None = Field(
        None,
        description=(
            "PEM certificate (chain) the HTTP API serves HTTPS with (with `tls_key`). "
            "Unset: plain HTTP."
        ),
    )
    tls_key: Path | None = Field(None, description="PEM private key of `tls_cert`.")
    data_dir: Path = Field(
        Path(".millpond"),
        description="Directory for the embedded Postgres cluster, the admin key and secrets.",
    )
    allow_root_setup: bool = Field(
        True,
        description=(
            "Run as root with the embedded Postgres, the server creates the system user "
            "`millpond-pg` and gives it traverse (one ACL entry each) on the directories on "
            "the way to the data directory and the Postgres binaries, saying so first. "
            "`false`: `millpond up` lists what it would change and refuses instead (see "
            "docs/deployment.md)."
        ),
    )
    database_url: str | None = Field(
        None,
        description=(
            "URL of an external PostgreSQL >= 14 (a superuser or a role with CREATEDB and "
            "CREATEROLE). Unset: run the embedded Postgres in the data directory."
        ),
    )
    control_database: str = Field(
        "millpond", description="Name of the control database (accounts, keys, metadata)."
    )
    secret_key: str | None = Field(
        None,
        description=(
            "Secret from which per-database role passwords are derived. Unset: generated "
            "once and kept in the control database, which every replica shares."
        ),
    )
    statement_timeout_ms: int = Field(
        30_000, gt=0, description="Statement timeout of HTTP queries, in milliseconds."
    )
    query_max_rows: int = Field(
        10_000, gt=0, description="Maximum rows an HTTP query returns; more sets `truncated`."
    )
    query_max_bytes: int = Field(
        16 * 1024 * 1024,
        gt=0,
        description=(
            "Approximate maximum bytes of row data an HTTP query returns (every value counts"
            " its size as Postgres sends it: text, json/jsonb, arrays, bytea…); rows past it"
            " are dropped and set `truncated`."
        ),
    )
    max_request_bytes: int = Field(
        16 * 1024 * 1024,
        gt=0,
        description=(
            "Largest HTTP request body, in bytes (413 request_too_large); import uploads"
            " have their own limit, `transfer_max_file_bytes`."
        ),
    )
    max_json_depth: int = Field(
        128,
        gt=0,
        description=(
            "Deepest nesting of JSON arrays/objects accepted in a request body or a WebSocket"
            " message, and returned in a query result's json/jsonb values (400 json_too_deep)."
        ),
    )
    pool_max_size: int = Field(
        10, gt=0, description="Maximum pooled Postgres connections per database role."
    )
    pool_timeout_s: float = Field(
        10.0,
        gt=0,
        description=(
            "How long a query waits for a free database connection before 503 postgres_unavailable."
        ),
    )

    # -- per-account budgets (server/budget.py) -------------------------------------------
    account_max_connections: int = Field(
        20,
        gt=0,
        description=(
            "Postgres connections one account (a user with its service accounts) may hold at "
            "once on each replica: its gateway sessions plus its HTTP queries and streamed "
            "exports in progress, over all databases and keys (at most half of the tenant "
            "capacity). More: 429 or "
            "FATAL 53300 `connection_budget_exceeded`."
        ),
    )
    reserved_connections: int = Field(
        40,
        ge=0,
        description=(
            "Postgres connections (of `max_connections`) tenants never get: kept for the "
            "server's own pools, jobs, realtime streams and privileged sessions. A replica's "
            "tenant connections (pooled and gateway) stay within the rest, idle pooled ones "
            "closed to make room; with several replicas on one Postgres, each counts its own: "
            "raise this so that all replicas' shares fit."
        ),
    )
    pool_max_idle_s: float = Field(
        60.0,
        gt=0,
        description=(
            "A query pool that left connections unused this many seconds closes one of them "
            "(idle pooled connections are also closed at once when a tenant needs the room)."
        ),
    )
    account_max_databases: int = Field(
        100, ge=0, description="Databases one account may own (403 `limit_exceeded`)."
    )
    account_max_api_keys: int = Field(
        200,
        ge=0,
        description=(
            "Active API keys one account may have, its service accounts' and flags "
            "environments' keys included (403 `limit_exceeded`)."
        ),
    )
    account_max_realtime_connections: int = Field(
        50,
        ge=0,
        description=(
            "Open realtime WebSockets one account may have on each replica (more are closed "
            "with 4029 `limit_exceeded`)."
        ),
    )
    account_max_running_jobs: int = Field(
        10,
        ge=0,
        description=(
            "Import and export jobs one account may have queued or running (403 `limit_exceeded`)."
        ),
    )
    account_limits_exempt_admins: bool = Field(
        True, description="Server admins are exempt from the per-account budgets and limits."
    )
    postgres_check_interval_s: float = Field(
        0.5,
        gt=0,
        description=(
            "How often the server checks that Postgres is alive (and the embedded postmaster"
            " runs); while it is not, requests answer 503 postgres_unavailable at once."
        ),
    )
    postgres_restart_attempts: int = Field(
        5,
        ge=1,
        description=(
            "Tries to restart a dead embedded Postgres (with backoff) before the server"
            " exits with status 3 for a process supervisor to restart it."
        ),
    )
    realtime_send_buffer_bytes: int = Field(
        8 * 1024 * 1024,
        gt=0,
        description=(
            "Unsent realtime messages a connection may accumulate before it is closed as a "
            "slow consumer (close code 4008)."
        ),
    )
    realtime_heartbeat_ms: int = Field(
        15_000, gt=0, description="Interval of realtime heartbeats (ping), in milliseconds."
    )
    realtime_max_streams: int = Field(
        16,
        gt=0,
        description=(
            "Databases one replica streams the changes of at once (each holds a replication "
            "connection and slot, and a server connection: count them in "
            "`reserved_connections`; at most Postgres' `max_wal_senders` - 1). Idle streams stop "
            "early to make room; beyond, realtime connections close with 4029 `limit_exceeded`. "
            "Measured cost of each active stream: about 4 Postgres connections in all and a "
            "WAL sender of ~2 MB, which decodes all of the cluster's WAL (docs/benchmarks.md, "
            "realtime across many databases)."
        ),
    )
    placement: Literal["fewest-databases", "home"] = Field(
        "fewest-databases",
        description=(
            "Which Postgres cluster a new database goes to (docs/clusters.md):"
            " fewest-databases (the active cluster with the fewest databases) or home (the"
            " cluster the server starts on, unless a server admin names another)."
        ),
    )
    realtime_idle_seconds: float = Field(
        30.0,
        ge=0,
        description=(
            "How long a database's change stream (and its slot) outlives its last subscriber."
        ),
    )
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    log_format: Literal["text", "json"] = Field(
        "text",
        description=(
            "Format of the server's log lines on stderr (`millpond up`): `text`"
            " (`LEVEL logger: message`) or `json`, one object per line with `time` (ISO 8601"
            " UTC), `level`, `logger`, `message`, `request_id` (while serving a request) and"
            " `exception`. Either way secrets (API keys, tokens, passwords) are redacted."
        ),
    )
    access_log: bool = Field(
        True,
        description=(
            "Log each HTTP request (method, path without its query string, status,"
            " milliseconds, request id) at info level on the `millpond.access` logger."
        ),
    )
    metrics_token: str | None = Field(
        None,
        min_length=16,
        description=(
            "A bearer token that may read `/metrics` (Prometheus), for a scraper that should"
            " hold no API key; a server admin's key always may. At least 16 characters."
        ),
    )

    # -- Postgres wire-protocol gateway (direct connections with an API key) -----------
    gateway_enabled: bool = Field(
        True,
        description=(
            "Listen for Postgres wire-protocol connections (psql, drivers): any user name, "
            "an API key as the password, `owner/name` as the database."
        ),
    )
    gateway_host: str = Field(
        "127.0.0.1", description="Address the gateway listens on (`0.0.0.0`: every interface)."
    )
    gateway_port: int = Field(5433, ge=0, le=65535, description="Port the gateway listens on.")
    gateway_tls_cert: Path | None = Field(
        None,
        description=(
            "PEM certificate (chain) the gateway serves TLS with. Unset: a self-signed "
            "certificate generated on first start into `<data_dir>/gateway-cert.pem`."
        ),
    )
    gateway_tls_key: Path | None = Field(
        None,
        description=(
            "PEM private key of `gateway_tls_cert`. Unset: `<data_dir>/gateway-key.pem` "
            "(generated, mode 0600)."
        ),
    )
    gateway_allow_plaintext_loopback: bool = Field(
        True,
        description=(
            "Accept unencrypted gateway connections from loopback addresses (the API key "
            "then crosses loopback in cleartext). Other hosts must use TLS."
        ),
    )
    gateway_allow_plaintext_remote: bool = Field(
        False,
        description=(
            "Also accept unencrypted gateway connections (and so cleartext API keys) from "
            "other hosts: only on a trusted network, e.g. behind a TLS-terminating proxy."
        ),
    )
    gateway_max_connections_per_database: int = Field(
        100, gt=0, description="Maximum gateway connections to one database (per replica)."
    )
    gateway_max_connections_per_key: int = Field(
        50, gt=0, description="Maximum gateway connections opened with one API key (per replica)."
    )
    gateway_idle_timeout_s: float = Field(
        900.0,
        ge=0,
        description=(
            "Close gateway connections idle (waiting for the client) this many seconds; 0: never."
        ),
    )

    # -- import and export jobs (server/transfer) ------------------------------------------
    transfer_max_file_bytes: int = Field(
        2 * 1024**3,
        gt=0,
        description=(
            "Largest file an import takes (upload, download from a URL, or after gzip "
            "decompression), and largest backup a database restore takes, in bytes."
        ),
    )
    transfer_max_value_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="Largest single value (or CSV line, or JSON element) an import takes.",
    )
    transfer_workers: int = Field(
        2, gt=0, description="Import and export jobs one replica runs at the same time."
    )
    transfer_poll_s: float = Field(
        2.0,
        gt=0,
        description=(
            "How often a replica looks for queued and crashed jobs (a new job also wakes "
            "it at once, through LISTEN/NOTIFY)."
        ),
    )
    transfer_heartbeat_s: float = Field(
        1.0, gt=0, description="How often a running job's progress is written."
    )
    transfer_max_attempts: int = Field(
        2,
        gt=0,
        description=(
            "Runs of a job interrupted by a crash before it is FAILED (error_type interrupted)."
        ),
    )
    transfer_job_timeout_s: float = Field(
        3600.0, gt=0, description="Statement timeout of a job's SQL (its COPY), in seconds."
    )
    transfer_export_ttl_s: float = Field(
        86400.0,
        gt=0,
        description="How long an export's file (and its signed download_url) lives, in seconds.",
    )
    transfer_job_retention_days: float = Field(
        30.0,
        ge=0,
        description=(
            "How long finished import and export jobs stay listed (and their status URLs "
            "answer), in days; an export's file lives `transfer_export_ttl_s` at most."
        ),
    )
    transfer_allow_private_urls: bool = Field(
        False,
        description=(
            "Let imports fetch file_url from loopback, link-local and private addresses "
            "(refused by default: they reach the server's own network)."
        ),
    )
    transfer_url_timeout_s: float = Field(
        60.0, gt=0, description="Timeout of each network step of downloading a file_url."
    )
    transfer_shared_storage: bool = Field(
        False,
        description=(
            "<data_dir>/transfer is shared by every replica (a shared volume): any replica "
            "may run any job and serve any export. Otherwise a job with an uploaded file "
            "runs on the replica that received it, and an export downloads from the one "
            "that made it."
        ),
    )

    # -- feature flags (server/flags) -----------------------------------------------------
    flags_record_checks: bool = Field(
        False,
        description=(
            "Record every flag check in the environment's check log (`GET "
            "/v1/flags/environments/{env}/checks`); otherwise only checks sent with "
            "`?record=true` are."
        ),
    )
    flags_cache_ttl_s: float = Field(
        30.0,
        gt=0,
        description=(
            "Longest a replica keeps compiled flag rulesets without re-reading them (every "
            "change drops them at once through LISTEN/NOTIFY; this bounds a missed one)."
        ),
    )
    flags_events_retention_days: float = Field(
        90.0,
        ge=0,
        description=(
            "Days identify/track events are kept (their idempotency keys are remembered "
            "that long; counters are kept apart). 0: forever."
        ),
    )
    flags_checks_retention_days: float = Field(
        30.0, ge=0, description="Days recorded flag checks are kept. 0: forever."
    )
    flags_metrics_retention_days: float = Field(
        62.0,
        ge=0,
        description=(
            "Days usage counters of past days, weeks and months are kept after their period "
            "ended (all-time counters are kept forever). 0: forever."
        ),
    )
    flags_retention_interval_s: float = Field(
        3600.0, gt=0, description="Seconds between purges of old flag events, checks and counters."
    )

    # -- modules (server/modules) -----------------------------------------------------------
    module_workers: int = Field(
        2, ge=1, description="Worker processes running a database's module reducers."
    )
    module_call_timeout_s: float = Field(
        10.0,
        gt=0,
        description=(
            "Wall-clock seconds a reducer call may take (its retries included); past it the "
            "worker is killed, the call's transaction rolled back and the outcome is timeout."
        ),
    )
    module_call_cpu_s: int = Field(
        5, ge=1, description="CPU seconds a reducer call may use (RLIMIT_CPU of its worker)."
    )
    module_memory_mb: int = Field(
        512, ge=128, description="Address space of a module worker process (RLIMIT_AS), in MB."
    )
    module_serialization_retries: int = Field(
        20,
        ge=0,
        description=(
            "Times a reducer call is run again, with the same context, after a serialization "
            "failure or a deadlock."
        ),
    )

    module_max_files: int = Field(200, ge=1, description="Most files a published module may have.")
    module_max_source_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest published module source, in bytes."
    )
    module_idle_s: float = Field(
        300.0,
        gt=0,
        description="Seconds after its last call when a database's module workers stop "
        "(the next call starts them again).",
    )
    module_log_retention_s: float = Field(
        7 * 86400.0, gt=0, description="Seconds a module's log lines are kept."
    )
    module_log_max_lines: int = Field(
        10_000, ge=100, description="Most log lines kept per database (the oldest go first)."
    )
    module_anonymous_identities_per_minute: int = Field(
        60,
        ge=1,
        description=(
            "Anonymous identities one replica creates per database per minute (more: 429 "
            "rate_limited), so strangers cannot fill the control database."
        ),
    )
    module_issuer_allow_insecure: bool = Field(
        False,
        description=(
            "Fetch token issuers' keys over plain http and from loopback, private and "
            "link-local addresses too (on-premises login providers, tests). Off: https to "
            "public addresses only, so a tenant cannot make the server fetch from its network."
        ),
    )
    module_replica_heartbeat_s: float = Field(
        5.0,
        gt=0,
        description=(
            "How often a server says it is alive (module_replicas) and sweeps the realtime "
            "connections of servers that are gone, running their client_disconnected."
        ),
    )
    module_replica_timeout_s: float = Field(
        30.0,
        gt=0,
        description=(
            "A server not heard from for this long is gone: another runs client_disconnected "
            "for the connections it held."
        ),
    )
    module_schedule_poll_s: float = Field(
        1.0,
        gt=0,
        description=(
            "How often a server looks for databases with schedule tables that no server runs "
            "(one server runs each database's schedules; another takes over this long after "
            "it stops or dies). Due runs themselves start on time, not on this poll."
        ),
    )
    module_schedule_attempts: int = Field(
        3,
        ge=1,
        description=(
            "Runs of a one-shot scheduled reducer that fails before its schedule row is kept "
            "as failed (not run again; `millpond schedules` shows it); an interval schedule's "
            "failed run is recorded and the next one runs on time."
        ),
    )
    module_anonymous_max_connections: int = Field(
        1000,
        ge=1,
        description=(
            "Open realtime connections of end users (anonymous identities and login providers' "
            "users) per database on one replica (more: close 4029 limit_exceeded)."
        ),
    )

    # -- web console (server/console) -------------------------------------------------------
    console_session_ttl_s: float = Field(
        43200.0,
        gt=0,
        description=(
            "Seconds a web console session lasts after login (absolute, not sliding; it ends "
            "sooner on logout, when its API key is revoked or expires, or its user is deleted)."
        ),
    )

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    def http_tls(self) -> tuple[str, str] | None:
        """(certificate, key) files of HTTPS (``tls_cert``, ``tls_key``), or None for plain
        HTTP; one without the other is an error."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both MILLPOND_TLS_CERT and MILLPOND_TLS_KEY, or neither")
        if self.tls_cert is None or self.tls_key is None:
            return None
        return str(self.tls_cert), str(self.tls_key)
