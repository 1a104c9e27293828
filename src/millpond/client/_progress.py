"""The SDK's one progress bar (no network here): on stderr, rich's when rich is
installed, shown only while ``enabled`` (the CLI enables it on a terminal)."""

from __future__ import annotations

from typing import Any

from ..models.transfer import ExportJob, ImportJob


class ProgressBar:
    """A job's bytes and rows (``rows=True``: imports and export jobs), or bytes sent or
    received, of ``total`` when it is known (streamed exports, backups, restores)."""

    def __init__(
        self, enabled: bool, label: str, rows: bool = True, total: int | None = None
    ) -> None:
        self._bar: Any = None
        self._task: Any = None
        if not enabled:
            return
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TransferSpeedColumn,
            )
        except ImportError:  # pragma: no cover - rich comes with the SDK
            return
        counts: list[Any] = [DownloadColumn(), TransferSpeedColumn()]
        if rows:
            counts = [BarColumn(), *counts, TextColumn("{task.fields[rows]} rows")]
        elif total is not None:
            counts = [BarColumn(), *counts]
        self._bar = Progress(
            TextColumn("{task.description}"),
            *counts,
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(label, total=total, rows=0)

    def update(self, job: ImportJob | ExportJob) -> None:
        """A job's progress, as the server reports it."""
        if self._bar is None:
            return
        total = getattr(job, "bytes_total", None)
        done = job.bytes_done
        if job.state == "DONE" and total:
            done = total
        self._bar.update(
            self._task,
            total=total or None,
            completed=done,
            rows=job.rows_done,
            description=job.state.lower(),
        )

    def received(self, size: int) -> None:
        """``size`` bytes in all so far."""
        if self._bar is not None:
            self._bar.update(self._task, completed=size)

    def advance(self, count: int) -> None:
        """``count`` bytes more."""
        if self._bar is not None:
            self._bar.update(self._task, advance=count)

    def restart(self) -> None:
        """From zero again (a retried transfer)."""
        if self._bar is not None:
            self._bar.reset(self._task)

    def phase(self, label: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=label)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
