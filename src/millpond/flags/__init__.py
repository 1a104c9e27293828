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

flypper itself on a millpond server: :class:`FlypperStorage` (flypper's storage interface,
for flypper's ``Client``, ``Context`` and ``FlypperWebUI``; needs ``flypper``), and
:func:`import_flypper` (flypper-sqlalchemy's tables into millpond; needs SQLAlchemy).
Each name is imported when first used, so one dependency missing only stops what needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ._flypper import import_flypper
    from ._flypper_storage import FlypperStorage
    from ._store import FlagRow, SqlAlchemyFlagStore, StoreContext
    from ._tables import build_flags_table, build_metadata_table

_SQLALCHEMY = ("sqlalchemy", 'SQLAlchemy 2: pip install "millpond[sqlalchemy]"')
_FLYPPER = ("flypper", "flypper: pip install flypper==0.1.7")
_WHERE: dict[str, tuple[str, tuple[str, str] | None]] = {
    "FlagRow": ("._store", _SQLALCHEMY),
    "SqlAlchemyFlagStore": ("._store", _SQLALCHEMY),
    "StoreContext": ("._store", _SQLALCHEMY),
    "build_flags_table": ("._tables", _SQLALCHEMY),
    "build_metadata_table": ("._tables", _SQLALCHEMY),
    "FlypperStorage": ("._flypper_storage", _FLYPPER),
    "import_flypper": ("._flypper", None),
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, needs = _WHERE[name]
    if needs is not None:
        try:
            importlib.import_module(needs[0])
        except ImportError as exc:
            raise ConfigurationError(f"millpond.flags.{name} needs {needs[1]}") from exc
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "FlagRow",
    "FlypperStorage",
    "SqlAlchemyFlagStore",
    "StoreContext",
    "build_flags_table",
    "build_metadata_table",
    "import_flypper",
]
