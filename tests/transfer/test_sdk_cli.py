"""The SDK (``mp.imports``, ``mp.exports``, sync and async) and the CLI (``millpond
import``, ``millpond export``) against the session's server."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from millpond import AsyncMillpond, Millpond, MillpondError
from millpond.cli import app

from ._helpers import Api

CSV = b"id,name,price\n1,apple,1.5\n2,pear,2\n"


def test_sync_sdk(
    base_url: str,
    owner: tuple[str, str],
    db: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "fruit.csv"
    path.write_bytes(CSV)
    with Millpond(api_key=owner[1], base_url=base_url) as mp:
        job = mp.imports.create(db, "fruit", file=path)
        assert job.state in ("RECEIVED", "PROCESSING", "DONE") and job.file_name == "fruit.csv"
        job = mp.imports.wait(job.id, progress=True, poll_interval=0.05)
        assert job.state == "DONE" and job.tables[0].rows == 2
        assert mp.imports.get(job.id).state == "DONE"

        with path.open("rb") as f:  # a file object works too
            again = mp.imports.wait(mp.imports.create(db, "fruit", file=f, mode="append").id)
        assert again.state == "DONE"
        failed = mp.imports.wait(mp.imports.create(db, "fruit", file=path).id)
        assert failed.state == "FAILED" and failed.error_type == "table_exists"
        with pytest.raises(MillpondError, match="table_exists"):
            mp.imports.wait(failed.id, raise_on_failure=True)

        preview = mp.imports.preview(db, "fruit", file=path)
        assert [c.type for c in preview.tables[0].columns] == ["bigint", "text", "numeric"]

        export = mp.exports.create(
            db, query_string="SELECT * FROM fruit ORDER BY id", export_format="parquet"
        )
        written = mp.exports.download(export.id, tmp_path)
        assert written == tmp_path / "export.parquet"
        assert pq.read_table(written).column("id").to_pylist() == [1, 1, 2, 2]
        bad = mp.exports.create(db, table_name="nope")
        with pytest.raises(MillpondError, match="table_not_found"):
            mp.exports.download(bad.id, tmp_path / "x.csv")
        with pytest.raises(ValueError):
            mp.imports.create(db, "t")
    assert "done" in capsys.readouterr().err  # the progress bar


def test_async_sdk(base_url: str, owner: tuple[str, str], db: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncMillpond(api_key=owner[1], base_url=base_url) as mp:
            job = await mp.imports.create(db, "fruit", file=io.BytesIO(CSV), file_name="f.csv")
            job = await mp.imports.wait(job.id, poll_interval=0.05)
            assert job.state == "DONE", job
            export = await mp.exports.create(db, table_name="fruit", export_format="json")
            out = await mp.exports.download(export.id, tmp_path / "fruit.json")
            assert json.loads(out.read_bytes())[0] == {"id": 1, "name": "apple", "price": 1.5}

    asyncio.run(main())


def _cli(base_url: str, key: str, *args: str) -> tuple[int, str, str]:
    env = {"MILLPOND_API_KEY": None, "MILLPOND_URL": None, "COLUMNS": "100"}
    result = CliRunner().invoke(app, ["--url", base_url, "--key", key, *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_cli(base_url: str, xfer: Api, owner: tuple[str, str], db: str, tmp_path: Path) -> None:
    key = owner[1]
    src = tmp_path / "fruit.csv"
    src.write_bytes(CSV)
    code, out, err = _cli(base_url, key, "import", db, "fruit", str(src))
    assert code == 0, err
    job = json.loads(out)
    assert job["state"] == "DONE" and job["tables"][0]["rows"] == 2

    code, out, err = _cli(
        base_url, key, "import", db, "fruit", str(src), "--mode", "append", "--no-wait"
    )
    assert code == 0, err
    queued = json.loads(out)
    assert queued["state"] in ("RECEIVED", "PROCESSING", "DONE")
    xfer.wait("imports", queued["id"], key)

    code, out, err = _cli(base_url, key, "import", db, "fruit", str(src))
    assert code == 1 and json.loads(out)["state"] == "FAILED"
    assert "error: the import failed" in err and "(table_exists)" in err

    code, out, err = _cli(
        base_url, key, "import", db, "typed", str(src), "--type", "price=text", "--preview"
    )
    assert code == 0, err
    assert json.loads(out)["tables"][0]["columns"][2]["type"] == "text"

    target = tmp_path / "out.parquet"
    code, out, err = _cli(
        base_url, key, "export", db, "--query", "SELECT * FROM fruit", "-o", str(target)
    )
    assert code == 0, err
    assert json.loads(out)["export_format"] == "parquet"  # from the file's extension
    assert pq.read_table(target).num_rows == 4

    code, out, err = _cli(
        base_url, key, "export", db, "--table", "fruit", "--format", "csv", "--no-wait"
    )
    assert code == 0 and json.loads(out)["state"] in ("RECEIVED", "PROCESSING", "DONE")

    assert _cli(base_url, key, "export", db, "--table", "fruit")[0] == 2  # no -o
    assert _cli(base_url, key, "export", db, "-q", "SELECT 1", "-t", "x", "-o", "x")[0] == 2
    assert _cli(base_url, key, "import", db, "t", str(tmp_path / "missing.csv"))[0] == 2
    assert _cli(base_url, key, "import", db, "t", str(src), "--mode", "upsert")[0] == 2
    code, _, err = _cli(base_url, key, "import", "nobody/nothing", "t", str(src))
    assert code == 1 and "database_not_found" in err
