"""The Python examples of ``docs/*.md`` run (the README's have ``test_readme.py``).

A doc's ``python`` blocks run in order, in one namespace, against the test server, as a
fresh user who stands in for "alice" (``MILLPOND_URL`` and ``MILLPOND_API_KEY`` set;
``HOME`` and the working directory a folder of the test's own, where what the blocks write
goes: ``~/.chat-token``, ``app.db``). What a block needs that the doc takes as given (an
environment, a database and its tables, the bindings ``millpond generate`` writes, a key
bound to an environment in the variable the doc reads it from) is put in place first:
``PREPARE`` (millpond commands, run in-process) and ``BOUND_KEYS``. ``SUBSTITUTIONS``
lists every change made to a block, and nothing else is changed. A block with ``await``
at its top level is compiled as asyncio's REPL compiles a line
(``PyCF_ALLOW_TOP_LEVEL_AWAIT``: the block is the body of a coroutine whose names are the
namespace's) and run on the doc's one event loop; its text is not changed.

The blocks of docs/modules.md that show the module's source (``MODULE_SOURCE``) run on the
server: they are the module ``chat.py``, published as the doc says before its client
blocks run. Results a doc's comments give are checked after it (``SHOWN``). Every client,
connection and engine a doc opened is closed after it (ResourceWarnings are errors)."""

from __future__ import annotations

import ast
import asyncio
import functools
import inspect
import linecache
import re
import shlex
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from schematic.client import Schematic
from typer.testing import CliRunner

from millpond import AsyncMillpond, Millpond
from millpond.cli import app
from millpond.flags import SqlAlchemyFlagStore
from millpond.server.testing import ServerThread

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent> *)```python\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
SUBSTITUTIONS = {
    "api.md": {"http://127.0.0.1:8000": "{url}"},
    "compat.md": {"http://millpond.example:8000": "{url}", '"127.0.0.1:8000"': '"{host}"'},
    "gateway.md": {"port=5433": "port={gateway_port}"},
    "modules.md": {"http://127.0.0.1:8000": "{url}"},
    "sdk.md": {"gateway_port=5433": "gateway_port={gateway_port}"},
}
"""Per doc: text of a block → what it becomes (formatted with the test's values); in every
doc, "alice" becomes the fresh user's name."""
PRODUCTION = "millpond flags environments create production"
PREPARE = {
    "api.md": [PRODUCTION],
    "compat.md": [  # and the commands of the doc's own shell block, above its SpacetimeDB one
        PRODUCTION,
        "millpond db create chatqs --public",
        "millpond publish alice/chatqs examples/chat/chat_module.py",
        "millpond generate alice/chatqs --lang spacetimedb-python --out module_bindings",
    ],
    "events.md": [PRODUCTION],
    "gateway.md": ["millpond db create shop"],
    "modules.md": [  # anonymous identities need a public database
        "millpond db create chat --public",
        "millpond publish alice/chat chat.py",
        "millpond generate alice/chat --out chat_bindings",
    ],
    "openfeature.md": [  # the flag of docs/flags.md's shell example, on for acme
        PRODUCTION,
        """millpond companies upsert id=acme -e production --traits '{"seats": 10}'""",
        'millpond flags create new-editor -e production --rules \'[{"value": true,'
        ' "conditions": [{"condition_type": "trait", "trait_key": "seats",'
        ' "operator": "gte", "trait_value": 10}]}]\'',
    ],
    "sdk.md": [
        PRODUCTION,
        "millpond db create chat",
        "millpond query -d alice/chat -q"
        " 'CREATE TABLE msgs (id int PRIMARY KEY, room int, body text, author text)'",
        "millpond query -d alice/chat -q"
        """ "INSERT INTO msgs VALUES (1, 7, 'hi', 'ann'), (2, 8, 'bye', 'bob')" """,
        "millpond db create shop",
        "millpond query -d alice/shop -q 'CREATE TABLE orders (id int)'",
    ],
}
"""Per doc: what it takes as given (its earlier prose and shell blocks), run first."""
BOUND_KEYS = {
    "api.md": ("write", ["SCHEMATIC_API_KEY"]),
    "compat.md": ("write", ["MILLPOND_API_KEY", "SCHEMATIC_API_KEY"]),
    "openfeature.md": ("read", ["MILLPOND_API_KEY"]),
}
"""Per doc: a key bound to "production" (its scope), in the variables its blocks read."""
MODULE_SOURCE = {"modules.md": (1, 2, 3, 4)}
"""Per doc: the blocks that are the module's source, written (in order) to ``chat.py``."""
SHOWN = {
    "openfeature.md": [
        '(details.value, details.reason, details.variant) == (True, "TARGETING_MATCH", "on")',
        'details.flag_metadata["millpond_reason"] == "RULE_MATCH"',
    ],
    "sdk.md": ["result.data == [{'one': 1}]"],
    "transfer.md": [
        "Path(done.path).stat().st_size == done.size_bytes > 100_000",
        "not list(Path().glob('broken.csv*'))",  # (the export failed: no file)
    ],
}
"""Per doc: what its comments say of the names it leaves, true after it."""


def python_blocks(name: str) -> list[str]:
    text = (DOCS / name).read_text()
    return [textwrap.dedent(match["body"]) for match in FENCE.finditer(text)]


def docs_with_python() -> list[str]:
    return sorted(path.name for path in DOCS.glob("*.md") if python_blocks(path.name))


def test_the_docs_have_python() -> None:
    """The parametrized test below runs these; a doc that gains a block is in it."""
    assert docs_with_python() == [
        "api.md",
        "compat.md",
        "databases.md",
        "events.md",
        "flags.md",
        "gateway.md",
        "modules.md",
        "openfeature.md",
        "sdk.md",
        "transfer.md",
    ]
    for doc, numbers in MODULE_SOURCE.items():
        assert max(numbers) <= len(python_blocks(doc))


@pytest.mark.parametrize("doc", docs_with_python())
def test_a_docs_python_runs(
    doc: str,
    server: ServerThread,
    make_user: Callable[..., tuple[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, key = make_user(prefix="pydocs")
    values = {
        "url": server.url,
        "host": server.url.removeprefix("http://"),
        "gateway_port": str(server.settings.gateway_port),
    }
    blocks = []
    for block in python_blocks(doc):
        for text, replacement in SUBSTITUTIONS.get(doc, {}).items():
            block = block.replace(text, replacement.format(**values))
        blocks.append(re.sub(r"\balice\b", name, block))
    for variable in ("MILLPOND_ENVIRONMENT", "MILLPOND_GATEWAY_PORT", "MILLPOND_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MILLPOND_URL", server.url)
    monkeypatch.setenv("MILLPOND_API_KEY", key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # the generated bindings
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # paths in the docs are the repo's
    source = MODULE_SOURCE.get(doc, ())
    if source:
        (tmp_path / "chat.py").write_text("\n\n".join(blocks[n - 1] for n in source))
    _prepare(doc, name, key, server.url, monkeypatch)
    opened = _record_instances(monkeypatch, (Millpond, AsyncMillpond, Schematic))
    modules = set(sys.modules)
    namespace: dict[str, Any] = {"__name__": f"docs_{doc[:-3]}"}
    with asyncio.Runner() as loop:
        try:
            for number, block in enumerate(blocks, 1):
                if number not in source:
                    _run(block, f"docs/{doc} python block {number}", namespace, loop)
            for shown in SHOWN.get(doc, []):
                assert eval(shown, namespace), shown
        finally:
            _close(opened, namespace, loop)
            for module in set(sys.modules) - modules:
                if str(getattr(sys.modules[module], "__file__", "")).startswith(str(tmp_path)):
                    del sys.modules[module]  # the bindings of this test's server


def _prepare(doc: str, name: str, key: str, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    for command in PREPARE.get(doc, []):
        args = shlex.split(re.sub(r"\balice\b", name, command))[1:]
        result = runner.invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, (command, result.output)
    if doc in BOUND_KEYS:
        scope, variables = BOUND_KEYS[doc]
        with Millpond(api_key=key, base_url=url) as mp:
            secret = mp.flags.create_key(environment="production", scope=scope).secret
        for variable in variables:
            monkeypatch.setenv(variable, secret)


def _run(block: str, filename: str, namespace: dict[str, Any], loop: asyncio.Runner) -> None:
    """One block, in the namespace; a block with top-level ``await`` on the doc's loop."""
    linecache.cache[filename] = (len(block), None, block.splitlines(True), filename)
    code = compile(block, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if code.co_flags & inspect.CO_COROUTINE:
        loop.run(eval(code, namespace))
    else:
        exec(code, namespace)


def _record_instances(monkeypatch: pytest.MonkeyPatch, classes: tuple[type, ...]) -> list[Any]:
    """Every instance of ``classes`` made from now on (their ``__init__`` records it)."""
    made: list[Any] = []

    def recording(original: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(original)
        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            made.append(self)

        return init

    for cls in classes:
        monkeypatch.setattr(cls, "__init__", recording(cls.__init__))
    return made


def _close(opened: list[Any], namespace: dict[str, Any], loop: asyncio.Runner) -> None:
    """Close what the doc opened: its clients (closing one twice is harmless), and the
    connections and engines its names hold; OpenFeature's provider is unset."""
    for value in [*opened, *namespace.values()]:
        if isinstance(value, Millpond | psycopg.Connection):
            value.close()
        elif isinstance(value, AsyncMillpond):
            loop.run(value.aclose())
        elif isinstance(value, Schematic):  # its shutdown leaves its httpx client open
            value.shutdown()
            value._client_wrapper.httpx_client.httpx_client.close()
        elif isinstance(value, SqlAlchemyFlagStore) and value.engine is not None:
            value.engine.dispose()
    if "openfeature.api" in sys.modules:
        sys.modules["openfeature.api"].clear_providers()
