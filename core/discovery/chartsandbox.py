"""The render sandbox, scanning side: one child process renders every chart of a scan.

A chart is a program: ``{{ range until 100000000 }}`` runs for minutes, ``{{ repeat
2000000000 "x" }}`` asks for 2 GB, and Go answers an allocation it cannot satisfy with a
fatal error and a 180-line trace that ends the whole process. So charts are rendered in a
freshly spawned Python process (:mod:`sealpy.core.discovery.chartworker`) — never a fork of
this one, where a Go runtime may already run — bounded in memory and, per chart, in time.
Its death becomes one :class:`~sealpy.core.errors.ContextError` naming the chart; what it
wrote on stderr (Go's trace) goes to a temporary file and is only read to say why.

The worker is started on the first chart (a context without charts never starts one) and
serves every chart of the scan; it costs about 60–100 ms to start. This process never
imports the Helm library.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import IO

from sealpy.core.errors import ContextError
from sealpy.core.model import RenderOptions

WORKER_MODULE = "sealpy.core.discovery.chartworker"
MEMORY_ENV = "SEALPY_CHART_MEMORY"
TIMEOUT_ENV = "SEALPY_CHART_TIMEOUT"
# A reply carries findings and warnings, not rendered text: more than this is not a chart
# anyone meant (millions of bad `image:` lines), and is refused rather than held in memory.
MAX_REPLY_BYTES = 64 << 20
_STDERR_TAIL = 16 << 10


def format_size(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):g} {unit}"
    return f"{size} bytes"


class RenderWorker:
    """The child process rendering charts; a context manager that always ends it."""

    def __init__(self, options: RenderOptions) -> None:
        self.options = options
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def __enter__(self) -> RenderWorker:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # On an error or an interrupt, the worker may be mid-render: do not wait for it.
        self.close(kill=kind is not None)

    def _start(self) -> subprocess.Popen[bytes]:
        if self._process is not None:
            return self._process
        from sealpy.core.auth import CREDS_ENV

        limit = self.options.memory_limit
        # Helm's templates cannot read the environment (it removes sprig's env functions);
        # credentials stay out of the worker's all the same.
        environment = {k: v for k, v in os.environ.items() if k != CREDS_ENV}
        # Go's own soft limit makes its collector work harder before the hard one is hit,
        # and its trace, should it die, stays short.
        environment["GOMEMLIMIT"] = str(limit * 3 // 4)
        environment["GOTRACEBACK"] = "single"
        # Kept open across requests and closed by close(): no `with` block fits.
        self._stderr = tempfile.TemporaryFile(prefix="sealpy-chartworker-")  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                WORKER_MODULE,
                "--memory-limit",
                str(limit),
                "--parent",
                str(os.getpid()),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=environment,
            # Its own session: a Ctrl-C reaches sealpy, which ends the worker itself.
            start_new_session=True,
        )
        return self._process

    def close(self, *, kill: bool = False) -> None:
        """End the worker: let it finish (closing its input ends it), or ``kill`` it."""
        process, self._process = self._process, None
        if process is not None:
            if kill and process.poll() is None:
                process.kill()
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def render(self, request: dict, label: str) -> dict:
        """Send one request; the reply, or a :class:`ContextError` about chart ``label``
        (its path relative to the context) when the worker fails, dies or overruns."""
        process = self._start()
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(json.dumps(request).encode() + b"\n")
            process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died(label) from None
        reply = self._read_reply(process, label)
        if reply.get("memory"):
            self.close()
            raise ContextError(self._memory_message(label))
        return reply

    def _read_reply(self, process: subprocess.Popen[bytes], label: str) -> dict:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        deadline = time.monotonic() + self.options.timeout
        buffer = bytearray()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self._kill()
                    raise ContextError(
                        f"chart {label} does not render: still rendering after "
                        f"{self.options.timeout:g} s (the limit per chart; set {TIMEOUT_ENV} "
                        "to change it)"
                    )
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise self._died(label)
                buffer += chunk
                if len(buffer) > MAX_REPLY_BYTES:
                    self._kill()
                    raise ContextError(
                        f"chart {label}: its render yields more than "
                        f"{format_size(MAX_REPLY_BYTES)} of findings and warnings; not scanned"
                    )
        return json.loads(bytes(buffer))

    def _kill(self) -> None:
        self.close(kill=True)

    def _died(self, label: str) -> ContextError:
        """The worker ended without replying: say why, from its exit and its stderr."""
        process = self._process
        assert process is not None
        try:
            code = process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        tail = self._stderr_tail()
        self.close()
        if "out of memory" in tail or "MemoryError" in tail or "cannot allocate memory" in tail:
            return ContextError(self._memory_message(label))
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        cause = next(
            (line.strip() for line in tail.splitlines() if line.startswith("fatal error")),
            next((line.strip() for line in reversed(tail.splitlines()) if line.strip()), ""),
        )
        return ContextError(
            f"chart {label} does not render: the render process died ({how})"
            + (f": {cause}" if cause else "")
        )

    def _stderr_tail(self) -> str:
        """The first line (Go's ``fatal error: …``) and the last part of its stderr."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        head = self._stderr.readline(512)
        size = self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(len(head), size - _STDERR_TAIL))
        return (head + self._stderr.read()).decode("utf-8", errors="replace")

    def _memory_message(self, label: str) -> str:
        return (
            f"chart {label} does not render: it needs more than "
            f"{format_size(self.options.memory_limit)} of memory (the render process's limit; "
            f"set {MEMORY_ENV} to change it)"
        )
