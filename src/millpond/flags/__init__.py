"""Feature flags without a millpond server, in the application's own database (flypper's
promise): :class:`SqlAlchemyFlagStore` keeps flags in two SQLAlchemy tables (SQLite,
Postgres, MySQL…), syncs changes by version every ``ttl`` seconds, and evaluates them with
the same engine and the same client as the server's flags::

    store = SqlAlchemyFlagStore(engine=create_engine("sqlite:///app.db"))
    store.create_tables()
    store.upsert_flag("new-editor", enabled_for_actors={"actor_key": "user_id",
                                                        "actor_ids": ["42"]})
    with store.context(user_id="42") as ctx:
        ctx.is_enabled("new-editor")
    mp = Millpond(offline=True, flag_store=store)   # or through the SDK client
    mp.check_flag("new-editor", user={"id": "42"})

Needs SQLAlchemy 2 (``pip install "millpond[sqlalchemy]"``).
"""

from __future__ import annotations

try:
    import sqlalchemy  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    from ..errors import ConfigurationError

    raise ConfigurationError(
        'millpond.flags needs SQLAlchemy 2: pip install "millpond[sqlalchemy]"'
    ) from exc

from ._store import FlagRow, SqlAlchemyFlagStore, StoreContext
from ._tables import build_flags_table, build_metadata_table

__all__ = [
    "FlagRow",
    "SqlAlchemyFlagStore",
    "StoreContext",
    "build_flags_table",
    "build_metadata_table",
]
