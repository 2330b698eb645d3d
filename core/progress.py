"""Progress reporting: a rich live display on a terminal, plain log lines otherwise.

Strategies receive a :class:`ProgressReporter` in their options and call it from any
thread. Progress goes to stderr; stdout is kept for results (``scan --json``).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO


class ProgressReporter(Protocol):
    """Events a strategy reports. Every method may be called from any thread."""

    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def image_started(self, image: str, total_bytes: int | None = None) -> None: ...

    def image_bytes(self, image: str, count: int) -> None: ...

    def image_done(self, image: str, detail: str = "") -> None: ...

    def image_failed(self, image: str, message: str) -> None: ...

    def close(self) -> None: ...


class SilentProgress:
    """Reports nothing (the default for library use and tests)."""

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
    """A live display: one bar per image in flight and the bytes moved in total."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self._console = Console(file=self._stream)
        self._progress = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=self._console,
            transient=True,
        )
        self._tasks: dict[str, int] = {}
        self._total = self._progress.add_task("total", total=None)
        self._started = time.monotonic()
        self._progress.start()

    def _line(self, text: str) -> None:
        self._console.print(text, highlight=False, markup=False)

    def image_started(self, image: str, total_bytes: int | None = None) -> None:
        with self._lock:
            if image not in self._tasks:
                self._tasks[image] = self._progress.add_task(image, total=total_bytes)
            else:
                self._progress.update(self._tasks[image], total=total_bytes)

    def image_bytes(self, image: str, count: int) -> None:
        with self._lock:
            task = self._tasks.get(image)
        if task is not None:
            self._progress.advance(task, count)
        self._progress.advance(self._total, count)

    def _finish(self, image: str) -> None:
        with self._lock:
            task = self._tasks.pop(image, None)
        if task is not None:
            self._progress.remove_task(task)

    def image_done(self, image: str, detail: str = "") -> None:
        self._finish(image)
        super().image_done(image, detail)

    def image_failed(self, image: str, message: str) -> None:
        self._finish(image)
        super().image_failed(image, message)

    def close(self) -> None:
        self._progress.stop()
        super().close()


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
