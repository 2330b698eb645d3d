"""Writing blobs safely: stream into a partial file, verify, then rename into place.

A blob only ever appears at its final path whole and verified (length and sha256), so an
interrupted run never leaves corrupt content where a registry would serve it. A partial
file survives an interruption and is resumed: its bytes are hashed again and the download
continues from its length.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

from sealpy.core.errors import DigestMismatchError
from sealpy.core.image.media import Descriptor
from sealpy.core.transport.confined import ConfinedRoot

CHUNK = 1 << 20  # 1 MiB: constant memory whatever the blob size


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
        if confined is None:
            partial.parent.mkdir(parents=True, exist_ok=True)
            mode = "r+b" if resume and partial.exists() else "w+b"
            self._file = open(partial, mode)  # noqa: SIM115 - closed in commit/close
        else:
            # Opened without following a symlink anywhere below the root; the directory
            # stays open for the rename at commit.
            flags = os.O_RDWR | os.O_CREAT | (0 if resume else os.O_TRUNC)
            self._dir_fd, fd = confined.open_file(partial, flags)
            self._file = os.fdopen(fd, "r+b")
        if resume:
            self._rehash()
        self.offset = self._file.tell()

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
        self._file.close()
        final = self._final_path(actual)
        if self._confined is None:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.partial, final)
        else:
            assert self._dir_fd is not None
            self._confined.replace(self._dir_fd, self.partial.name, final)
        self._close_dir()
        self._remove_partial_dir()
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
        self.close()
        if self._confined is None:
            self.partial.unlink(missing_ok=True)
        else:
            self._confined.remove(self.partial)
        self._remove_partial_dir()

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
) -> None:
    """Let ``source`` fill ``writer`` (resuming from what it holds), then commit it; an
    unfinished partial stays for the next run."""
    try:
        source.fetch_blob(descriptor, writer, on_bytes)
        writer.commit()
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
