"""Supervising skopeo for the ``sync`` strategy: its configuration, runs and failures.

* Configuration: an environment without secrets, a registries.conf (the user's mirrors,
  and ``insecure`` for hosts reached over plain HTTP or unverified TLS) in the private
  directory, and credentials in an auth file that exists only in memory
  (:class:`MemoryAuthFile`).
* Runs (:class:`SkopeoRunner`): a skopeo is stopped only when it stalls (no bytes read
  or written for the retry policy's read timeout: :class:`ActivityWatch`), never for
  taking long; its output is relayed line by line (:class:`OutputRelay`); a failed run
  is retried as a whole, with the registry client's retry policy (a
  :class:`~sealpy.core.transport.http.retry.Retrier`: its backoff and its failing-time
  budget), unless its error is permanent (:func:`is_permanent`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from sealpy.core.auth import Credential
from sealpy.core.containers import (
    MirrorTable,
    RegistryTable,
    authfile_document,
    credential_entries,
    write_registries_conf,
)
from sealpy.core.errors import RegistryError, SealpyError
from sealpy.core.hosts import HostPolicy, host_of
from sealpy.core.model import CacheOptions, ImageSet
from sealpy.core.process import child_environment, popen_tied, stop
from sealpy.core.progress import ProgressReporter
from sealpy.core.registries import Endpoint
from sealpy.core.transport.http.retry import Retrier
from sealpy.strategies.sync.bounds import OVERSIZED

SKOPEO_BINARY = "skopeo"
SKOPEO_RETRY_TIMES = 3
GO_GC_PERCENT = 400


# --- configuration ------------------------------------------------------------------------


def go_tuning() -> dict[str, str]:
    """Go runtime settings for the registry and skopeo, unless the user set their own.

    Both are short-lived and allocate per request; the registry's garbage collector took
    a quarter of its CPU time on many small images (measured: 0.70 s -> 0.52 s of CPU for
    16 images with GOGC=400), and on 2 cores that CPU is the bottleneck. Memory stays
    small: both stream blobs through fixed buffers, so the live heap is a few MiB."""
    return {} if "GOGC" in os.environ else {"GOGC": str(GO_GC_PERCENT)}


def skopeo_environment(images: ImageSet, options: CacheOptions, private: Path) -> dict[str, str]:
    """skopeo's environment: ours without secrets, and a registries.conf in ``private``."""
    env = {**child_environment(own_authfile=True), **go_tuning()}
    conf = private / "registries.conf"
    write_registries_conf(conf, registry_tables(options.hosts, _endpoints(images, options)))
    # skopeo 1.9.3 ignores CONTAINERS_REGISTRIES_CONF (checked): it also gets the
    # hidden --registries-conf flag, which it honours. Paths only: no secret on argv.
    env["CONTAINERS_REGISTRIES_CONF"] = str(conf)
    return env


def _endpoints(images: ImageSet, options: CacheOptions) -> dict[str, Endpoint]:
    endpoints: dict[str, Endpoint] = {}
    for ref in images.references:
        for endpoint in options.hosts.endpoints(ref):
            endpoints.setdefault(endpoint.host, endpoint)
    return endpoints


def registry_tables(hosts: HostPolicy, endpoints: dict[str, Endpoint]) -> list[RegistryTable]:
    """registries.conf for skopeo: the user's mirrors, and ``insecure`` for every host the
    host policy lets us reach over plain HTTP or unverified TLS (containers/image has no
    loopback rule). An entry's own ``insecure`` flag stands for its location, as
    containers/image reads it per entry."""
    registries = hosts.registries

    def insecure(flag: bool, location: str) -> bool:
        return hosts.plain_http_allowed(host_of(location), marked=flag)

    tables: list[RegistryTable] = []
    for entry in registries.entries:
        mirrors = tuple(
            MirrorTable(m.location, insecure(m.insecure, m.location), m.pull_from_mirror)
            for m in entry.mirrors
        )
        tables.append(
            RegistryTable(
                entry.location,
                insecure(entry.insecure, entry.location),
                prefix=entry.prefix,
                blocked=entry.blocked,
                mirrors=mirrors,
            )
        )
    seen = {entry.prefix for entry in registries.entries}
    for host in endpoints:
        if host not in seen and hosts.plain_http_allowed(host):
            tables.append(RegistryTable(host, insecure=True))
    return tables


def auth_entries(images: ImageSet, options: CacheOptions) -> dict[str, Credential]:
    """One auth.json entry per source repository, mirrors included: two repositories of
    one registry may need different credentials."""
    scopes = [
        (endpoint.host, endpoint.repository)
        for ref in images.references
        for endpoint in options.hosts.endpoints(ref)
    ]
    return credential_entries(options.hosts, scopes, per_repository=True)


class MemoryAuthFile:
    """An auth file that lives in memory only (``memfd_create``): a killed sealpy leaves
    nothing on disk. Each skopeo inherits the descriptor and reads :attr:`path`.
    Close it once no skopeo will start any more."""

    def __init__(self, entries: dict[str, Credential]) -> None:
        fd = os.memfd_create("sealpy-auth.json", os.MFD_CLOEXEC)
        if fd < 3:
            # Started with a standard descriptor closed: the child's stdin/stdout/stderr
            # set-up would replace ours. Move it out of their way.
            moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
            os.close(fd)
            fd = moved
        self.fd = fd
        self.entries = dict(entries)
        try:
            os.fchmod(fd, 0o600)
            self._write()
        except OSError:
            self.close()
            raise

    def add(self, key: str, credential: Credential) -> None:
        """Add an entry (the run's own local registry, once it runs), before a skopeo
        that needs it starts: the file is rewritten in place."""
        self.entries[key] = credential
        os.ftruncate(self.fd, 0)
        self._write()

    def _write(self) -> None:
        data = authfile_document(self.entries)
        written = 0
        while written < len(data):
            written += os.pwrite(self.fd, data[written:], written)

    @property
    def path(self) -> str:
        """The file's path as seen by a child that was given the descriptor."""
        return f"/proc/self/fd/{self.fd}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --- runs ---------------------------------------------------------------------------------


class SkopeoRunner:
    """Runs skopeo commands for one cache run, from several threads at once.

    ``env`` must name the registries.conf (``CONTAINERS_REGISTRIES_CONF``); ``authfile``
    holds the source credentials; ``private`` is a directory only this run uses (each
    worker thread's blob-info cache goes there). :meth:`cancel` stops every running
    skopeo and every retry. ``retrier`` is the retry policy in action (default: one for
    ``options.retry``; the strategy passes its registry client's)."""

    def __init__(
        self,
        env: dict[str, str],
        authfile: MemoryAuthFile,
        options: CacheOptions,
        private: Path,
        retrier: Retrier | None = None,
    ) -> None:
        self.env = env
        self.authfile = authfile
        self.options = options
        self.private = private
        self.retrier = retrier or options.transport.retrier()
        self.skopeo = shutil.which(SKOPEO_BINARY) or SKOPEO_BINARY
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()

    def cancel(self) -> None:
        """Interrupted: stop every skopeo now instead of waiting for it to finish."""
        self.cancelled.set()
        with self._lock:
            running = list(self._running)
        for process in running:
            stop(process, grace=2.0)

    def command(
        self, global_flags: list[str], verb: str, flags: list[str], operands: list[str]
    ) -> list[str]:
        """The skopeo command line: paths and flags only, never a secret."""
        retries = min(SKOPEO_RETRY_TIMES, max(0, self.retrier.policy.attempts - 1))
        return [
            self.skopeo,
            "--registries-conf",
            self.env["CONTAINERS_REGISTRIES_CONF"],
            *global_flags,
            verb,
            # copy reads both ends' credentials from --authfile; sync needs each named.
            *(
                ["--src-authfile", self.authfile.path, "--dest-authfile"]
                if verb == "sync"
                else ["--authfile"]
            ),
            self.authfile.path,
            "--retry-times",
            str(retries),
            "--dest-tls-verify=false",
            *flags,
            *operands,
        ]

    def run(
        self,
        label: str,
        global_flags: list[str],
        verb: str,
        flags: list[str],
        operands: list[str],
        *,
        retries: int | None = None,
        bound: Callable[[], str | None] | None = None,
    ) -> None:
        """Run ``skopeo VERB``, retrying the whole command (skopeo 1.9 does not retry a
        truncated manifest body itself) as the client retries a request: attempts bounded
        (``retries``, else the policy's), the pause between them and the time allowed for
        failing as the :attr:`retrier` says. A failed ``copy`` raises
        :class:`RegistryError`; a failed ``sync`` returns, as its caller copies what the
        batch did not deliver image by image. ``bound`` is asked every tenth of a second
        while skopeo runs: what it answers stops the skopeo, as an error never retried
        (:class:`~sealpy.strategies.sync.bounds.UploadBound`)."""
        policy = self.retrier.policy
        command = self.command(global_flags, verb, flags, operands)
        attempts = max(1, policy.attempts if retries is None else retries)
        last = ""
        budget = self.retrier.budget()
        for attempt in range(attempts):
            if self.cancelled.is_set():
                raise SealpyError("interrupted")
            started = time.monotonic()
            returncode, last, last_active = self.attempt(label, command, bound)
            if returncode == 0:
                return
            # As in the client, time spent failing counts from the last progress: the first
            # failure's last activity, then an attempt that kept moving for a while (longer
            # than any backoff) moves it; quick failures (refused, 5xx at once) do not.
            if attempt == 0 or last_active - started > policy.max_backoff:
                budget.progress(at=last_active)
            # A refused token may just have expired: one fresh skopeo gets a new one.
            give_up = is_permanent(last) and not (attempt == 0 and is_auth_failure(last))
            if self.cancelled.is_set() or give_up or attempt == attempts - 1:
                break
            pause = self.retrier.delay(None, attempt + 1)
            if pause > budget.remaining():  # the pause would end past the budget
                last = f"{last} (gave up after {budget.spent():.0f} s)"
                break
            self.cancelled.wait(pause)
        if verb == "sync":
            return
        raise RegistryError(f"skopeo {verb} failed: {last}")

    def attempt(
        self, label: str, command: list[str], bound: Callable[[], str | None] | None = None
    ) -> tuple[int, str, float]:
        """One skopeo run: its progress relayed, stopped only when it stalls (no bytes
        read or written for the read timeout). Returns the exit status, the error and
        when the run was last seen making progress."""
        process = popen_tied(
            command,
            env=self._slot_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            pass_fds=(self.authfile.fd,),
        )
        with self._lock:
            self._running.add(process)
        relay = OutputRelay(label, self.options.progress)
        reader = threading.Thread(target=relay.read, args=(process.stdout,), daemon=True)
        reader.start()
        watch = ActivityWatch(process, relay)
        try:
            stalled = self._wait(process, watch, bound)
        finally:
            if process.poll() is None:
                stop(process)
            reader.join(timeout=5)
            with self._lock:
                self._running.discard(process)
        watch.idle_for()  # brings watch.since up to date
        if process.returncode == 0:
            return 0, "", watch.since
        error = stalled or skopeo_error("\n".join(relay.tail))
        return process.returncode or 1, error, watch.since

    def _wait(
        self,
        process: subprocess.Popen,
        watch: ActivityWatch,
        bound: Callable[[], str | None] | None,
    ) -> str:
        """Wait for ``process`` to exit; stop it when it stalls or ``bound`` objects, and
        then say why."""
        limit = max(1.0, self.retrier.policy.read_timeout)
        # A body that never ends arrives at disk speed: look often while one can.
        poll = 0.1 if bound is not None else min(1.0, limit / 4)
        while True:
            try:
                process.wait(timeout=poll)
                return ""
            except subprocess.TimeoutExpired:
                pass
            overrun = bound() if bound is not None else None
            if overrun:
                stop(process)
                return overrun
            if watch.idle_for() > limit and watch.reliable:
                stop(process)
                return f"skopeo made no progress for {limit:.0f} s (stalled source?)"

    def _slot_env(self) -> dict[str, str]:
        """skopeo's environment for this worker thread.

        Run as root, every skopeo opens one BoltDB blob-info cache under
        /var/lib/containers/cache with an exclusive lock, so parallel copies take turns
        (measured here: 4 at once no faster than 1). Each worker gets a cache of its own in
        the private directory: containers/image puts it under XDG_DATA_HOME when it is told
        (``_CONTAINERS_ROOTLESS_UID``) that it runs rootless; nothing else it does depends
        on that here, as auth file and registries.conf are passed explicitly."""
        slot = threading.current_thread().name.rsplit("_", 1)[-1]
        return {
            **self.env,
            "_CONTAINERS_ROOTLESS_UID": str(os.getuid() or 1),
            "XDG_DATA_HOME": str(self.private / f"slot-{slot}"),
        }


class ActivityWatch:
    """Whether a skopeo is still moving: the bytes it has read and written (from
    /proc/PID/io, which counts socket traffic) or, where that is unreadable, its output."""

    def __init__(self, process: subprocess.Popen, relay: OutputRelay) -> None:
        self.io_path = Path(f"/proc/{process.pid}/io")
        self.relay = relay
        self.last = self._counter()
        self.since = time.monotonic()
        # Without I/O accounting (kernel option, restricted /proc) only output is left,
        # and skopeo prints nothing while a blob streams: never call that a stall.
        self.reliable = len(self.last) > 1

    def _counter(self) -> tuple[int, ...]:
        try:
            fields = dict(
                line.split(":", 1) for line in self.io_path.read_text().splitlines() if ":" in line
            )
            return (int(fields["rchar"]), int(fields["wchar"]), self.relay.lines)
        except (OSError, KeyError, ValueError):
            return (self.relay.lines,)

    def idle_for(self) -> float:
        """Seconds since the process last moved (and :attr:`since` brought up to date)."""
        counter = self._counter()
        if counter != self.last:
            self.last, self.since = counter, time.monotonic()
        return time.monotonic() - self.since


_SYNC_IMAGE = re.compile(r'msg="Copying image ref [^"]*" from="(?:docker://)?([^"]+)"')
_STEP = re.compile(r"^(Copying (?:blob|config)) (sha256:[0-9a-f]{12})[0-9a-f]*(.*)$")


class OutputRelay:
    """skopeo's output as log lines naming the image: ``<image>: copying blob sha256:…``.
    Without a terminal skopeo prints one line per step (no progress bars), so parallel
    skopeos interleave whole lines only. Keeps the last lines for error messages."""

    def __init__(self, label: str, progress: ProgressReporter) -> None:
        self.label = label
        self.progress = progress
        self.tail: list[str] = []
        self.lines = 0

    def read(self, stream: IO[str]) -> None:
        for raw in stream:  # drained to the end: a full pipe would block skopeo
            line = raw.strip()
            self.lines += 1
            if not line:
                continue
            self.tail = [*self.tail[-19:], line]
            message = self._message(line)
            if message:
                with contextlib.suppress(Exception):  # our output may be a broken pipe
                    self.progress.info(f"{self.label}: {message}")

    def _message(self, line: str) -> str | None:
        image = _SYNC_IMAGE.search(line)
        if image:  # skopeo sync moves on to the next image of its batch
            self.label = image.group(1)
            return "copying"
        step = _STEP.match(line)
        if step:
            return f"{step.group(1).lower()} {step.group(2)}{step.group(3)}"
        if line.startswith("Writing manifest"):
            return "writing manifest"
        if line.startswith("Skipping: image already present"):
            return "already present"
        return None


# --- errors -------------------------------------------------------------------------------

# containers/image quotes the whole request URL in its errors ("Patch \"http://…/blobs/
# uploads/…?_state=…\": …"); the state token alone is hundreds of characters.
_QUOTED_QUERY = re.compile(r'("https?://[^"?]*)\?[^"]*"')
_MAX_ERROR = 400


def skopeo_error(output: str) -> str:
    """The error in skopeo's last output line, without log framing or URL queries, and
    at most ``_MAX_ERROR`` characters (its end, where the cause is)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    text = lines[-1] if lines else "no error message"
    for prefix in ('time="', "level=fatal msg="):
        if prefix in text and 'msg="' in text:
            text = text.split('msg="', 1)[1].rsplit('"', 1)[0]
    text = _QUOTED_QUERY.sub(r'\1"', text.replace('\\"', '"'))
    # The cause comes last ("...: digest did not match"): keep the end of a long message.
    return text if len(text) <= _MAX_ERROR else "…" + text[-(_MAX_ERROR - 1) :]


# skopeo reports failures as text only: these never go away by retrying.
_PERMANENT = (
    "manifest unknown",
    "unauthorized",
    "authentication required",
    "denied",
    "no image found in manifest list",
    "not found",
    "invalid reference",
    "no such file",
    OVERSIZED,
)


def is_auth_failure(message: str) -> bool:
    """Whether skopeo's error says the registry refused the credentials."""
    lowered = message.lower()
    return "unauthorized" in lowered or "authentication required" in lowered


def is_permanent(message: str) -> bool:
    """Whether skopeo's error is one a retry cannot fix."""
    lowered = message.lower()
    return any(marker in lowered for marker in _PERMANENT)
