"""The Postgres wire-protocol gateway: direct connections with an API key as the
password (see ``server.py``)."""

from .server import Gateway

__all__ = ["Gateway"]
