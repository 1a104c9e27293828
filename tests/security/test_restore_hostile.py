"""A restore runs the backup's archive — SQL the tenant wrote, or a file anyone crafted —
as the target database's ``_owner`` role, never as a superuser: it can do no more than
that role could, and gains nothing. Archives here are made by ``pg_dump`` of databases
the superuser made (holding what no tenant could make), or crafted by replacing one
statement of such an archive."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from _backups import as_backup, crafted_archive, objects, restore, scratch_archive, superuser
from millpond.server.postgres.embedded import SUPERUSER, bin_dir
from millpond.server.testing import ServerThread

from ._tenant import Tenant, make_tenant

MakeUser = Callable[..., tuple[str, str]]


@pytest.fixture
def tenant(server: ServerThread, make_user: MakeUser) -> Tenant:
    return make_tenant(server, make_user, prefix="restore")


def _unchanged(server: ServerThread, tenant: Tenant) -> None:
    """Nothing was restored, and the tenant's roles are what they were."""
    assert objects(server, tenant.pg_name) == []
    with superuser(server) as conn:
        rows = conn.execute(
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
            " FROM pg_roles WHERE rolname LIKE %s",
            (f"{tenant.pg_name}\\_%",),
        ).fetchall()
        memberships = conn.execute(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member"
            " JOIN pg_roles g ON g.oid = m.roleid WHERE r.rolname LIKE %s"
            " AND g.rolname NOT LIKE %s",
            (f"{tenant.pg_name}\\_%", f"{tenant.pg_name}\\_%"),
        ).fetchone()
        evil = conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'evil'").fetchone()
        settings = conn.execute(
            "SELECT count(*) FROM pg_file_settings WHERE setting = '12345'"
        ).fetchone()
    assert len(rows) == 4 and all(not any(row[1:]) for row in rows), rows
    assert memberships == (0,) and evil == (0,) and settings == (0,)


def _server_paths(server: ServerThread) -> list[str]:
    return [str(server.settings.data_dir), str(bin_dir().parent)]


def _refused(server: ServerThread, tenant: Tenant, archive: bytes) -> str:
    r = restore(server, tenant.key, tenant.database, as_backup(archive))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "restore_failed", error
    _unchanged(server, tenant)
    assert not any(path in str(error) for path in _server_paths(server)), error
    return str(error["details"]["error"])


def _statements(target: Path) -> list[str]:
    return [
        "ALTER ROLE CURRENT_USER SUPERUSER;",
        "ALTER ROLE CURRENT_USER CREATEROLE BYPASSRLS;",
        "CREATE ROLE evil LOGIN SUPERUSER PASSWORD 'x';",
        "GRANT pg_execute_server_program, pg_write_server_files TO {owner};",
        "ALTER SYSTEM SET log_min_duration_statement = 12345;",
        f"SET SESSION AUTHORIZATION {SUPERUSER}; CREATE TABLE public.as_superuser ();",
        f"SET ROLE {SUPERUSER}; CREATE TABLE public.as_superuser ();",
        f"COPY (SELECT 1) TO PROGRAM 'touch {target}';",
        f"COPY (SELECT 'x') TO '{target}';",
        f"CREATE TABLE public.x (l text); COPY public.x FROM PROGRAM 'id > {target}';",
        "SELECT pg_catalog.pg_read_file('/etc/passwd');",
        "CREATE EXTENSION vector SCHEMA public;",
        "LOAD 'vector';",
        "CREATE LANGUAGE plpython3u;",
        "DO $$ BEGIN EXECUTE 'ALTER ROLE ' || session_user || ' SUPERUSER'; END $$;",
    ]


def test_crafted_statements_run_as_the_owner_and_gain_nothing(
    server: ServerThread, tenant: Tenant, tmp_path: Path
) -> None:
    target = tmp_path / "written-by-postgres"
    for statement in _statements(target):
        statement = statement.replace("{owner}", tenant.role("owner"))
        error = _refused(server, tenant, crafted_archive(server, statement))
        assert "denied" in error or "must be" in error or "not" in error, (statement, error)
        assert not target.exists(), statement


def test_what_a_superuser_made_is_refused_or_made_the_owners(
    server: ServerThread, tenant: Tenant
) -> None:
    # an untrusted extension and an event trigger: only a superuser makes them
    _refused(server, tenant, scratch_archive(server, ["CREATE EXTENSION vector"]))
    trigger = [
        "CREATE FUNCTION public.spy() RETURNS event_trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE NOTICE 'seen'; END $$",
        "CREATE EVENT TRIGGER spy ON ddl_command_start EXECUTE FUNCTION public.spy()",
    ]
    assert "event trigger" in _refused(server, tenant, scratch_archive(server, trigger))
    # a SECURITY DEFINER function of the superuser becomes the owner's: it runs as them
    archive = scratch_archive(
        server,
        [
            "CREATE FUNCTION public.escalate() RETURNS void LANGUAGE plpgsql SECURITY DEFINER"
            " AS $$ BEGIN EXECUTE 'ALTER ROLE ' || quote_ident(session_user) || ' SUPERUSER';"
            " END $$",
            "CREATE TABLE public.kept (id int)",
            "ALTER TABLE public.kept OWNER TO pg_database_owner",
        ],
    )
    r = restore(server, tenant.key, tenant.database, as_backup(archive))
    assert r.status_code == 200, r.text
    owner = tenant.role("owner")
    found = {(kind, name): who for kind, _, name, _, who in objects(server, tenant.pg_name)}
    assert found == {("function", "escalate()"): owner, ("relation", "kept"): owner}
    with superuser(server, tenant.pg_name) as conn:
        definer = conn.execute("SELECT prosecdef FROM pg_proc WHERE proname = 'escalate'")
        assert definer.fetchone() == (True,)
    r = tenant.query("SELECT public.escalate()")
    assert r.status_code == 400 and r.json()["error"]["details"]["sqlstate"] == "42501", r.text
    with superuser(server) as conn:
        role = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (owner,))
        assert role.fetchone() == (False,)


def test_a_restore_never_names_another_databases_roles(
    server: ServerThread, tenant: Tenant, make_user: MakeUser
) -> None:
    """Grants and ownership are not restored (``--no-acl``, ``--no-owner``): an archive
    that hands a table to another tenant's role, or grants it theirs, changes neither."""
    other = make_tenant(server, make_user, prefix="victim")
    archive = crafted_archive(
        server,
        f"CREATE TABLE public.gift (id int); ALTER TABLE public.gift OWNER TO"
        f" {other.role('owner')}; GRANT {other.role('owner')} TO CURRENT_USER;",
    )
    error = _refused(server, tenant, archive)
    assert "must be" in error or "denied" in error, error
    assert objects(server, other.pg_name) == []


def test_an_archive_that_commits_itself_gains_nothing_either(
    server: ServerThread, tenant: Tenant
) -> None:
    """pg_restore runs each statement of the archive as it is: one crafted to end the
    restore's transaction (``COMMIT``) leaves what it made by then — in its own
    database, as its owner could anyway — and what follows runs as that owner too."""
    archive = crafted_archive(server, "COMMIT; ALTER ROLE CURRENT_USER SUPERUSER;")
    r = restore(server, tenant.key, tenant.database, as_backup(archive))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "restore_failed" and "permission denied" in error["details"]["error"]
    assert error["details"]["left"] == {"relations": 1} and "stays" in error["message"]
    owner = tenant.role("owner")
    assert [row[2:] for row in objects(server, tenant.pg_name)] == [("t", "r", owner)]
    with superuser(server) as conn:
        assert conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (owner,)
        ).fetchone() == (False,)
        assert conn.execute(
            "SELECT count(*) FROM pg_file_settings WHERE setting = '12345'"
        ).fetchone() == (0,)


def test_a_crafted_manifest_names_only_the_tenants_own_objects(
    server: ServerThread, tenant: Tenant
) -> None:
    """The manifest's grants are the uploader's text: ones naming catalog functions and
    tables (``pg_logical_emit_message`` forges reducer events; it is revoked from
    ``PUBLIC``) are ignored, whatever the owner role could or could not grant there."""
    from millpond.models.backups import RoleGrants

    grants = [
        RoleGrants(
            kind="function",
            schema_name="pg_catalog",
            name="pg_logical_emit_message",
            arguments="transactional boolean, prefix text, content text",
            ro=["EXECUTE"],
            rw=["EXECUTE"],
            reducer=["EXECUTE"],
        ),
        RoleGrants(kind="table", schema_name="pg_catalog", name="pg_authid", ro=["SELECT"]),
        RoleGrants(kind="table", schema_name="public", name="t", ro=[]),
    ]
    archive = scratch_archive(server, ["CREATE TABLE public.t (id int)"])
    r = restore(server, tenant.key, tenant.database, as_backup(archive, grants=grants))
    assert r.status_code == 200, r.text
    reader = tenant.role("ro")
    with superuser(server, tenant.pg_name) as conn:
        row = conn.execute(
            "SELECT has_function_privilege(%s,"
            " 'pg_catalog.pg_logical_emit_message(boolean, text, text)', 'EXECUTE'),"
            " has_table_privilege(%s, 'pg_catalog.pg_authid', 'SELECT'),"
            " has_table_privilege(%s, 'public.t', 'SELECT')",
            (reader, reader, reader),
        ).fetchone()
    assert row == (False, False, False)  # only the tenant's own table changed
