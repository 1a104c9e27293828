"""Publishing a module: check the upload, describe it in a sandboxed worker, plan the
migration from the running version, apply it in the tenant database, record the version.

One publish at a time per database (an advisory lock on the control database). The
version row is written ``pending`` before the tenant transaction, which also sets the
database's comment to ``millpond module version N``; the row becomes ``ready`` after it.
A pending row left by a crash is settled by the comment (:meth:`Publisher.settle`), so
the recorded versions never disagree with the tables in the tenant database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import sql

from millpond.module._def import ModuleDef

from ...models.modules import ModulePublish, PlanStep, PublishResult
from ..clusters.registry import Clusters
from ..config import Settings
from ..databases import pg_tools
from ..databases.service import Access, access_of
from ..errors import ServiceError
from ..postgres import provision
from ..store import Store
from . import adopt, migrate, pool, row_visibility, schema

_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_LOCK_CLASS = 0x6D6F64  # "mod"
MARKER = "millpond module version {}"
"""The tenant database's comment once a version's migration committed."""


@dataclass(frozen=True)
class Upload:
    files: dict[str, str]
    entry: str


@dataclass(frozen=True)
class Version:
    version: int
    files: dict[str, str]
    entry: str
    definition: ModuleDef


Swap = Callable[[Access, Version], Awaitable[float]]
"""Start the new version's workers on this replica; the seconds it took."""


def check_upload(body: ModulePublish, settings: Settings) -> Upload:
    """The upload's files and entry module, or 400 ``invalid_module_files``."""
    files = body.files
    if not files:
        raise _bad_files("a module needs at least one .py file")
    if len(files) > settings.module_max_files:
        raise _bad_files(f"at most {settings.module_max_files} files")
    size = sum(len(path) + len(text.encode()) for path, text in files.items())
    if size > settings.module_max_source_bytes:
        raise _bad_files(f"the source is {size} bytes; at most {settings.module_max_source_bytes}")
    for path, text in files.items():
        parts = path.split("/")
        stem = parts[-1].removesuffix(".py")
        if not parts[-1].endswith(".py") or not all(map(_PART.fullmatch, [*parts[:-1], stem])):
            raise _bad_files(
                f"{path!r}: files are relative paths of Python identifiers ending in .py",
                path,
            )
        if "\x00" in text:
            raise _bad_files(f"{path!r} contains a NUL character", path)
    return Upload(dict(files), _entry(files, body.entry))


def _entry(files: dict[str, str], entry: str | None) -> str:
    if entry is not None:
        base = entry.replace(".", "/")
        if not all(map(_PART.fullmatch, entry.split("."))) or not (
            f"{base}.py" in files or f"{base}/__init__.py" in files
        ):
            raise _bad_files(f"entry {entry!r} is not a module of the upload", "entry")
        return entry
    tops = {path.split("/")[0].removesuffix(".py") for path in files}
    if len(tops) != 1:
        raise _bad_files(
            f"the upload has several top-level modules {sorted(tops)}: name one as entry", "entry"
        )
    (top,) = tops
    if f"{top}.py" not in files and f"{top}/__init__.py" not in files:
        raise _bad_files(f"package {top!r} has no __init__.py", "entry")
    return top


def _bad_files(message: str, field: str = "files") -> ServiceError:
    return ServiceError(400, "invalid_module_files", message, {"field": field})


def grant_statements(module: ModuleDef, pg_name: str) -> list[sql.Composable]:
    """A module's tables are written by its reducers (and the owner, who owns them):
    the database's writers keep only what their visibility gives (``SELECT`` on public
    tables, nothing on private ones); the reducer role gets the rest."""
    roles = provision.DatabaseRoles(pg_name)
    ro, rw, reducer = (sql.Identifier(roles.role(r)) for r in ("ro", "rw", "reducer"))
    out: list[sql.Composable] = []
    for table in module.tables:
        name = schema.qualified(table.name)
        out.append(sql.SQL("REVOKE ALL ON TABLE {} FROM {}, {}").format(name, ro, rw))
        if table.public:
            out.append(sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(name, ro))
        out.append(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLE {} TO {}").format(
                name, reducer
            )
        )
    if module.tracks_connections:
        out += schema.connections_statements(ro, rw, reducer)
    if module.schedule_tables:
        out += schema.schedules_statements(module, ro, rw, reducer)
    return out


async def latest_version(store: Store, database_id: int) -> Version | None:
    """The database's newest ready module version, or None."""
    row = await store.fetchone(
        "SELECT version, files, entry, definition FROM module_versions"
        " WHERE database_id = %s AND state = 'ready' ORDER BY version DESC LIMIT 1",
        (database_id,),
    )
    if row is None:
        return None
    return Version(
        row["version"], row["files"], row["entry"], ModuleDef.from_json(row["definition"])
    )


async def ready_modules(store: Store) -> list[tuple[Access, dict[str, Any]]]:
    """Every ready database's newest ready module: its access (as the owner) and its
    definition's JSON — what the server runs without a caller (lifecycle sweeps,
    schedules)."""
    rows = await store.fetchall(
        "SELECT DISTINCT ON (v.database_id) v.database_id AS id, v.definition, d.pg_name,"
        " u.username AS owner, d.name, d.is_private, d.storage_limit_bytes, d.cluster_id"
        " FROM module_versions v JOIN databases d ON d.id = v.database_id"
        " JOIN users u ON u.id = d.owner_id"
        " WHERE v.state = 'ready' AND d.state = 'ready'"
        " ORDER BY v.database_id, v.version DESC"
    )
    return [(access_of(row, "owner"), row["definition"]) for row in rows]


class Publisher:
    def __init__(self, store: Store, clusters: Clusters, secret: bytes, settings: Settings):
        self.store = store
        self.clusters = clusters
        self.cluster = clusters.home
        self.secret = secret
        self.settings = settings
        self.limits = pool.Limits.from_settings(settings)

    async def conninfo(self, access: Access, which: provision.SqlRole, app: str) -> str:
        """A session of the database's ``which`` role, on the cluster it lives on."""
        cluster = await self.clusters.cluster_of(access.cluster)
        role = provision.DatabaseRoles(access.pg_name).role(which)
        timeout_ms = int(self.settings.module_call_timeout_s * 1000)
        return cluster.role_conninfo(
            access.pg_name,
            role,
            provision.role_password(self.secret, role),
            options=f"-c statement_timeout={timeout_ms} -c idle_in_transaction_session_timeout="
            f"{timeout_ms * 2} -c TimeZone=UTC",
            application_name=app,
        )

    async def publish(
        self,
        access: Access,
        user_id: int,
        upload: Upload,
        body: ModulePublish,
        swap: Swap,
        rolled_back_from: int | None = None,
    ) -> PublishResult:
        async with self.store.transaction() as lock:
            await lock.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_CLASS, access.id))
            await self.settle(access)
            current = await self.latest(access.id)
            definition = await self._describe(upload)
            plan = migrate.plan(current.definition if current else None, definition)
            adopted: list[str] = []
            if current is None:  # tables restored from a backup are adopted, not made
                plan, adopted = await self._adopting(access, definition, plan)
            steps = [PlanStep(**_step(s)) for s in plan.steps]
            result = PublishResult(
                version=None,
                first=current is None,
                dry_run=body.dry_run,
                destructive=plan.destructive,
                diff=plan.diff_text(),
                steps=steps,
            )
            if plan.destructive and not body.allow_destructive:
                raise ServiceError(
                    409,
                    "destructive_migration",
                    "this version drops or rewrites data; publish again with "
                    "allow_destructive (millpond publish --delete-data) to apply it",
                    {"diff": result.diff, "steps": [s.model_dump() for s in steps]},
                )
            if body.dry_run:
                return result
            version = await self._next_version(access.id)
            await self._record_pending(access, user_id, version, upload, definition, plan)
            try:
                # the rows of adopted tables came with them: @init does not run again
                first = current is None and not adopted
                await self._apply(access, version, upload, definition, plan, first)
            except BaseException:
                await self.store.execute(
                    "DELETE FROM module_versions WHERE database_id = %s AND version = %s",
                    (access.id, version),
                )
                raise
            await self.store.execute(
                "UPDATE module_versions SET state = 'ready', rolled_back_from = %s"
                " WHERE database_id = %s AND version = %s",
                (rolled_back_from, access.id, version),
            )
            await self.store.execute("SELECT pg_notify('millpond_modules', %s)", (str(access.id),))
            swap_s = await swap(access, Version(version, upload.files, upload.entry, definition))
            return result.model_copy(update={"version": version, "swap_ms": swap_s * 1000})

    async def _adopting(
        self, access: Access, definition: ModuleDef, plan: migrate.Plan
    ) -> tuple[migrate.Plan, list[str]]:
        cluster = await self.clusters.cluster_of(access.cluster)
        owner = pg_tools.OwnerRole(cluster, self.secret, access.pg_name)
        async with await owner.session() as conn:
            return await adopt.adopting(conn, definition, plan)

    async def _describe(self, upload: Upload) -> ModuleDef:
        try:
            definition = await pool.describe(upload.files, upload.entry, self.limits)
            schema.check_module(definition)
        except pool.ModuleInvalid as exc:
            raise ServiceError(
                400,
                "module_invalid",
                f"the module does not load: {exc.message}",
                {"message": exc.message, "traceback": exc.traceback},
            ) from None
        except schema.SchemaError as exc:
            raise ServiceError(400, "module_invalid", str(exc), {"message": str(exc)}) from None
        return definition

    async def _apply(
        self,
        access: Access,
        version: int,
        upload: Upload,
        definition: ModuleDef,
        plan: migrate.Plan,
        first: bool,
    ) -> None:
        marker = sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(access.pg_name), sql.Literal(MARKER.format(version))
        )
        statements = [
            *plan.statements,
            *grant_statements(definition, access.pg_name),
            *row_visibility.statements(definition, access.pg_name, self.secret),
            marker,
        ]
        ctx = {
            "sender": "0" * 64,
            "connection_id": None,
            "timestamp": datetime.now(UTC).isoformat(),
            "seed": int.from_bytes(version.to_bytes(4, "big") + access.id.to_bytes(8, "big")),
            "request_id": f"publish-{access.id}-{version}",
        }
        try:
            outcome = await pool.apply(
                await self.conninfo(access, "owner", "millpond-publish"),
                upload.files,
                upload.entry,
                [s.as_string(None) for s in statements],
                first and definition.init is not None,
                ctx,
                self.limits,
            )
        except pool.ModuleInvalid as exc:
            raise ServiceError(
                400, "module_invalid", exc.message, {"message": exc.message}
            ) from None
        if outcome.get("status") != "committed":
            message = str(outcome.get("message") or outcome.get("status"))
            raise ServiceError(
                400,
                "migration_failed",
                f"the publish was rolled back, nothing changed: {message}",
                {"status": outcome.get("status"), "message": message},
            )

    async def latest(self, database_id: int) -> Version | None:
        return await latest_version(self.store, database_id)

    async def _next_version(self, database_id: int) -> int:
        row = await self.store.fetchone(
            "SELECT coalesce(max(version), 0) + 1 AS v FROM module_versions WHERE database_id = %s",
            (database_id,),
        )
        assert row is not None
        return int(row["v"])

    async def _record_pending(
        self,
        access: Access,
        user_id: int,
        version: int,
        upload: Upload,
        definition: ModuleDef,
        plan: migrate.Plan,
    ) -> None:
        await self.store.execute(
            "INSERT INTO module_versions (database_id, version, files, entry, definition, plan,"
            " published_by) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                access.id,
                version,
                json.dumps(upload.files),
                upload.entry,
                json.dumps(definition.to_json()),
                plan.diff_text(),
                user_id,
            ),
        )

    async def settle(self, access: Access) -> None:
        """Make a ``pending`` version left by a crash ready or delete it, by the tenant
        database's comment (set in the same transaction as the migration)."""
        pending = await self.store.fetchall(
            "SELECT version FROM module_versions WHERE database_id = %s AND state = 'pending'",
            (access.id,),
        )
        if not pending:
            return
        row = await self.store.fetchone(
            "SELECT pg_catalog.shobj_description(oid, 'pg_database') AS comment"
            " FROM pg_catalog.pg_database WHERE datname = %s",
            (access.pg_name,),
        )
        comment = row["comment"] if row else None
        for (version,) in (tuple(r.values()) for r in pending):
            applied = comment == MARKER.format(version)
            await self.store.execute(
                "UPDATE module_versions SET state = 'ready' WHERE database_id = %s AND version = %s"
                if applied
                else "DELETE FROM module_versions WHERE database_id = %s AND version = %s",
                (access.id, version),
            )


def _step(step: migrate.Step) -> dict[str, Any]:
    return {
        "kind": step.kind,
        "description": step.description,
        "destructive": step.destructive,
        "may_fail": step.may_fail,
    }
