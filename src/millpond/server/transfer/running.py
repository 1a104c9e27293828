"""Running import and export jobs (called by the worker, ``worker.py``): each job's
access checked again as it starts, a session of the caller's role on the database's
cluster, and the work in a thread: an import's download, decompression, reading and
loading (``sources``, ``loader``); an export's file (``exporter``). Streamed exports
(``stream.py``) open their sessions here too."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import DictRow

from ..accounts.service import Principal
from ..databases.service import Access, resolve
from ..errors import ServiceError
from ..modules import row_visibility
from ..modules.identities import user_identity
from ..postgres import provision
from ..postgres.cluster import Cluster
from . import exporter, sources
from .errors import Interrupted, JobError
from .loader import Loader, Target, target_names
from .progress import Progress
from .worker import TransferWorker, expiry

if TYPE_CHECKING:
    from .service import TransferService

_MOVING_POLL_S = 0.5


class JobRunner:
    def __init__(self, service: TransferService) -> None:
        self.service = service

    async def _access(self, row: DictRow, need: str) -> Access:
        """The job owner's access to the job's database now (rights may have changed)."""
        found = await self.service.store.fetchone(
            "SELECT u.username, u.is_admin, ou.username AS owner, d.name"
            " FROM users u, databases d JOIN users ou ON ou.id = d.owner_id"
            " WHERE u.id = %s AND d.id = %s",
            (row["user_id"], row["database_id"]),
        )
        if found is None:
            raise JobError("database_not_found", "the database no longer exists")
        principal = Principal(
            user_id=row["user_id"],
            username=found["username"],
            is_admin=found["is_admin"] and row["service_account_id"] is None,
            key_id=f"job:{row['id']}",
            scope=row["key_scope"],
            service_account_id=row["service_account_id"],
        )
        deadline = monotonic() + self.service.settings.transfer_job_timeout_s
        while True:
            try:
                access = await resolve(
                    self.service.store,
                    principal,
                    f"{found['owner']}/{found['name']}",
                    need=need,  # type: ignore[arg-type]
                )
                await self.service.clusters.cluster_of(access.cluster)
                return access
            except ServiceError as exc:
                if exc.code != "database_moving" or monotonic() > deadline:
                    raise JobError(exc.code, exc.message) from exc
            await asyncio.sleep(_MOVING_POLL_S)  # it runs once the database has moved

    def connect(self, access: Access, identity: str | None = None) -> psycopg.Connection[Any]:
        """A session of the job's role; as ``identity`` for row visibility rules (its
        proof a startup option: never in a statement's text). The database's cluster is
        loaded already (``Clusters.cluster_of``, by :meth:`_access` or the caller)."""
        cluster = self.service.clusters.get(access.cluster)
        role = provision.DatabaseRoles(access.pg_name).role(access.sql_role)
        timeout_ms = int(self.service.settings.transfer_job_timeout_s * 1000)
        options = (
            f"-c statement_timeout={timeout_ms} -c lock_timeout=30000 -c DateStyle=ISO,YMD"
            " -c TimeZone=UTC"
        )
        if identity is not None:
            proof = row_visibility.proof(self.service.secret, access.pg_name, identity)
            options += f" -c {row_visibility.SETTING}={proof}"
        conninfo = cluster.role_conninfo(
            access.pg_name,
            role,
            provision.role_password(self.service.secret, role),
            options=options,
            application_name="millpond-transfer",
        )
        conn = self._login(conninfo, role, cluster)
        row = conn.execute(provision.TAMPERED_SETTINGS_SQL).fetchone()
        if row and row[0]:  # a user of the shared role gave it role-level settings
            conn.close()
            provision.reset_role_settings(cluster, role)
            conn = self._login(conninfo, role, cluster)
        return conn

    def _login(self, conninfo: str, role: str, cluster: Cluster) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            if "password authentication failed" not in str(exc):
                raise JobError("postgres_unavailable", "cannot connect to the database") from exc
            provision.reset_password(cluster, self.service.secret, role)
            return psycopg.connect(conninfo, autocommit=True)

    async def execute_import(
        self, row: DictRow, progress: Progress, worker: TransferWorker
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        params = row["params"]
        access = await self._access(row, "write")
        folder = self.service.job_dir(row["id"])
        folder.mkdir(mode=0o700, exist_ok=True)
        file_name = row["file_name"]
        if row["file_path"]:
            path = Path(row["file_path"])
            if not path.is_file():
                raise JobError(
                    "file_missing",
                    "the uploaded file is no longer on this server's disk; upload it again",
                )
        else:
            progress.phase = "downloading"
            path = folder / "download"
            fetched = await self.service.download_source(params["file_url"], path, progress)
            file_name = file_name or fetched
        job_id = row["id"]

        def before_commit(xid: str) -> None:
            if not worker.call(lambda: worker.record_xid(job_id, xid)):
                raise Interrupted("the job was taken over by another worker")

        def work() -> dict[str, Any]:
            source = path
            compression = None
            if sources.is_gzip(source):
                progress.phase = "decompressing"
                compression = "gzip"
                data = folder / "data"
                sources.decompress(
                    source, data, self.service.settings.transfer_max_file_bytes, progress
                )
                source = data
            progress.phase = "reading"
            progress.bytes_total = source.stat().st_size
            progress.bytes_done = 0
            plan = sources.plan(source, strip_gz(file_name), self.service.source_options(params))
            progress.phase = "loading"
            conn = self.connect(access)
            try:
                loaded = Loader(
                    conn,
                    plan,
                    Target(
                        schema=params.get("schema_name") or "public",
                        table=params["table_name"],
                        mode=params.get("mode", "create"),
                        staging_suffix=job_id[4:12],
                    ),
                    storage_limit=access.storage_limit_bytes,
                    progress=progress,
                    before_commit=before_commit,
                ).run()
            finally:
                conn.close()
            progress.bytes_done = progress.bytes_total or 0
            sources_by_table = {
                target: {c.name: c.source for c in t.columns}
                for t, target in zip(
                    plan.tables, target_names(plan, params["table_name"]), strict=True
                )
            }
            return {
                "file_format": plan.file_format,
                "compression": compression,
                "tables": [
                    {
                        **asdict(t),
                        "columns": [
                            {
                                **c,
                                "source": sources_by_table.get(t.table, {}).get(
                                    c["name"], c["name"]
                                ),
                            }
                            for c in t.columns
                        ],
                    }
                    for t in loaded
                ],
            }

        result = await asyncio.to_thread(work)
        return result, {}

    async def execute_export(
        self, row: DictRow, progress: Progress, worker: TransferWorker
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        params = row["params"]
        access = await self._access(row, "read")
        folder = self.service.job_dir(row["id"])
        folder.mkdir(mode=0o700, exist_ok=True)
        out = folder / row["file_name"]
        spec = exporter.ExportSpec(
            export_format=params["export_format"],
            query=params.get("query_string"),
            schema=params.get("schema_name"),
            table=params.get("table_name"),
        )

        identity = user_identity(self.service.secret, row["user_id"])  # what its rules show it

        def work() -> exporter.Exported:
            conn = self.connect(access, identity)
            try:
                return exporter.Exporter(conn, spec, out, progress).run()
            finally:
                conn.close()

        done = await asyncio.to_thread(work)
        progress.rows_done, progress.bytes_done = done.rows, done.bytes
        progress.bytes_total = done.bytes
        return (
            {"rows": done.rows, "bytes": done.bytes, "columns": done.columns},
            {
                "file_path": str(out),
                "node_id": self.service.node_id,
                "expires_at": expiry(self.service.settings.transfer_export_ttl_s),
            },
        )


def strip_gz(name: str | None) -> str | None:
    """A file name without its ``.gz``: what the file is once decompressed."""
    if name and name.lower().endswith(".gz"):
        return name[:-3]
    return name
