"""``millpond up``: run the server (embedded Postgres unless MILLPOND_DATABASE_URL is set)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer


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

    def announce(created: UserCreated, path: Path) -> None:
        typer.echo(
            f"\nCreated admin user '{created.user.username}'. Its API key (shown only once):\n\n"
            f"    {created.api_key.secret}\n\n"
            f"It is also stored in {path} (mode 0600), where the millpond CLI on this machine "
            "finds it.\n"
        )

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
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
        create_app(settings, announce=announce),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
