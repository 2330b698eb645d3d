"""Writing blobs safely: stream into a partial file, verify, then rename into place.

A blob only ever appears at its final path whole and verified (length and sha256), so an
interrupted run never leaves corrupt content where a registry would serve it. A partial
file survives an interruption and is resumed: its bytes are hashed again and the download
continues from its length.

A resumable partial has a name every writer of that blob shares (so that the next run
finds it), and several processes may write into one directory at once (two `registry
save` of one context). So the writer holds an exclusive ``flock`` on the partial file
itself from opening to the end of its rename: a second writer of the blob waits, then
finds the blob landed (and fetches nothing) or resumes what the first one left. A lock
dies with its process, so a killed run blocks nobody. Writers whose partial has a name of
its own (``resume=False``) take no lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

from sealpy.core.errors import DigestMismatchError
from sealpy.core.image.media import Descriptor
from sealpy.core.transport.confined import ConfinedRoot

CHUNK = 1 << 20  # 1 MiB: constant memory whatever the blob size
LOCK_POLL = 0.05  # seconds between tries while another writer holds a partial


class BlobSource(Protocol):
    def fetch_blob(
        self,
        descriptor: Descriptor,
        writer: BlobWriter,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None: ...


class BlobWriter:
    """Streams one blob into ``partial``; :meth:`commit` verifies and moves it to its place.

    ``final_path`` maps the (verified) digest to the final path; it is called at commit,
    so blobs whose digest is only known afterwards (compressed on the fly) work too.
    With ``confined``, every path is reached without following a symlink below its root.
    With ``resume``, the partial is locked from here until :meth:`commit`, :meth:`close`
    or :meth:`discard` (see the module's docstring); ``wait`` is called while another
    writer holds it and may raise to stop waiting.
    """

    def __init__(
        self,
        partial: Path,
        final_path: Callable[[str], Path],
        *,
        digest: str | None = None,
        size: int | None = None,
        media_type: str = "",
        durable: bool = True,
        resume: bool = True,
        confined: ConfinedRoot | None = None,
        wait: Callable[[], None] | None = None,
    ) -> None:
        self.partial = partial
        self._final_path = final_path
        self.digest = digest
        self.size = size
        self.media_type = media_type
        self._durable = durable
        self._hash = hashlib.sha256()
        self._confined = confined
        self._dir_fd: int | None = None
        self._contended = False  # another writer held the partial, or replaced it
        self._shared = resume  # a name other writers use too: touched only under the lock
        self._committed = False
        if resume:
            # A shared name: another writer may be at it. Lock first, then look.
            self._file = self._open_locked(wait)
            self._rehash()
        else:
            self._file = self._open(os.O_TRUNC)
        self.offset = self._file.tell()

    def _open(self, extra_flags: int = 0):
        """The partial opened for reading and writing (created if missing)."""
        flags = os.O_RDWR | os.O_CREAT | extra_flags
        if self._confined is None:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.partial, flags | os.O_CLOEXEC, 0o666)
        else:
            # Opened without following a symlink anywhere below the root; the directory
            # stays open for the rename at commit.
            self._dir_fd, fd = self._confined.open_file(self.partial, flags)
        return os.fdopen(fd, "r+b")

    def _open_locked(self, wait: Callable[[], None] | None):
        """The partial, opened and exclusively locked. Waits while another writer holds
        it (calling ``wait`` between tries: it may raise to give up). The file locked must
        still be the one the name points to — the holder may have renamed it into place
        or removed it (and its directory) meanwhile; then the name is opened again."""
        for attempt in range(100):
            try:
                file = self._open()
            except FileNotFoundError:
                # Its directory went with another writer's commit after we reached it.
                if attempt == 99:
                    raise
                self._contended = True
                continue
            try:
                while True:
                    try:
                        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        self._contended = True
                        if wait is not None:
                            wait()
                        time.sleep(LOCK_POLL)
                if self._names(file):
                    return file
                self._contended = True
            except BaseException:
                file.close()
                self._close_dir()
                raise
            file.close()
            self._close_dir()
        raise OSError(errno.EAGAIN, "another writer keeps replacing it", str(self.partial))

    def _names(self, file) -> bool:
        """Whether the partial's name still points to the open ``file``."""
        try:
            if self._dir_fd is not None:
                st = os.stat(self.partial.name, dir_fd=self._dir_fd, follow_symlinks=False)
            else:
                st = os.stat(self.partial, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(file.fileno())
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def landed(self) -> bool:
        """Whether the blob (of known digest) is at its final path already: another
        writer finished it while this one waited for the partial. Only looked up after a
        wait (a lookup of a missing file costs ~40 µs: a blob landing between the
        caller's own check and the lock is fetched again, harmlessly)."""
        if self.digest is None or not self._contended:
            return False
        final = self._final_path(self.digest)
        if self._confined is None:
            return final.is_file()
        return self._confined.is_file(final)

    def _rehash(self) -> None:
        """Hash what an earlier run left, so the download can resume after it."""
        self._file.seek(0)
        while chunk := self._file.read(CHUNK):
            self._hash.update(chunk)
        if self.size is not None and self._file.tell() > self.size:
            self.reset()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, chunk: bytes) -> None:
        if self.size is not None and self.offset + len(chunk) > self.size:
            raise DigestMismatchError(
                f"more than the {self.size} bytes announced", subject=f"blob {self.digest}"
            )
        self._file.write(chunk)
        self._hash.update(chunk)
        self.offset += len(chunk)

    def reset(self) -> None:
        """Start again from zero (the source ignored our Range, or the content was wrong)."""
        self._file.seek(0)
        self._file.truncate()
        self._hash = hashlib.sha256()
        self.offset = 0

    @property
    def complete(self) -> bool:
        return self.size is not None and self.offset == self.size

    def verify(self) -> str:
        """Check length and digest of what was written; a mismatch raises (bytes are kept,
        the caller decides to reset). Returns the actual digest."""
        actual = "sha256:" + self._hash.hexdigest()
        if self.size is not None and self.offset != self.size:
            raise DigestMismatchError(
                f"got {self.offset} bytes, expected {self.size}", subject=f"blob {self.digest}"
            )
        if self.digest is not None and actual != self.digest:
            raise DigestMismatchError(f"content has digest {actual}", subject=f"blob {self.digest}")
        return actual

    def commit(self) -> Descriptor:
        """Verify length and digest, then rename into place. A mismatch discards the bytes."""
        try:
            actual = self.verify()
        except DigestMismatchError:
            self.reset()
            raise
        self._file.flush()
        if self._durable:
            # The content is on disk before its name is: after a power loss a blob may be
            # missing (a re-run fetches it) but never present with wrong content. The
            # directory is not synced: that costs a fsync per blob and only saves a re-fetch.
            os.fsync(self._file.fileno())
        final = self._final_path(actual)
        # Renamed while still open, so still locked: a writer waiting for the partial
        # then finds its name gone and the blob in place. Renaming over a blob another
        # writer landed meanwhile is harmless: the same verified bytes.
        if self._confined is None:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.partial, final)
        else:
            assert self._dir_fd is not None
            self._confined.replace(self._dir_fd, self.partial.name, final)
        self._committed = True
        self._remove_partial_dir()
        self._file.close()
        self._close_dir()
        return Descriptor(self.media_type, actual, self.offset)

    def close(self) -> None:
        """Stop writing; the partial file stays for a later run to resume."""
        if not self._file.closed:
            self._file.close()
        self._close_dir()

    def _close_dir(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def discard(self) -> None:
        """Remove the partial (while still holding it, so no waiting writer resumes a
        file that is going away), then stop."""
        if self._committed or (self._file.closed and self._shared):
            return  # a shared name no longer ours: it may be another writer's partial now
        if self._confined is None:
            self.partial.unlink(missing_ok=True)
        else:
            self._confined.remove(self.partial)
        self._remove_partial_dir()
        self.close()

    def _remove_partial_dir(self) -> None:
        # Partials live in a directory of their own (distribution's _uploads/<id>/data).
        if self.partial.name != "data":
            return
        if self._confined is None:
            with contextlib.suppress(OSError):
                self.partial.parent.rmdir()
        else:
            self._confined.remove_empty_dir(self.partial.parent)


def stream_into(
    source: BinaryIO, writer: BlobWriter, on_bytes: Callable[[int], None] | None = None
) -> None:
    """Copy a local file (a blob in a layout or an archive) into ``writer`` from its start."""
    writer.reset()
    while chunk := source.read(CHUNK):
        writer.write(chunk)
        if on_bytes:
            on_bytes(len(chunk))


def receive_into(
    writer: BlobWriter,
    descriptor: Descriptor,
    source: BlobSource,
    on_bytes: Callable[[int], None] | None = None,
) -> bool:
    """Let ``source`` fill ``writer`` (resuming from what it holds), then commit it; an
    unfinished partial stays for the next run. Returns False, having fetched nothing, when
    another writer landed the blob while this one waited for its partial."""
    try:
        if writer.landed():
            writer.discard()
            return False
        source.fetch_blob(descriptor, writer, on_bytes)
        writer.commit()
        return True
    finally:
        writer.close()


class HashingTee:
    """Passes bytes to ``target`` while hashing and counting them (the uncompressed tar on
    its way into gzip: its digest is the layer's diff_id)."""

    def __init__(self, target) -> None:
        self.target = target
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)

    def flush(self) -> None:
        pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def write_bytes_atomically(
    path: Path, data: bytes, *, durable: bool = False, confined: ConfinedRoot | None = None
) -> None:
    """Write a small file (a link, a manifest) so readers see all of it or none of it;
    with ``confined``, without following a symlink below its root."""
    tmp_name = f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp"
    if confined is not None:
        confined.write_atomically(path, data, tmp_name, durable=durable)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(tmp_name)
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
