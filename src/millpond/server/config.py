"""Server settings, declared once: read from ``MILLPOND_*`` environment variables,
overridden by ``millpond up`` options, and listed in docs/configuration.md (a test
checks that every setting is documented there)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every server setting. Environment variable: ``MILLPOND_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MILLPOND_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    port: int = Field(8000, description="Port the HTTP API listens on.")
    data_dir: Path = Field(
        Path(".millpond"),
        description="Directory for the embedded Postgres cluster, the admin key and secrets.",
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
        description="Approximate maximum bytes of row data an HTTP query returns.",
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
    realtime_idle_seconds: float = Field(
        30.0,
        ge=0,
        description=(
            "How long a database's change stream (and its slot) outlives its last subscriber."
        ),
    )
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")

    @property
    def embedded(self) -> bool:
        return self.database_url is None
