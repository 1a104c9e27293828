"""``millpond track``: send one track event now and print what the server accepted."""

from __future__ import annotations

from typing import Annotated

import typer

from ..client import Millpond
from ..models.flags import TrackEvent
from ._context import state
from ._output import OutputFormat, show_one
from .flags import CompanyKeys, Environment, UserKeys, keys_option


def track(
    ctx: typer.Context,
    event: Annotated[str, typer.Argument(help="The track event's name.", show_default=False)],
    company: CompanyKeys = None,
    user: UserKeys = None,
    quantity: Annotated[
        int,
        typer.Option("--quantity", "-n", min=0, help="Units of usage (sum metrics add them)."),
    ] = 1,
    environment: Environment = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            metavar="KEY",
            help="Send the event with this key: sending it again is a duplicate, counted "
            "once. Default: a fresh key.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON whatever --format says.")
    ] = False,
) -> None:
    """Send one track event now (not buffered) and print what the server accepted.

    Metrics count track events and sum their quantities per company and user; the event's
    company and user are created if new. JSON output is {"accepted": 1, "duplicates": 0};
    duplicates is 1 when an event with the same --idempotency-key was sent before.

    \b
        millpond track api-call --company id=acme --user email=a@acme.net
        millpond track seats-used -e production --company id=acme --quantity 5
    """
    st = state(ctx)
    try:
        tracked = TrackEvent(
            event=event,
            company=keys_option(company, "'--company'"),
            user=keys_option(user, "'--user'"),
            quantity=quantity,
            idempotency_key=idempotency_key,
        )
    except ValueError as exc:  # pydantic's ValidationError is one
        raise typer.BadParameter(str(exc)) from None
    with Millpond(
        api_key=st._resolve_key(), base_url=st.url, timeout=st.timeout, environment=environment
    ) as mp:
        accepted = mp.send_events([tracked])
    show_one(OutputFormat.json if as_json else st.format, accepted)
