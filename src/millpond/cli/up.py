"""``millpond up``: run the server (embedded Postgres unless MILLPOND_DATABASE_URL is set)."""

from __future__ import annotations

import errno
import logging
import logging.config
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from ..server.config import Settings


def up(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on [default: 127.0.0.1]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8000]")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Data directory (embedded Postgres, admin key) [default: ./.millpond]",
            envvar="MILLPOND_DATA_DIR",
        ),
    ] = None,
) -> None:
    """Start the millpond server; Ctrl-C stops it and its Postgres cleanly."""
    try:
        import uvicorn

        from ..models import UserCreated
        from ..server.app import create_app
        from ..server.config import Settings
        from ..server.observability.logs import logging_config
    except ImportError as exc:  # pragma: no cover - depends on the install
        typer.echo(
            f"the server needs extra packages ({exc.name}): pip install 'millpond[server]'",
            err=True,
        )
        raise typer.Exit(2) from exc

    overrides: dict[str, Any] = {
        k: v for k, v in {"host": host, "port": port, "data_dir": data_dir}.items() if v is not None
    }
    settings = Settings(**overrides)
    try:
        tls = settings.http_tls()
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc

    busy = _busy_ports(settings)
    if busy:
        typer.echo(f"error: {busy}", err=True)
        raise typer.Exit(2)
    _check_root_setup(settings)

    def announce(created: UserCreated, path: Path) -> None:
        typer.echo(
            f"\nCreated admin user '{created.user.username}'. Its API key (shown only once):\n\n"
            f"    {created.api_key.secret}\n\n"
            f"It is also stored in {path} (mode 0600), where the millpond CLI on this machine "
            "finds it.\nTo log in to the web console (/console) with a password, set one:"
            " millpond user set-password\n"
        )

    # every logger (millpond's, uvicorn's, the access log, warnings) to one handler
    logging.config.dictConfig(logging_config(settings.log_level, settings.log_format))
    logging.captureWarnings(True)
    scheme = "https" if tls else "http"
    typer.echo(
        f"millpond on {scheme}://{settings.host}:{settings.port} (data in {settings.data_dir})"
    )
    if settings.gateway_enabled:
        typer.echo(
            f"Postgres gateway on {settings.gateway_host}:{settings.gateway_port}"
            " (password: an API key; database: owner/name; see docs/gateway.md)"
        )
    uvicorn.run(
        create_app(settings, announce=announce, freeze_heap=True),
        host=settings.host,
        port=settings.port,
        log_config=logging_config(settings.log_level, settings.log_format),
        log_level=settings.log_level,
        access_log=False,  # the millpond.access logger has the line
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )


def _in_use(host: str, port: int) -> bool:
    """Whether ``host:port`` cannot be listened on now because something else does."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _busy_ports(settings: Settings) -> str | None:
    """What is in the way, before anything starts (Postgres, the admin key…): the HTTP
    port, or the gateway's unless the gateway is off; None when both are free."""
    if settings.port and _in_use(settings.host, settings.port):
        return (
            f"port {settings.port} on {settings.host} is in use (another millpond up?):"
            f" stop it, or choose another port: millpond up --port {settings.port + 1}"
        )
    gateway = settings.gateway_port
    if settings.gateway_enabled and gateway and _in_use(settings.gateway_host, gateway):
        return (
            f"the gateway's port {gateway} on {settings.gateway_host} is in use: set"
            f" MILLPOND_GATEWAY_PORT to another one (e.g. {gateway + 1}), or"
            " MILLPOND_GATEWAY_ENABLED=false to run without direct connections"
        )
    return None


def _check_root_setup(settings: Settings) -> None:
    """As root with the embedded Postgres: when the machine needs changes millpond may not
    make (refused by MILLPOND_ALLOW_ROOT_SETUP=false, or that would widen others' rights),
    say which before anything starts, and stop (exit 2). Allowed (the default), the
    embedded Postgres logs them as it starts, before it changes anything."""
    if os.geteuid() != 0 or settings.database_url is not None:
        return
    from ..server.postgres.as_root import RootSetupRefused
    from ..server.postgres.embedded import EmbeddedPostgres

    try:
        EmbeddedPostgres(settings.data_dir, allow_root_setup=settings.allow_root_setup).root_plan()
    except RootSetupRefused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
