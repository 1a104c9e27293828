"""What the sync and async ``databases.backup``/``restore`` share (no network here):
reading a backup file's head, the file a backup is written to, and the progress bar.
The file's layout is ``models/backups.py``'s."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

import httpx

from ..errors import MillpondError
from ..models.backups import MAX_HEAD_BYTES, BackupManifest, NotABackup, parse_head
from ._base import Retry
from ._progress import ProgressBar

FileInput = str | os.PathLike[str] | IO[bytes]
"""A path, or a binary file object (open for reading, or for writing)."""

CHUNK = 1024 * 1024
_HEAD_STEP = 64 * 1024


def read_manifest(file: str | os.PathLike[str]) -> BackupManifest:
    """The manifest of the database backup in ``file`` (``MillpondError`` if it is not
    one this millpond reads)."""
    with open(file, "rb") as stream:
        return read_head(stream, os.fspath(file))[0]


def read_head(stream: IO[bytes], name: str) -> tuple[BackupManifest, bytes]:
    """The manifest at the start of ``stream``, and the bytes read to find it (they are
    sent first: ``stream`` need not be seekable)."""
    head = b""
    while True:
        chunk = stream.read(_HEAD_STEP)
        head += chunk
        try:
            parsed = parse_head(head[:MAX_HEAD_BYTES])
        except NotABackup as exc:
            raise MillpondError(f"{name}: {exc}") from None
        if parsed is not None:
            return parsed[0], head
        if not chunk:
            raise MillpondError(f"{name}: not a millpond database backup (it ends too soon)")


def manifest_of(head: bytes, db: str) -> BackupManifest | None:
    """The manifest at the start of a backup of ``db`` being received (None: not all
    of it yet)."""
    try:
        parsed = parse_head(head[:MAX_HEAD_BYTES])
    except NotABackup as exc:
        raise MillpondError(f"the server's answer is not a backup of {db}: {exc}") from None
    return None if parsed is None else parsed[0]


def complete(manifest: BackupManifest | None, db: str) -> BackupManifest:
    """The manifest of a backup received to its end (``MillpondError``: there was none)."""
    if manifest is None:
        raise MillpondError(f"the backup of {db} ended before its archive")
    return manifest


def open_input(file: FileInput) -> tuple[IO[bytes], IO[bytes] | None]:
    """The stream to read, and the file opened here (for the caller to close), if any."""
    if isinstance(file, str | os.PathLike):
        opened = open(file, "rb")  # noqa: SIM115 - the caller closes it
        return opened, opened
    return file, None


def position_of(stream: IO[bytes]) -> int | None:
    """Where ``stream`` is, if it can be read again from there (None: it cannot)."""
    try:
        return stream.tell() if stream.seekable() else None
    except (OSError, ValueError, AttributeError):
        return None


def rewind(stream: IO[bytes], position: int | None, bar: ProgressBar) -> None:
    """Back to ``position``, to send the file again."""
    assert position is not None
    stream.seek(position)
    bar.restart()


def retry_or_raise(outcome: object) -> Retry:
    """What ``Attempts.after_response`` made of an error answer: a :class:`Retry` (it
    raises the error otherwise)."""
    assert isinstance(outcome, Retry)
    return outcome


def no_read_limit(timeout: httpx.Timeout) -> httpx.Timeout:
    """``timeout`` with no limit on waiting for the answer (a restore takes what it takes)."""
    return httpx.Timeout(timeout.connect, read=None, write=timeout.write, pool=timeout.pool)


def name_of(file: FileInput) -> str:
    if isinstance(file, str | os.PathLike):
        return os.fspath(file)
    name = getattr(file, "name", None)
    return name if isinstance(name, str) else "the backup file"


def size_of(file: FileInput) -> int | None:
    """The file's size when it can be known (for the progress bar)."""
    try:
        if isinstance(file, str | os.PathLike):
            return os.path.getsize(file)
        return os.fstat(file.fileno()).st_size or None
    except (OSError, ValueError, AttributeError):
        return None


class Output:
    """Where a backup goes: a path (written to ``<path>.part``, renamed when the backup
    is complete, removed when it is not) or a binary file object the caller owns."""

    def __init__(self, file: FileInput) -> None:
        self.path = Path(file) if isinstance(file, str | os.PathLike) else None
        self.partial = None if self.path is None else self.path.with_name(self.path.name + ".part")
        self.stream: IO[bytes]
        if self.partial is not None:
            fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            self.stream = os.fdopen(fd, "wb")
        else:
            assert not isinstance(file, str | os.PathLike)
            self.stream = file
        self.written = 0

    def write(self, chunk: bytes) -> None:
        self.stream.write(chunk)
        self.written += len(chunk)

    def finish(self) -> None:
        if self.path is not None and self.partial is not None:
            self.stream.close()
            os.replace(self.partial, self.path)

    def abandon(self) -> None:
        if self.partial is not None:
            self.stream.close()
            self.partial.unlink(missing_ok=True)
