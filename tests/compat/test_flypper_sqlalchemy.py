"""The seed's own package, flypper-sqlalchemy 0.1.6, unmodified, on a millpond database:
its usage examples (tables made with ``build_flags_table``/``build_metadata_table`` and
``create_all``, ``SqlAlchemyStorage(engine=…)``, the web UI, a ``Client`` with a TTL, a
``Context`` per request, ``is_enabled`` with extra entries, the ORM Q&A mapping) through the
gateway; then ``millpond flags import-flypper`` reads those tables, and flypper's own
``Client`` on :class:`~millpond.flags.FlypperStorage` gives every actor the same answers.

flypper-sqlalchemy needs SQLAlchemy < 2, which the dev environment cannot have beside
SQLAlchemy 2, so it runs in an environment of its own, built once per checkout in
``.venv-compat/`` (git ignores it) from the package registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from flypper.client import Client as FlypperClient
from flypper.context import Context as FlypperContext
from typer.testing import CliRunner

from conftest import FlagsEnv
from millpond import Millpond
from millpond.cli import app
from millpond.flags import FlypperStorage
from millpond.server.testing import ServerThread

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-compat" / "flypper-sqlalchemy-0.1.6"
PACKAGES = [
    "flypper-sqlalchemy==0.1.6",
    "flypper==0.1.7",
    "SQLAlchemy>=1.4,<2",
    "psycopg2-binary",
    "werkzeug<3",  # flypper 0.1.7's web UI imports werkzeug.urls.url_parse (gone in 3)
    "typing-extensions",  # flypper 0.1.7 imports it without declaring it
]
ACTORS = [str(i) for i in range(200)]

SEED = r"""
import json, sys

from sqlalchemy import MetaData, create_engine
from sqlalchemy.ext.declarative import declarative_base
from sqlalchemy.orm import Session
from werkzeug.test import Client as WsgiClient

from flypper.client import Client as FlypperClient
from flypper.context import Context as FlypperContext
from flypper.wsgi.web_ui import FlypperWebUI
from flypper_sqlalchemy.storage.sqla import SqlAlchemyStorage

url, actors = sys.argv[1], json.loads(sys.argv[2])
engine = create_engine(url)

# "Build a storage backend": the tables, then the storage
metadata = MetaData()
SqlAlchemyStorage.build_flags_table(sqla_metadata=metadata)
SqlAlchemyStorage.build_metadata_table(sqla_metadata=metadata)
metadata.create_all(engine)
storage = SqlAlchemyStorage(engine=engine)

# "Use it in the web UI": the flags made with its forms
web_ui = FlypperWebUI(storage=storage)
ui = WsgiClient(web_ui)
assert ui.get("/flypper/").status_code == 200
for name, gates in [
    ("flag_name", {"enabled_for_actors": "on", "enabled_for_actors_key": "user_id",
                   "enabled_for_actors_ids": "42\n"}),
    ("other_flag_name", {"enabled_for_actors": "on", "enabled_for_actors_key": "item_reference",
                         "enabled_for_actors_ids": "blue-shampoo\n"}),
    ("rollout", {"enabled_for_percentage_of_actors": "on",
                 "enabled_for_percentage_of_actors_key": "user_id",
                 "enabled_for_percentage_of_actors_percentage": "30"}),
]:
    assert ui.post("/flypper/new", data={"flag_name": name}).status_code == 302
    form = {"flag_name": name, "enabled": "on", "enabled_for_actors_key": "",
            "enabled_for_actors_ids": "", "enabled_for_percentage_of_actors_key": "",
            "enabled_for_percentage_of_actors_percentage": "", **gates}
    assert ui.post("/flypper/edit", data=form).status_code == 302
listed = ui.get("/flypper/").get_data(as_text=True)
assert all(name in listed for name in ("flag_name", "other_flag_name", "rollout")), listed

# "Use it in your code": a client per thread, a context per request
flypper_client = FlypperClient(storage=storage, ttl=10)
answers = {}
for actor in actors:
    flypper_context = FlypperContext(client=flypper_client, entries={"user_id": actor})
    answers[actor] = [
        flypper_context.is_enabled("flag_name"),
        flypper_context.is_enabled("other_flag_name", item_reference="blue-shampoo"),
        flypper_context.is_enabled("rollout"),
    ]

# the Q&A: flypper's tables as mapped classes of the ORM
Base = declarative_base()

class FlypperFlag(Base):
    __table__ = SqlAlchemyStorage.build_flags_table(sqla_metadata=Base.metadata)

class FlypperMetadata(Base):
    __table__ = SqlAlchemyStorage.build_metadata_table(sqla_metadata=Base.metadata)

with Session(engine) as session:
    names = sorted(flag.name for flag in session.query(FlypperFlag))
    version = session.get(FlypperMetadata, "version").value

print(json.dumps({"answers": answers, "names": names, "version": version}))
"""


@pytest.fixture(scope="session")
def sqla_python() -> Path:
    """The Python of an environment with flypper-sqlalchemy 0.1.6 and SQLAlchemy 1.4."""
    python = VENV / "bin" / "python"
    ready = VENV / ".installed"
    wanted = "\n".join(PACKAGES)
    if not (ready.exists() and ready.read_text() == wanted):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PACKAGES],
            check=True,
            timeout=240,
        )
        ready.write_text(wanted)
    return python


def test_the_seed_on_a_millpond_database_then_imported(
    sqla_python: Path,
    server: ServerThread,
    base_url: str,
    flags_env: FlagsEnv,
) -> None:
    # the app's flags live in a millpond database, reached through the gateway
    r = httpx.post(
        f"{base_url}/v1/databases",
        json={"name": "flypper_app"},
        headers={"Authorization": f"Bearer {flags_env.key}"},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    database = r.json()["full_name"]
    port = server.settings.gateway_port
    url = f"postgresql+psycopg2://app:{flags_env.key}@127.0.0.1:{port}/{database}"
    seed = subprocess.run(
        [str(sqla_python), "-c", SEED, url, json.dumps(ACTORS)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=False,
    )
    assert seed.returncode == 0, seed.stderr[-3000:]
    result: dict[str, Any] = json.loads(seed.stdout.strip().splitlines()[-1])
    assert result["names"] == ["flag_name", "other_flag_name", "rollout"]
    assert result["version"] == "6"  # each flag: made, then edited
    assert result["answers"]["42"][:2] == [True, True]
    assert result["answers"]["7"][:2] == [False, True]
    rolled = sum(a[2] for a in result["answers"].values())
    assert 30 < rolled < 90, rolled  # about 30% of 200

    # moving to millpond's flags: the import reads the same tables, through the gateway
    bound = flags_env.bound_key()
    argv = ["--url", base_url, "--key", bound, "flags", "import-flypper", url]
    imported = CliRunner().invoke(app, argv, env={"MILLPOND_API_KEY": None, "MILLPOND_URL": None})
    assert imported.exit_code == 0, imported.output
    with Millpond(bound, base_url) as mp:
        client = FlypperClient(storage=FlypperStorage(mp), ttl=10)
        for actor, expected in result["answers"].items():
            context = FlypperContext(client=client, entries={"user_id": actor})
            got = [
                context.is_enabled("flag_name"),
                context.is_enabled("other_flag_name", item_reference="blue-shampoo"),
                context.is_enabled("rollout"),
            ]
            assert got == expected, actor
