"""``millpond publish``, ``call``, ``logs`` and ``module versions/show/rollback/schema``
against the real server: JSON and table output, failures on stderr with exit 1, a
destructive publish refused until --delete-data."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import Cli

V1 = '''
from millpond.module import ReducerContext, SenderError, table, reducer, primary_key

@table(public=True)
class Counter:
    name: str = primary_key()
    n: int = 0

@reducer
def bump(ctx: ReducerContext, name: str, by: int = 1) -> int:
    """Add to a counter."""
    if by <= 0:
        raise SenderError("by must be positive")
    row = ctx.db.counter.find(name)
    if row is None:
        row = ctx.db.counter.insert(Counter(name=name, n=by))
    else:
        row.n += by
        ctx.db.counter.update(row)
    ctx.log.info("bumped %s to %s", name, row.n)
    return row.n
'''
V2 = V1.replace("    n: int = 0\n", "    n: int = 0\n    note: str | None = None\n")
V3 = V1.replace("    n: int = 0\n", "")


def test_publish_call_logs_versions_and_rollback(user_cli: tuple[str, Cli], tmp_path: Path) -> None:
    name, cli = user_cli
    cli.ok("db", "create", "counters")
    db = f"{name}/counters"
    source = tmp_path / "counters.py"
    source.write_text(V1)
    published = cli.json("publish", db, str(source))
    assert published["version"] == 1 and published["first"]
    assert cli.json("call", db, "bump", '"a"')["return"] == 1
    assert cli.json("call", db, "bump", '"a"', "5")["return"] == 6
    out = cli.ok("call", db, "bump", '{"name": "b", "by": 2}', "--named", table=True).stdout
    assert out == "bump committed: 2\n"
    failed = cli("call", db, "bump", '"a"', "0")
    assert failed.exit_code == 1 and "by must be positive" in failed.stderr
    bad = cli("call", db, "bump", "a")
    assert bad.exit_code == 2 and "not JSON" in bad.stderr
    lines = [json.loads(line) for line in cli.ok("logs", db).stdout.splitlines()]
    assert [line["message"] for line in lines] == [
        "bumped a to 1",
        "bumped a to 6",
        "bumped b to 2",
    ]
    two = [json.loads(line) for line in cli.ok("logs", db, "-n", "2").stdout.splitlines()]
    assert [line["message"] for line in two] == ["bumped a to 6", "bumped b to 2"]
    text = cli.ok("logs", db, "-n", "1", table=True).stdout
    assert text.rstrip().endswith("v1 bump: bumped b to 2")
    # an additive change, then a destructive one refused until --delete-data
    source.write_text(V2)
    dry = cli.ok("publish", db, str(source), "--dry-run", table=True).stdout
    assert "would change" in dry and "+ counter.note" in dry
    assert cli.json("publish", db, str(source))["version"] == 2
    source.write_text(V3)
    refused = cli("publish", db, str(source))
    assert refused.exit_code == 1 and "destructive" in refused.stderr
    assert cli.json("publish", db, str(source), "--delete-data")["version"] == 3
    versions = cli.json("module", "versions", db)
    assert [v["version"] for v in versions] == [3, 2, 1] and versions[0]["active"]
    table = cli.ok("module", "versions", db, table=True).stdout
    assert table.splitlines()[0].split()[:3] == ["VERSION", "PUBLISHED", "BY"]
    assert "3 *" in table
    assert "def bump" in cli.ok("module", "show", db, "1", table=True).stdout
    rolled = cli.json("module", "rollback", db, "1")  # adds the column back: additive
    assert rolled["version"] == 4
    assert cli.json("module", "schema", db)["version"] == 4
    assert cli.json("call", db, "bump", '"a"')["return"] == 1  # v3 dropped n's data


def test_publish_errors_say_what_to_do(user_cli: tuple[str, Cli], tmp_path: Path) -> None:
    name, cli = user_cli
    cli.ok("db", "create", "broken")
    db = f"{name}/broken"
    missing = cli("publish", db, str(tmp_path / "nope.py"))
    assert missing.exit_code == 2
    source = tmp_path / "bad.py"
    source.write_text("def broken(:\n")
    result = cli("publish", db, str(source))
    assert result.exit_code == 1 and "module_invalid" in result.stderr
    nothing = cli("call", db, "x")
    assert nothing.exit_code == 1 and "millpond publish" in nothing.stderr


def test_module_settings_and_identities(user_cli: tuple[str, Cli], tmp_path: Path) -> None:
    name, cli = user_cli
    cli.ok("db", "create", "lobby", "--public")
    db = f"{name}/lobby"
    source = tmp_path / "lobby.py"
    source.write_text(V1)
    cli.json("publish", db, str(source))
    assert cli.json("module", "settings", db) == {"anonymous_access": True}
    assert cli.ok("identities", "list", db, table=True).stdout == "no anonymous identities\n"
    created = cli.json("identities", "create", db)
    assert created["token"].startswith("mpt_") and created["database"] == db
    shown = cli.ok("identities", "create", db, table=True).stdout
    assert "token" in shown and "shown only once" in shown
    listed = cli.json("identities", "list", db)
    assert created["identity"] in [i["identity"] for i in listed] and len(listed) == 2
    table = cli.ok("identities", "list", db, table=True).stdout
    assert table.splitlines()[0].split() == ["IDENTITY", "CREATED", "LAST", "USED", "REVOKED"]
    out = cli.ok("identities", "revoke", db, created["identity"], table=True).stdout
    assert out == f"revoked {created['identity']} of {db}\n"
    again = cli("identities", "revoke", db, created["identity"])
    assert again.exit_code == 1 and "identities list" in again.stderr
    assert len(cli.json("identities", "list", db)) == 1
    assert len(cli.json("identities", "list", db, "--revoked")) == 2
    off = cli.json("module", "settings", db, "--no-anonymous")
    assert off == {"anonymous_access": False}
    refused = cli("identities", "create", db)
    assert refused.exit_code == 1 and "anonymous access off" in refused.stderr
    assert cli.json("module", "settings", db, "--anonymous") == {"anonymous_access": True}
    # who is connected: recorded only for a module with lifecycle reducers
    untracked = cli("identities", "connected", db)
    assert untracked.exit_code == 1 and "not recorded" in untracked.stderr
    source.write_text(
        V1.replace("reducer, primary_key", "reducer, primary_key, client_connected")
        + "\n@client_connected\ndef hello(ctx: ReducerContext) -> None:\n    pass\n"
    )
    cli.json("publish", db, str(source))
    assert cli.json("identities", "connected", db) == []
    assert cli.ok("identities", "connected", db, table=True).stdout == "no connections\n"


def test_module_issuers(user_cli: tuple[str, Cli], tmp_path: Path) -> None:
    from tests.modules.test_issuers import Signer

    name, cli = user_cli
    cli.ok("db", "create", "idp")
    db = f"{name}/idp"
    source = tmp_path / "idp.py"
    source.write_text(V1)
    cli.json("publish", db, str(source))
    assert cli.json("module", "issuers", "list", db) == []
    assert cli.ok("module", "issuers", "list", db, table=True).stdout == "no issuers\n"
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [Signer("ES256", "k1").jwk]}))
    issuer = "https://login.example.test"
    added = cli.json(
        "module",
        "issuers",
        "add",
        db,
        issuer,
        "-a",
        "app",
        "--audience",
        "web",
        "--jwks-file",
        str(jwks),
        "--claim",
        "email_verified=true",
        "--claim",
        "tier=gold",
    )
    assert added["audiences"] == ["app", "web"]
    assert added["required_claims"] == {"email_verified": True, "tier": "gold"}
    table = cli.ok("module", "issuers", "list", db, table=True).stdout
    assert table.splitlines()[0].split() == ["ISSUER", "AUDIENCES", "KEYS", "CLAIMS"]
    assert "inline" in table and "email_verified=True" in table
    found = cli.json("module", "issuers", "list", db)
    assert [i["issuer"] for i in found] == [issuer]
    bad = cli("module", "issuers", "add", db, issuer, "-a", "app", "--claim", "novalue")
    assert bad.exit_code == 2 and "NAME=VALUE" in bad.stderr
    missing = cli("module", "issuers", "add", db, issuer, "-a", "x", "--jwks-file", "nope.json")
    assert missing.exit_code == 2 and "cannot read the key set" in missing.stderr
    out = cli.ok("module", "issuers", "remove", db, issuer, table=True).stdout
    assert out == f"{db} no longer accepts tokens of {issuer}\n"
    again = cli("module", "issuers", "remove", db, issuer)
    assert again.exit_code == 1 and "module issuers list" in again.stderr


def test_schedules(user_cli: tuple[str, Cli], tmp_path: Path) -> None:
    from tests.modules.test_schedules import MODULE

    name, cli = user_cli
    cli.ok("db", "create", "alarms")
    db = f"{name}/alarms"
    source = tmp_path / "alarms.py"
    source.write_text(V1)
    cli.json("publish", db, str(source))
    plain = cli("schedules", db)
    assert plain.exit_code == 1 and "no schedule table" in plain.stderr
    source.write_text(MODULE)
    cli.json("publish", db, str(source), "--delete-data")
    assert cli.json("schedules", db) == []
    assert cli.ok("schedules", db, table=True).stdout == "no schedules\n"
    cli.json("call", db, "remind_every", '"tick"', "3600000")
    cli.json("call", db, "remind_in", '"later"', "3600000")
    listed = cli.json("schedules", db)
    shown = sorted((s["state"], s["interval_us"], s["reducer"]) for s in listed)
    assert shown == [("due", None, "remind"), ("recurring", 3_600_000_000, "remind")]
    cut = cli("schedules", db, "--limit", "1", table=True)
    assert cut.exit_code == 0 and "the first 1 shown; --all for every one" in cut.stderr
    table = cut.stdout.splitlines()
    assert table[0].split()[:4] == ["TABLE", "SCHEDULED", "ID", "REDUCER"] and len(table) == 3
    assert table[2].split()[:4] == [
        "reminder",
        str(listed[0]["scheduled_id"]),
        "remind",
        listed[0]["state"],
    ]
