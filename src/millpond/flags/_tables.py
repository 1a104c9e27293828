"""The store's tables, in portable SQLAlchemy types (as flypper-sqlalchemy builds them:
functions taking the application's ``MetaData``, so ``create_all()`` and ORM mapping work).

- ``millpond_flags``: one row per flag: its key, its whole ruleset as JSON text (the
  :class:`~millpond.models.flags.FlagRuleset` wire model, the unit the server streams),
  the global version of its last change, whether it is deleted, when it changed.
- ``millpond_flags_metadata``: the global version (``name = 'version'``), bumped by every
  change in the change's transaction, so readers fetch only ``version > last seen``.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text

FLAGS_TABLE = "millpond_flags"
METADATA_TABLE = "millpond_flags_metadata"


def build_flags_table(metadata: MetaData, name: str = FLAGS_TABLE) -> Table:
    return Table(
        name,
        metadata,
        Column("key", String(128), primary_key=True),
        Column("ruleset", Text, nullable=False),
        Column("version", Integer, nullable=False),
        Column("deleted", Boolean, nullable=False, default=False),
        Column("updated_at", Float, nullable=False),
        Index(f"{name}_version", "version"),
    )


def build_metadata_table(metadata: MetaData, name: str = METADATA_TABLE) -> Table:
    return Table(
        name,
        metadata,
        Column("name", String(64), primary_key=True),
        Column("value", Integer, nullable=False),
    )
