"""The machine-wide blob cache: every blob and manifest sealpy fetched, stored once by
digest and shared by every build context and every sealpy process on the machine.

Under its root (``--cache-dir``, ``SEALPY_CACHE_DIR``, default ``$XDG_CACHE_HOME/sealpy``)::

    blobs/sha256/<hex>     the content (blobs, configs and manifests), read-only (0444)
    records/sha256/<hex>   what sealpy knows of it: size, inode, mtime, ctime, media type;
                           the record's own mtime is the last use (for ``cache prune``)
    partial/sha256/<hex>   a download in progress, locked by its writer

A blob enters as every blob sealpy writes does (streamed, hashed, renamed into place
only once verified; see :class:`~sealpy.core.transport.blobio.BlobWriter`): a blob that
another process is downloading is waited for, not fetched twice, and a killed download
leaves a partial that is resumed, never taken as a blob.

Into a destination a cached blob goes as a hard link where the destination is on the
cache's filesystem, else as a reflink (``FICLONE``) where the filesystem has them, else as
a verified copy — chosen per destination filesystem (:class:`Placement`). A hard link
shares the inode with every context it went into, and root ignores read-only modes, so a
tool writing into ``<context>/registry`` could change a cached blob: each use compares
the blob's inode, size, mtime and ctime with its record and hashes it again when they
differ (a blob that fails is removed and fetched again). The cache's own bookkeeping
never uses the blobs' inode times, which every linked context shares.

Every use of one digest (checking, linking, recording, pruning) holds an exclusive
``flock`` on its record, so ``cache prune`` never removes a blob another process is
linking right now.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sealpy.core.errors import DigestMismatchError, SealpyError
from sealpy.core.image.media import Descriptor, Manifest, digest_hex
from sealpy.core.reference import SHA256_RE
from sealpy.core.transport.blobio import CHUNK, BlobWriter, receive_into, stream_into
from sealpy.core.transport.confined import ConfinedRoot
from sealpy.core.transport.placement import Placement

if TYPE_CHECKING:
    from sealpy.core.transport.copy import ImageDestination, ImageSource, Received

CACHE_DIR_ENV = "SEALPY_CACHE_DIR"
READ_ONLY = 0o444
RECORD_SIZE = 256  # bytes: a record is padded to it (see _write_record)


class BlobCacheError(SealpyError):
    """The cache directory cannot be used."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/sealpy``, else ``~/.cache/sealpy``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "sealpy"


def open_blob_cache(setting: str | None = None) -> BlobCache | None:
    """The cache a command uses: ``setting`` (``--cache-dir``), else ``SEALPY_CACHE_DIR``,
    else the default; ``none`` (any case) or an empty value turns it off."""
    value = setting if setting is not None else os.environ.get(CACHE_DIR_ENV)
    if value is not None and value.strip().lower() in ("", "none"):
        return None
    cache = BlobCache(Path(value).expanduser() if value is not None else default_cache_dir())
    cache.check()  # a cache that cannot be used is one clear error now, not one per image
    return cache


@runtime_checkable
class BlobPlacer(Protocol):
    """A destination that can take a cached blob as a file (a hard link or a reflink)
    rather than as a stream of bytes: a directory on the local disk."""

    def place_blob(self, descriptor: Descriptor, cached: Path, placement: Placement) -> str:
        """Put the verified file ``cached`` at the blob's final path; the method used."""
        ...


@dataclass(frozen=True)
class CacheInfo:
    """What ``sealpy cache info`` shows."""

    root: Path
    blobs: int
    bytes: int
    partial_bytes: int


@dataclass(frozen=True)
class PruneResult:
    removed: int
    freed: int
    kept_busy: int  # in use by another process right now
    remaining: int
    remaining_bytes: int


class _CacheSource:
    """The cache as an image source of blobs (for a destination that copies)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get_manifest(self, reference: str) -> Manifest:  # pragma: no cover - never asked
        raise SealpyError("the blob cache serves blobs only")

    def fetch_blob(self, descriptor: Descriptor, writer: BlobWriter, on_bytes=None) -> None:
        with open(self.path, "rb") as f:
            stream_into(f, writer)


class BlobCache:
    """A content-addressed store of verified blobs and manifests (see the module)."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = Path(root).absolute()
        self.durable = durable
        self.confined = ConfinedRoot(self.root, what="blob cache")
        self._ready = False
        self._placement: Placement | None = None
        self._init_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BlobCache({str(self.root)!r})"

    # --- paths ---------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest_hex(digest)

    def _record_path(self, digest: str) -> Path:
        return self.root / "records" / "sha256" / digest_hex(digest)

    def _partial_path(self, digest: str) -> Path:
        return self.root / "partial" / "sha256" / digest_hex(digest)

    def check(self) -> None:
        """Create the cache's directories, or raise :class:`BlobCacheError` saying why not."""
        self._ensure()
        if not os.access(self.root / "blobs" / "sha256", os.W_OK):
            raise BlobCacheError(
                f"cannot write to the blob cache {self.root} "
                "(choose another with --cache-dir, or --cache-dir none)"
            )

    def _ensure(self) -> None:
        if self._ready:
            return
        with self._init_lock:
            try:
                for sub in ("blobs", "records", "partial"):
                    (self.root / sub / "sha256").mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BlobCacheError(
                    f"cannot use the blob cache {self.root}: {exc.strerror or exc} "
                    "(choose another with --cache-dir, or --cache-dir none)"
                ) from None
            self._ready = True

    @property
    def placement(self) -> Placement:
        if self._placement is None:
            self._ensure()
            self._placement = Placement(os.stat(self.root / "blobs").st_dev)
        return self._placement

    def placement_summary(self) -> list[str]:
        """How cached blobs went into each destination so far (see :class:`Placement`)."""
        return self._placement.summary() if self._placement is not None else []

    # --- the record lock -----------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, digest: str, *, wait: bool = True) -> Iterator[int | None]:
        """The digest's record, open and exclusively locked (``None`` when ``wait`` is
        false and another process holds it). The file locked is the one the name still
        points to: ``prune`` may remove it meanwhile."""
        self._ensure()
        path = self._record_path(digest)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                flags = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
                try:
                    fcntl.flock(fd, flags)
                except BlockingIOError:
                    os.close(fd)
                    yield None
                    return
                try:
                    same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        try:
            yield fd
        finally:
            os.close(fd)  # releases the lock

    @staticmethod
    def _read_record(fd: int) -> dict:
        data = os.pread(fd, 4096, 0)
        try:
            record = json.loads(data) if data else {}
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def _write_record(self, fd: int, st: os.stat_result, media_type: str) -> None:
        record = {
            "size": st.st_size,
            "ino": st.st_ino,
            "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns,
            "media_type": media_type,
        }
        # Padded to a fixed size and written in place: no truncation (a journaled
        # operation costing ~0.35 ms a record here). Also the last use: its mtime.
        data = json.dumps(record, sort_keys=True).encode()
        if len(data) > RECORD_SIZE:  # (a very long media type) nothing may trail it
            os.ftruncate(fd, 0)
        os.pwrite(fd, data.ljust(RECORD_SIZE), 0)

    # --- lookup --------------------------------------------------------------------------

    def _checked(self, fd: int, descriptor: Descriptor) -> os.stat_result | None:
        """The cached blob's stat if it is there and still what was verified (re-hashed
        when its record does not match; removed when the hash fails). Under the lock."""
        path = self.blob_path(descriptor.digest)
        st = self.confined.lstat(path)
        if st is None or not _is_regular(st):
            return None
        record = self._read_record(fd)
        unchanged = record and all(
            record.get(k) == v
            for k, v in (
                ("size", st.st_size),
                ("ino", st.st_ino),
                ("mtime_ns", st.st_mtime_ns),
                ("ctime_ns", st.st_ctime_ns),
            )
        )
        if not unchanged:
            if not self._hash_matches(path, descriptor):
                self.confined.remove(path)
                return None
            st = self._read_only(path, st)
            self._write_record(fd, st, descriptor.media_type or record.get("media_type", ""))
        else:
            os.utime(fd)  # last use
        return st

    def _read_only(self, path: Path, st: os.stat_result) -> os.stat_result:
        """Make a cached file read-only (through a descriptor: never via a symlink)."""
        if st.st_mode & 0o777 == READ_ONLY:
            return st
        with self.confined.open_read(path) as f:
            os.fchmod(f.fileno(), READ_ONLY)
            return os.fstat(f.fileno())

    def _hash_matches(self, path: Path, descriptor: Descriptor) -> bool:
        h = hashlib.sha256()
        size = 0
        try:
            with self.confined.open_read(path) as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
        except (OSError, SealpyError):
            return False
        if descriptor.size and size != descriptor.size:
            return False
        return "sha256:" + h.hexdigest() == descriptor.digest

    def has(self, descriptor: Descriptor) -> bool:
        """Whether the blob is cached intact (checked as for a use)."""
        with self._locked(descriptor.digest) as fd:
            assert fd is not None
            return self._checked(fd, descriptor) is not None

    # --- the engine's entry point --------------------------------------------------------

    def receive(
        self,
        destination: ImageDestination,
        descriptor: Descriptor,
        source: ImageSource,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Received | None:
        """Put one blob into ``destination``, from the cache when it has it, else from
        ``source`` by way of the cache. :attr:`Received.REUSED` when no byte was read from
        ``source``. ``on_bytes`` counts bytes read from ``source`` (``0`` while waiting for
        another process's download: it may raise to stop).

        A destination that takes links gets one under the record's lock (so that a prune
        waits), and the record is written once, after the link changed the blob's ctime."""
        from sealpy.core.transport.copy import Received

        placer = destination if isinstance(destination, BlobPlacer) else None
        fetched = False
        with self._locked(descriptor.digest) as fd:
            assert fd is not None
            cached = self._checked(fd, descriptor) is not None
            if cached and placer is not None and self._link(fd, placer, descriptor):
                return Received.REUSED
        if not cached:
            fetched = self._download(descriptor, source, on_bytes)
            with self._locked(descriptor.digest) as fd:
                assert fd is not None
                if self._landed(fd, descriptor, fetched) is None:
                    raise SealpyError(f"blob {descriptor.digest} left the cache while in use")
                if placer is not None and self._link(fd, placer, descriptor):
                    return None if fetched else Received.REUSED
        destination.receive_blob(descriptor, _CacheSource(self.blob_path(descriptor.digest)))
        return None if fetched else Received.REUSED

    def _download(
        self,
        descriptor: Descriptor,
        source: ImageSource,
        on_bytes: Callable[[int], None] | None,
    ) -> bool:
        """The blob from ``source`` into the cache (verified, renamed into place); False
        when another process landed it while this one waited for the partial."""
        wait = (lambda: on_bytes(0)) if on_bytes is not None else None
        writer = BlobWriter(
            self._partial_path(descriptor.digest),
            self.blob_path,
            digest=descriptor.digest,
            size=descriptor.size,
            media_type=descriptor.media_type,
            durable=self.durable,
            confined=self.confined,
            wait=wait,
        )
        return receive_into(writer, descriptor, source, on_bytes)

    def _landed(self, fd: int, descriptor: Descriptor, fetched: bool) -> os.stat_result | None:
        """After a download (under the lock): the blob made read-only and recorded when
        this process fetched it; checked like any cached blob when another one did."""
        if not fetched:
            return self._checked(fd, descriptor)
        path = self.blob_path(descriptor.digest)
        st = self.confined.lstat(path)
        if st is None:
            return None
        st = self._read_only(path, st)
        self._write_record(fd, st, descriptor.media_type)
        return st

    def _link(self, fd: int, placer: BlobPlacer, descriptor: Descriptor) -> bool:
        """A checked cached blob into ``placer`` (under the lock) by link or reflink, the
        record following the ctime that changed; False when only a copy would do."""
        path = self.blob_path(descriptor.digest)
        if placer.place_blob(descriptor, path, self.placement) == "copy":
            return False
        st = self.confined.lstat(path)
        if st is not None:
            self._write_record(fd, st, descriptor.media_type)
        return True

    def _fill(
        self,
        descriptor: Descriptor,
        source: ImageSource,
        on_bytes: Callable[[int], None] | None = None,
    ) -> bool:
        """Make sure the cache holds the blob (no destination); True when fetched."""
        with self._locked(descriptor.digest) as fd:
            assert fd is not None
            if self._checked(fd, descriptor) is not None:
                return False
        fetched = self._download(descriptor, source, on_bytes)
        with self._locked(descriptor.digest) as fd:
            assert fd is not None
            self._landed(fd, descriptor, fetched)
        return fetched

    # --- manifests -----------------------------------------------------------------------

    def get_manifest(self, digest: str) -> Manifest | None:
        """The manifest with that digest, if cached (verified by its digest)."""
        if not SHA256_RE.match(digest) or self.confined.lstat(self.blob_path(digest)) is None:
            return None  # (looked up first: a miss leaves no record behind)
        with self._locked(digest) as fd:
            assert fd is not None
            record = self._read_record(fd)
            try:
                data = self.confined.read_bytes(self.blob_path(digest))
            except (OSError, SealpyError):
                return None
            os.utime(fd)
        try:
            return Manifest.parse(data, record.get("media_type"), expected_digest=digest)
        except (SealpyError, DigestMismatchError):
            return None

    def put_manifest(self, manifest: Manifest) -> None:
        """Keep a manifest fetched from a registry, by its digest."""
        self._ensure()
        path = self.blob_path(manifest.digest)
        with self._locked(manifest.digest) as fd:
            assert fd is not None
            if self.confined.lstat(path) is None:
                tmp = f".{digest_hex(manifest.digest)}.{os.getpid()}-{threading.get_ident()}.tmp"
                # Not synced: a manifest is checked against its digest on every read.
                self.confined.write_atomically(path, manifest.data, tmp, durable=False)
            st = self.confined.lstat(path)
            if st is not None:
                self._write_record(fd, self._read_only(path, st), manifest.media_type)

    # --- info and prune ------------------------------------------------------------------

    def _entries(self) -> list[tuple[str, float, int]]:
        """``(digest, last use, size)`` of every cached blob."""
        entries = []
        blobs = self.root / "blobs" / "sha256"
        records = self.root / "records" / "sha256"
        for name in self.confined.listdir(blobs):
            digest = f"sha256:{name}"
            if not SHA256_RE.match(digest):
                continue
            st = self.confined.lstat(blobs / name)
            if st is None or not _is_regular(st):
                continue
            record = self.confined.lstat(records / name)
            used = record.st_mtime if record is not None else st.st_mtime
            entries.append((digest, used, st.st_size))
        return entries

    def info(self) -> CacheInfo:
        entries = self._entries() if self.root.is_dir() else []
        partial = 0
        partials = self.root / "partial" / "sha256"
        for name in self.confined.listdir(partials) if self.root.is_dir() else []:
            st = self.confined.lstat(partials / name)
            partial += st.st_size if st is not None else 0
        return CacheInfo(self.root, len(entries), sum(e[2] for e in entries), partial)

    def prune(
        self,
        *,
        max_size: int | None = None,
        older_than: float | None = None,
        everything: bool = False,
    ) -> PruneResult:
        """Remove blobs, least recently used first: all (``everything``), those unused for
        ``older_than`` seconds, then more until the cache holds at most ``max_size``
        bytes. A blob another process holds right now is kept. Unfinished downloads no
        process is writing go too."""
        if not self.root.is_dir():
            return PruneResult(0, 0, 0, 0, 0)
        entries = sorted(self._entries(), key=lambda e: e[1])
        total = sum(e[2] for e in entries)
        now = time.time()
        removed = freed = busy = 0
        for digest, used, size in entries:
            wanted = (
                everything
                or (older_than is not None and now - used > older_than)
                or (max_size is not None and total > max_size)
            )
            if not wanted:
                continue
            with self._locked(digest, wait=False) as fd:
                if fd is None:
                    busy += 1
                    continue
                self.confined.remove(self.blob_path(digest))
                self.confined.remove(self._record_path(digest))
            removed += 1
            freed += size
            total -= size
        self._prune_partials()
        self._prune_orphan_records()
        left = self._entries()
        return PruneResult(removed, freed, busy, len(left), sum(e[2] for e in left))

    def _prune_orphan_records(self) -> None:
        """Records whose blob never landed (a failed download) or is gone."""
        records = self.root / "records" / "sha256"
        blobs = self.root / "blobs" / "sha256"
        for name in self.confined.listdir(records):
            if not SHA256_RE.match(f"sha256:{name}") or self.confined.lstat(blobs / name):
                continue
            with self._locked(f"sha256:{name}", wait=False) as fd:
                if fd is not None and self.confined.lstat(blobs / name) is None:
                    self.confined.remove(records / name)

    def _prune_partials(self) -> None:
        partials = self.root / "partial" / "sha256"
        for name in self.confined.listdir(partials):
            path = partials / name
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a download in progress
            try:
                self.confined.remove(path)
            finally:
                os.close(fd)


def _is_regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)
