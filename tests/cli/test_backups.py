"""``millpond backup --database`` and ``millpond restore --database``: one database
through the API, round trip with JSON and table output, the database created when
missing (and removed again when the restore fails), refusals with their hints."""

from __future__ import annotations

from pathlib import Path

from .conftest import Cli, unique


def _make(cli: Cli, user: str) -> str:
    name = unique("bk")
    cli.json("db", "create", name)
    database = f"{user}/{name}"
    sql = (
        "CREATE TABLE orders (id int PRIMARY KEY, total numeric);"
        " INSERT INTO orders VALUES (1, 9.5)"
    )
    cli.json("query", "-d", database, "-q", sql)
    return database


def test_a_database_round_trip(user_cli: tuple[str, Cli], tmp_path: Path) -> None:
    user, cli = user_cli
    source = _make(cli, user)
    file = tmp_path / "shop.mpdb"
    report = cli.json("backup", "--database", source, "-o", str(file))
    assert report["file"] == str(file) and report["bytes"] == file.stat().st_size
    assert report["database"] == source and report["format"] == 1 and "grants" not in report
    target = f"{user}/{unique('copy')}"
    restored = cli.json("restore", str(file), "--database", target)
    assert restored["database"] == target and restored["source"] == source
    assert restored["created_database"] is True and restored["bytes"] == report["bytes"]
    rows = cli.json("query", "-d", target, "-q", "SELECT id, total FROM orders")
    assert rows["data"] == [[1, "9.5"]]
    assert cli.json("db", "get", target)["is_private"] is True
    # into an existing empty database, in table format
    name = unique("empty")
    cli.json("db", "create", name)
    line = cli.ok("restore", str(file), "--database", f"{user}/{name}", table=True).stdout
    assert line == f"restored the backup of {source} into {user}/{name}\n"
    again = cli("restore", str(file), "--database", target)
    assert again.exit_code == 1 and "(database_not_empty)" in again.stderr
    assert "`millpond restore FILE --database OWNER/NEW_NAME`" in again.stderr
    line = cli.ok("backup", "-d", target, "-o", str(tmp_path / "b.mpdb"), table=True).stdout
    assert line.startswith(f"backed up {target} to {tmp_path / 'b.mpdb'} (")


def test_refusals(user_cli: tuple[str, Cli], tmp_path: Path) -> None:
    user, cli = user_cli
    source = _make(cli, user)
    filler = "CREATE TABLE filler AS SELECT g, md5(g::text) FROM generate_series(1, 2000) g"
    cli.json("query", "-d", source, "-q", filler)  # the file's end is its rows
    file = tmp_path / "b.mpdb"
    cli.json("backup", "--database", source, "-o", str(file))
    exists = cli("backup", "--database", source, "-o", str(file))
    assert exists.exit_code == 1 and "exists" in exists.stderr  # never overwritten
    both = cli("backup", "--database", source, "--data-dir", str(tmp_path), "-o", "x")
    assert both.exit_code == 2 and "not both" in both.stderr
    neither = cli("restore", str(file))
    assert neither.exit_code == 2 and "one of them" in neither.stderr
    junk = tmp_path / "junk.mpdb"
    junk.write_bytes(b"not a backup\n")
    missing = f"{user}/{unique('never')}"
    refused = cli("restore", str(junk), "--database", missing)
    assert refused.exit_code == 1 and "not a millpond database backup" in refused.stderr
    cut = tmp_path / "cut.mpdb"
    cut.write_bytes(file.read_bytes()[:-200])  # passes the local check, fails in pg_restore
    failed = cli("restore", str(cut), "--database", missing)
    assert failed.exit_code == 1 and "(restore_failed)" in failed.stderr
    names = [db["full_name"] for db in cli.json("db", "list")]
    assert missing not in names  # the database made for it went again
    other = cli("restore", str(file), "--database", f"someone-else/{unique('x')}")
    assert other.exit_code == 1 and "databases of your own" in other.stderr
    assert "`millpond db create" in other.stderr
    unknown = cli("backup", "--database", f"{user}/nope", "-o", str(tmp_path / "n.mpdb"))
    assert unknown.exit_code == 1 and "(database_not_found)" in unknown.stderr
    assert not (tmp_path / "n.mpdb").exists() and not (tmp_path / "n.mpdb.part").exists()
