"""The shell commands of ``docs/*.md`` run (the README's have ``test_readme.py``).

Every ``$ …`` line of a ``console`` block and every line of an ``sh``/``bash`` block is
collected; a doc's commands run in order, in one bash session, against the test server,
as a fresh user who stands in for "alice". What a command needs that the doc takes as
given (an environment or a database made earlier in the doc, the server's gateway port, a
flypper-sqlalchemy table to import from) is put in place first (``PREPARE``);
``SUBSTITUTIONS`` lists every change made to a command, and nothing else is changed.
Where a console block shows a command's output, each line shown must be in what the
command printed.

Two kinds of line are checked without being run: ``pip install`` of one of millpond's
extras (the extra must exist: installing from the package registry is not a test), and
the benchmarks' commands (``docs/benchmarks.md``: each takes minutes; the script must
exist and accept every option the doc gives it). ``apt-get install`` lines are left to the
machine."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from _shell import run_script
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GENERATED = {"cli.md"}  # usage lines written from the commands themselves (gen_docs.py)
OWN_TEST = {"clusters.md": "tests/clusters/test_docs.py"}
"""Docs whose commands need more than the test server (a server admin, a second Postgres):
they run in the test named, in the same way (:func:`run_doc`)."""
FLYPPER_URL = "postgresql+psycopg://app:…@db/app"
SUBSTITUTIONS = {
    "README.md": {
        "port=5433": "port={gateway_port}",
        "http://127.0.0.1:8000": "{url}",
        "admin/shop": "alice/shop",  # the admin's database of the README's Python: the user's
    },
    "gateway.md": {"port=5433": "port={gateway_port}"},
    "compat.md": {FLYPPER_URL: "{flypper_url}"},
}
"""Per doc: text of a command → what it becomes (formatted with the test's values)."""
PREPARE = {
    "README.md": ["millpond db create notes", "millpond db create shop"],
    "compat.md": ["millpond flags environments create production"],
    "events.md": ["millpond flags environments create production"],
    "gateway.md": ["millpond db create shop"],
    "modules.md": ["millpond db create chat"],
}
"""Per doc: what it takes as given (set up in the doc's earlier prose or Python), run first."""
ERROR_ENVELOPE = re.compile(r'"error":\s*\{')
PIP_EXTRA = re.compile(r"""^pip install (?:-e )?["']?(?:millpond|\.)\[(?P<extra>[\w,-]+)\]["']?$""")


def blocks(text: str) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """Each shell block of a doc: (language, [(command, the output lines it shows)])."""
    found = []
    for lang, body in re.findall(r"```(console|sh|bash)\n(.*?)```", text, flags=re.S):
        commands: list[tuple[str, list[str]]] = []
        for line in body.splitlines():
            if lang == "console":
                if line.startswith("$ "):
                    commands.append((line[2:], []))
                elif commands and line.strip():
                    commands[-1][1].append(line.strip())
            elif commands and commands[-1][0].endswith("\\"):  # a continued line
                commands[-1] = (commands[-1][0][:-1] + line.strip(), [])
            elif line.strip() and not line.lstrip().startswith("#"):
                commands.append((line.rstrip(), []))
        found.append((lang, commands))
    return found


def doc_commands(name: str) -> list[tuple[str, list[str]]]:
    if name == "README.md":  # its console block is test_readme.py's; its set-up lines
        # (./scripts/up, ./scripts/test) are test_up.py's and CI's own
        found = blocks((ROOT / name).read_text())
        return [
            c
            for lang, commands in found
            if lang != "console"
            for c in commands
            if not c[0].startswith("./scripts/")
        ]
    return [c for _, commands in blocks((DOCS / name).read_text()) for c in commands]


def docs_with_commands() -> list[str]:
    skipped = GENERATED | set(OWN_TEST) | {"benchmarks.md"}
    docs = [p.name for p in DOCS.glob("*.md") if p.name not in skipped]
    return sorted(d for d in [*docs, "README.md"] if doc_commands(d))


def extras() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project["optional-dependencies"])


def test_the_docs_have_commands() -> None:
    """The parametrized test below runs these; a doc that gains a command is in it."""
    assert {"compat.md", "events.md", "flags.md", "gateway.md", "modules.md"} <= set(
        docs_with_commands()
    )


@pytest.mark.parametrize("doc", docs_with_commands())
def test_a_docs_commands_run(
    doc: str,
    server: ServerThread,
    make_user: Callable[..., tuple[str, str]],
    tmp_path: Path,
) -> None:
    name, key = make_user(prefix="docs")
    values = {"gateway_port": str(server.settings.gateway_port), "url": server.url}
    if doc == "compat.md":
        values["flypper_url"] = shlex.quote(_flypper_table(server, name))
    run_doc(doc, server, name, key, tmp_path, values)


def run_doc(
    doc: str,
    server: ServerThread,
    name: str,
    key: str,
    tmp_path: Path,
    values: dict[str, str],
    env_extra: dict[str, str] | None = None,
) -> None:
    """Run ``doc``'s commands in order in one bash session against ``server`` as the user
    ``name`` (for "alice") with ``key``; check what each printed (see the module's
    docstring)."""
    commands: list[tuple[str, list[str]]] = []
    for command, shown in doc_commands(doc):
        for text, replacement in SUBSTITUTIONS.get(doc, {}).items():
            command = command.replace(text, replacement.format(**values))
        commands.append((re.sub(r"\balice\b", name, command), shown))
    script = ["set -euo pipefail", *(re.sub(r"\balice\b", name, c) for c in PREPARE.get(doc, []))]
    outputs = tmp_path / "out"
    outputs.mkdir()
    ran: list[tuple[int, str, list[str]]] = []
    for n, (command, shown) in enumerate(commands):
        pip = PIP_EXTRA.match(command)
        if pip:  # never installed from the registry: the extra must be one of ours
            assert set(pip["extra"].split(",")) <= extras(), command
            continue
        if command.startswith("apt-get "):
            continue
        script.append(f"echo {shlex.quote(command)} > {outputs}/{n}.cmd")
        script.append(f"{command} < /dev/null > {outputs}/{n}.out")
        ran.append((n, command, shown))
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # paths in the docs are the repo's
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILLPOND_", "PG"))}
    env |= {
        "MILLPOND_URL": server.url,
        "MILLPOND_API_KEY": key,
        "MILLPOND_CONFIG_DIR": str(tmp_path / "config"),
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        **(env_extra or {}),
    }
    result = run_script(script, env, tmp_path, timeout=300)
    done = len(list(outputs.glob("*.out")))
    failed = ran[done - 1][1] if done else "(before the first)"
    assert result.returncode == 0, f"{failed}\n{result.stderr}"
    assert done == len(ran)
    for n, command, shown in ran:
        text = (outputs / f"{n}.out").read_text()
        assert not ERROR_ENVELOPE.search(text), (command, text)  # curl exits 0 on a 4xx
        printed = {line.strip() for line in text.splitlines()}
        missing = [line for line in shown if line not in printed]
        assert not missing, (command, missing, printed)


def _flypper_table(server: ServerThread, name: str) -> str:
    """A database holding flypper-sqlalchemy's table with the two flags compat.md imports;
    its SQLAlchemy URL."""
    pg = EmbeddedPostgres(server.settings.data_dir)
    database = f"flypper_{name}"
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"'.encode())
    with psycopg.connect(pg.url(database), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE flypper_flags (name text PRIMARY KEY, data json, version int);"
            " INSERT INTO flypper_flags VALUES"
            """ ('flag_name', '{"enabled": true, "deleted": false}', 1),"""
            """ ('other_flag_name', '{"enabled": false, "deleted": false}', 2)"""
        )
    return pg.url(database).replace("postgresql://", "postgresql+psycopg://", 1)


# -- docs/benchmarks.md ---------------------------------------------------------------------

BENCHMARK = re.compile(r"(?:^|[/\s])(?P<script>\w+\.py)\b(?P<args>.*)$")


def benchmark_commands() -> list[str]:
    return [c for c, _ in doc_commands("benchmarks.md")]


def test_every_benchmark_is_documented() -> None:
    """Each script of benchmarks/ has its command in docs/benchmarks.md."""
    named = {m["script"] for c in benchmark_commands() if (m := BENCHMARK.search(c))}
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_")}
    assert scripts <= named, sorted(scripts - named)


# Runs each benchmark given on the command line with ``--help``, one after another in this
# one interpreter (they share their imports: one interpreter each took ~20 s on 2 cores),
# and prints {script: [exit code, what it printed]} as JSON.
HELPS = """
import contextlib, io, json, runpy, sys
sys.path.insert(0, ".")
texts = {}
for script in sys.argv[1:]:
    sys.argv, printed, code = [script, "--help"], io.StringIO(), None
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exit:
            code = exit.code
    texts[script] = [code, printed.getvalue()]
print(json.dumps(texts))
"""


def test_the_benchmark_commands_name_what_exists() -> None:
    """Every benchmark command of docs/benchmarks.md names a script that exists and
    accepts every option the doc gives it (in its comment too); the stress script and
    the test it is given exist; pip lines name our extras."""
    uses: list[tuple[str, str, list[str]]] = []
    for command in benchmark_commands():
        if command.startswith("apt-get "):
            continue
        if pip := PIP_EXTRA.match(command.split("#")[0].strip()):
            assert set(pip["extra"].split(",")) <= extras(), command
            continue
        if command.startswith("./scripts/"):
            script, *args = shlex.split(command.split("#")[0])
            assert (ROOT / script).is_file(), command
            assert all((ROOT / a).exists() for a in args if "/" in a), command
            continue
        match = BENCHMARK.search(command.replace("cd benchmarks && ../", ""))
        assert match, f"not a benchmark command: {command}"
        path = ROOT / "benchmarks" / match["script"]
        assert path.is_file(), command
        options = re.findall(r"(?<![\w-])(--[a-z][\w-]*)", match["args"])
        uses.append((command, match["script"], options))
    scripts = sorted({script for _, script, _ in uses})
    done = subprocess.run(
        [sys.executable, "-c", HELPS, *scripts],
        cwd=ROOT / "benchmarks",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    texts = json.loads(done.stdout)
    for script, (code, text) in texts.items():
        assert code == 0, (script, text)
    for command, script, options in uses:
        unknown = [o for o in options if o not in texts[script][1]]
        assert not unknown, (command, unknown)
