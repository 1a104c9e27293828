"""``millpond compat …``: what the original SDKs of the services millpond replaces need
to work against it unchanged."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from ._context import State

app = typer.Typer(
    help="Set-ups for the original SDKs of the services millpond replaces.",
    no_args_is_help=True,
)


@app.command("bitio")
def bitio(
    ctx: typer.Context,
    address: Annotated[
        str,
        typer.Option(help="IP address the clients reach millpond at; the server listens on it."),
    ] = "127.0.0.1",
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="The server's data directory (the certificate goes there).",
            envvar="MILLPOND_DATA_DIR",
        ),
    ] = Path(".millpond"),
) -> None:
    """Print how to point bit.io's unmodified `bitdotio` package (SDK and `bit` CLI) at
    this server, and make the TLS certificate that takes (once, in the data directory).

    The package hard-codes https://api.bit.io and db.bit.io:5432: both names must resolve
    to millpond, the HTTP API must serve HTTPS on 443 with a certificate the client
    trusts, and the gateway must listen on 5432. With --key (or MILLPOND_API_KEY), the
    key is printed in bit.io's v2_ spelling, which the package requires."""
    try:
        from ..server.accounts.service import bitio_spelling
        from ..server.compat.bitio.setup import check_address, prepare
    except ImportError as exc:  # pragma: no cover - depends on the install
        typer.echo(f"this needs the server's packages ({exc.name}): pip install 'millpond[server]'")
        raise typer.Exit(2) from exc
    try:
        check_address(address)
    except ValueError as exc:
        typer.echo(f"--address: {address!r} is not an IP address", err=True)
        raise typer.Exit(2) from exc
    setup = prepare(data_dir, address)
    st = ctx.obj
    key = st.key if isinstance(st, State) and st.key else None
    bitio_key = bitio_spelling(key) if key else "v2_<your millpond key without its mp_>"
    lines = [
        "# bitdotio (bit.io's SDK and `bit` CLI) against millpond",
        "",
        "# 1. On each client machine, resolve bit.io's two hosts to millpond (/etc/hosts):",
        setup.hosts_line,
        "",
        "# 2. Run the server with HTTPS on 443 and the gateway on 5432 (ports below 1024",
        "#    need root or CAP_NET_BIND_SERVICE):",
        *[f"export {name}={shlex.quote(value)}" for name, value in setup.server_env().items()],
        "millpond up",
        "",
        "# 3. On each client machine, trust the certificate (copy the bundle there; it holds",
        f"#    the usual roots and {setup.cert.name}):",
        *[f"export {name}={shlex.quote(value)}" for name, value in setup.client_env().items()],
        "",
        "# 4. Use a millpond key in bit.io's spelling (the same key: v2_ instead of mp_),",
        "#    as the SDK's access token, the CLI's BITIO_KEY and the database password:",
        f"export BITIO_KEY={bitio_key}",
    ]
    typer.echo("\n".join(lines))
