"""The ``millpond`` command line: ``millpond up`` runs the server; the other commands are
clients of the HTTP API (JSON output by default, ``--format table`` for people)."""

from ._app import app, main

__all__ = ["app", "main"]
