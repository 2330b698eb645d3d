"""Progress reporting: a rich live display on a terminal, plain log lines otherwise.

Strategies receive a :class:`ProgressReporter` in their options and call it from any
thread. Progress goes to stderr; stdout is kept for results (``scan --json``).
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO, runtime_checkable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID


class ProgressReporter(Protocol):
    """Events a strategy reports. Every method may be called from any thread."""

    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def image_started(self, image: str, total_bytes: int | None = None) -> None: ...

    def image_bytes(self, image: str, count: int) -> None: ...

    def image_done(self, image: str, detail: str = "") -> None: ...

    def image_failed(self, image: str, message: str) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class PlannedProgress(Protocol):
    """A reporter that wants the number of images before the first starts (the pipeline
    tells it, when it has this method), so that its overall count is right from the start."""

    def plan(self, images: int) -> None: ...


class SilentProgress:
    """Reports nothing (the default for library use and tests)."""

    def plan(self, images: int) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass

    def image_started(self, image: str, total_bytes: int | None = None) -> None:
        pass

    def image_bytes(self, image: str, count: int) -> None:
        pass

    def image_done(self, image: str, detail: str = "") -> None:
        pass

    def image_failed(self, image: str, message: str) -> None:
        pass

    def close(self) -> None:
        pass


class PlainProgress(SilentProgress):
    """One log line per event, for CI logs and pipes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._done = 0
        self._failed = 0
        self._closed = False

    def _line(self, text: str) -> None:
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()

    def info(self, message: str) -> None:
        self._line(f"info {message}")

    def warning(self, message: str) -> None:
        self._line(f"warn {message}")

    def image_started(self, image: str, total_bytes: int | None = None) -> None:
        self._line(f"info caching {image}")

    def image_done(self, image: str, detail: str = "") -> None:
        with self._lock:
            self._done += 1
        self._line(f"info cached {image}{' (' + detail + ')' if detail else ''}")

    def image_failed(self, image: str, message: str) -> None:
        with self._lock:
            self._failed += 1
        self._line(f"error {image}: {message}")

    def close(self) -> None:
        """A run that failed gets no summary from its caller (an error is raised instead):
        say here what did complete, so the user knows what a re-run will reuse."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            done, failed = self._done, self._failed
        if failed:
            self._line(f"info {_count(done, 'image')} cached, {failed} failed")


class RichProgress(PlainProgress):
    """A live display on a terminal: one overall row (images done/total, bytes done/total)
    and one row per image whose bytes are moving, at most ``max_rows`` of them.

    An image gets a row at its first byte and loses it when it is done or failed, so
    queued images and images whose blobs were all present never take a line (hundreds of
    images fit). Bytes an image did not have to move (blobs the destination had, or that
    another image fetched) count as done when the image is done, so the overall bar ends
    full. The live display starts at the first image: a run that caches nothing never
    hides the cursor. ``console`` is for tests (a fake terminal)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        console: Console | None = None,
        max_rows: int = 8,
    ) -> None:
        super().__init__(stream)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
        )

        self._console = console or Console(file=self._stream)
        self._progress = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(),
            DownloadColumn(),
            _speed_column(),
            console=self._console,
            transient=True,
        )
        self._max_rows = max(0, max_rows)
        self._planned: int | None = None
        self._images: dict[str, _Image] = {}
        self._rows: dict[str, TaskID] = {}  # image -> task, in the order rows were added
        self._total = self._progress.add_task("", total=None)
        self._live = False
        self._stopped = False

    def plan(self, images: int) -> None:
        with self._lock:
            self._planned = images
            self._refresh_total()

    def _line(self, text: str) -> None:
        self._console.print(text, highlight=False, markup=False)

    def image_started(self, image: str, total_bytes: int | None = None) -> None:
        with self._lock:
            state = self._images.setdefault(image, _Image())
            state.total = total_bytes
            task = self._rows.get(image)
            if task is not None:
                self._progress.update(task, total=total_bytes)
            self._refresh_total()
            self._start()

    def image_bytes(self, image: str, count: int) -> None:
        with self._lock:
            state = self._images.setdefault(image, _Image())
            state.moved += count
            task = self._rows.get(image)
            if task is None and not state.finished:
                task = self._progress.add_task(
                    image, total=state.total, completed=state.moved - count
                )
                self._rows[image] = task
                self._show_rows()
            if task is not None:
                self._progress.advance(task, count)
            self._progress.advance(self._total, count)
            self._start()

    def _finish(self, image: str, *, failed: bool) -> None:
        with self._lock:
            state = self._images.setdefault(image, _Image())
            if not state.finished:
                state.finished, state.failed = True, failed
                if not failed and state.total is not None and state.total > state.moved:
                    # Present or shared blobs: their bytes are done without moving.
                    self._progress.advance(self._total, state.total - state.moved)
            task = self._rows.pop(image, None)
            if task is not None:
                self._progress.remove_task(task)
                self._show_rows()
            self._refresh_total()

    def image_done(self, image: str, detail: str = "") -> None:
        self._finish(image, failed=False)
        super().image_done(image, detail)

    def image_failed(self, image: str, message: str) -> None:
        self._finish(image, failed=True)
        super().image_failed(image, message)

    def close(self) -> None:
        with self._lock:
            live, self._live, self._stopped = self._live, False, True
        if live:
            self._progress.stop()
        super().close()

    def refresh(self) -> None:
        """Draw now (the display otherwise redraws itself several times a second)."""
        if self._live:
            self._progress.refresh()

    # --- with the lock held -------------------------------------------------------------

    def _start(self) -> None:
        if not self._live and not self._stopped:
            self._live = True
            self._progress.start()

    def _show_rows(self) -> None:
        """The first ``max_rows`` transfers get a row; the others move the overall bar only
        until a row is free."""
        for index, task in enumerate(self._rows.values()):
            self._progress.update(task, visible=index < self._max_rows)

    def _refresh_total(self) -> None:
        """Overall: images finished out of all (planned, else started so far); the bytes'
        total once every image's size is known (a failed image's unmoved bytes leave it)."""
        states = self._images.values()
        done = sum(s.finished and not s.failed for s in states)
        failed = sum(s.failed for s in states)
        images = max(self._planned or 0, len(self._images))
        known = all(s.total is not None for s in states) and len(self._images) >= images
        total = None
        if known:
            total = sum(s.moved if s.failed else max(s.total or 0, s.moved) for s in states)
        text = f"{done}/{images} images"
        if failed:
            text += f" ({failed} failed)"
        self._progress.update(self._total, description=text, total=total)


def _speed_column():
    """rich's transfer speed, blank (not ``?``) until a speed is measured."""
    from rich.progress import TransferSpeedColumn
    from rich.text import Text

    class SpeedColumn(TransferSpeedColumn):
        def render(self, task):  # type: ignore[no-untyped-def]
            return super().render(task) if task.speed is not None else Text("")

    return SpeedColumn()


@dataclass
class _Image:
    """What the display knows of one image: its size once its manifests are in."""

    total: int | None = None
    moved: int = 0
    finished: bool = False
    failed: bool = False


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def progress_for(stream: TextIO | None = None, *, quiet: bool = False) -> ProgressReporter:
    """A rich display when ``stream`` is a terminal, plain lines otherwise."""
    stream = stream or sys.stderr
    if quiet:
        return SilentProgress()
    if stream.isatty():
        return RichProgress(stream)
    return PlainProgress(stream)
