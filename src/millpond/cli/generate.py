"""``millpond generate``: typed bindings of a database's published module."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ..codegen import GenerateError, is_generated
from ..codegen import generate as generate_files
from ._context import database_name, fail, state
from ._output import OutputFormat, plural, to_json


class Language(StrEnum):
    python = "python"
    json = "json"
    spacetimedb_python = "spacetimedb-python"


DEFAULT_OUT = {
    Language.python: Path("module_bindings"),
    Language.json: Path("."),
    Language.spacetimedb_python: Path("module_bindings"),
}


def generate(
    ctx: typer.Context,
    database: Annotated[
        str,
        typer.Argument(metavar="OWNER/NAME", help="The database.", callback=database_name),
    ],
    lang: Annotated[
        Language,
        typer.Option(
            "--lang",
            help="python: a package of typed bindings; json: the module's schema as "
            "schema.json (for other languages' tools); spacetimedb-python: the files "
            "SpacetimeDB 0.7's generator wrote, for the unmodified spacetimedb-sdk 0.7 "
            "(docs/compat.md).",
        ),
    ] = Language.python,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Where to write: the package's folder (default: ./module_bindings) for "
            "python, the folder of schema.json (default: .) for json.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write typed bindings of the module running in a database, for its clients.

    \b
        millpond generate alice/chat --out chat_bindings
        python -c "from chat_bindings import Module, Message"

    The python package has a frozen dataclass per table with typed lookups of the realtime
    cache (Message.iter(rt), User.find(rt, key), Message.filter_by_sender(rt, ...)) and
    typed row callbacks, Module(mp, db) / AsyncModule(amp, db) with a method per reducer,
    and typed reducer callbacks (on_send_message(rt, cb)); it passes mypy --strict. Each
    file says which module version it was made from: generate again after a publish. Files
    generated before are replaced; any other file in the way is left alone and nothing is
    written.
    """
    st = state(ctx)
    folder = out if out is not None else DEFAULT_OUT[lang]
    with st.client() as mp:
        schema = mp.modules.schema(database)
    if not schema.get("definition"):
        fail(f"{database} has no module: publish one with `millpond publish {database} PATH`")
    try:
        files = generate_files(lang.value, schema, database)
    except GenerateError as exc:
        fail(f"cannot generate bindings of {database}'s module: {exc}")
    written, removed = _write(folder, files, stale=lang is not Language.json)
    if st.format is OutputFormat.json:
        typer.echo(
            to_json(
                {
                    "database": database,
                    "version": schema["version"],
                    "lang": lang.value,
                    "out": str(folder),
                    "files": written,
                    "removed": removed,
                }
            )
        )
        return
    gone = f"; removed {plural(len(removed), 'stale file')}" if removed else ""
    typer.echo(
        f"wrote {plural(len(written), 'file')} to {folder} from {database}'s module version "
        f"{schema['version']}{gone}"
    )


def _write(folder: Path, files: dict[str, str], stale: bool) -> tuple[list[str], list[str]]:
    """Write ``files`` into ``folder``: refuse (writing nothing) if one would replace a file
    not generated; with ``stale``, remove generated ``.py`` files no longer made."""
    if folder.exists() and not folder.is_dir():
        fail(f"{folder} is not a folder")
    blocked = [
        str(folder / name)
        for name in files
        if (folder / name).exists() and not _generated(folder / name)
    ]
    if blocked:
        fail(
            f"not overwriting {', '.join(blocked)}: not written by millpond generate (move it "
            "away or choose another --out)"
        )
    old = []
    if stale and folder.is_dir():
        old = [p for p in sorted(folder.glob("*.py")) if p.name not in files and _generated(p)]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        for path in old:
            path.unlink()
    except OSError as exc:
        fail(f"cannot write the bindings: {exc}")
    return [str(folder / name) for name in files], [str(p) for p in old]


def _generated(path: Path) -> bool:
    try:
        return path.is_file() and is_generated(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return False
