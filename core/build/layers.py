"""Deterministic layer tars, and unpacking tars (image layers, ADD archives) safely.

:func:`write_layer` streams entries through tar → gzip → the store's blob writer, hashing
the uncompressed tar on the way (the ``diff_id``): one file's worth of buffer at a time,
never a whole layer in memory. Everything that could vary between two builds of the same
context is fixed: entry order (sorted), mtime (``SOURCE_DATE_EPOCH``, default 0),
owner (0:0, no user or group names), the PAX format, and the gzip header (mtime 0, no
file name). The same context twice gives the same layer digest. Files that are
compressed already (gzip, zstd, xz, bzip2: the blobs of ``registry/``) go into stored
deflate blocks, which is ten times faster than deflating them again for no gain.

:func:`unpack` is the inverse for ``COPY --from`` and ``ADD``: members land inside the
target directory only (no absolute paths, no ``..``, nothing written through a symlink),
and image layers' whiteouts delete what lower layers had.
"""

from __future__ import annotations

import gzip
import os
import posixpath
import shutil
import stat
import struct
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sealpy.core.build.context import Entry
from sealpy.core.errors import BuildError
from sealpy.core.image.media import OCI_LAYER_GZIP, Descriptor
from sealpy.core.transport.blobio import CHUNK, BlobWriter, HashingTee

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
COMPRESS_LEVEL = 6  # gzip's default
# Data that is compressed already (a cluster image's registry/ is mostly gzip blobs) only
# gets slower through deflate (~50 MiB/s, for nothing): it goes into stored blocks
# instead (GB/s). The choice depends on the file's first bytes only: still deterministic.
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00", b"BZh")
_STORE_FROM = 4096  # smaller files are not worth switching the compressor for
_TAR_BUFFER = 64 << 10  # what tarfile holds back before writing to the sink


@dataclass(frozen=True)
class LayerBlob:
    """A layer written to the store: its descriptor (compressed) and ``diff_id``."""

    descriptor: Descriptor
    diff_id: str
    tar_size: int


class DeterministicGzip:
    """A gzip stream (RFC 1952) whose deflate level can change along the way.

    The deflate stream is made of segments, each from its own raw compressor ended with a
    sync flush (byte-aligned, not final) and the last one with a finish — how pigz joins
    blocks; every inflater reads it as one stream. The header is fixed (no name, mtime 0).
    """

    HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"

    def __init__(self, out: BlobWriter, level: int) -> None:
        self._out = out
        self._level = level
        self._crc = 0
        self._size = 0
        self._current = -1
        self._compressor: Any = None  # a zlib compress object (no public type)
        self.stored = False  # set by the writer: the data now coming is compressed already
        out.write(self.HEADER)

    def write(self, data: bytes) -> int:
        level = 0 if self.stored else self._level
        if level != self._current:
            if self._compressor is not None:
                self._emit(self._compressor.flush(zlib.Z_SYNC_FLUSH))
            self._compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
            self._current = level
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._emit(self._compressor.compress(data))
        return len(data)

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.write(data)

    def close(self) -> None:
        if self._compressor is None:
            self._compressor = zlib.compressobj(self._level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._emit(self._compressor.flush(zlib.Z_FINISH))
        self._out.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))


def tar_info(entry: Entry, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.name + "/" if entry.kind == "dir" else entry.name)
    info.mtime = epoch
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link
    elif entry.kind == "hardlink":
        info.type = tarfile.LNKTYPE
        info.linkname = entry.link
    else:
        info.type = tarfile.REGTYPE
        info.size = entry.size
    return info


def write_layer(
    entries: Iterable[Entry], new_writer, *, epoch: int = 0, level: int = COMPRESS_LEVEL
) -> LayerBlob:
    """Write ``entries`` (already sorted) as a gzip layer through ``new_writer(media_type)``
    (a store's :meth:`new_blob_writer`); the blob lands only once complete."""
    writer: BlobWriter = new_writer(OCI_LAYER_GZIP)
    try:
        gz = DeterministicGzip(writer, level)
        sink = HashingTee(gz)
        with tarfile.open(
            fileobj=sink,
            mode="w|",
            format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
            bufsize=_TAR_BUFFER,
        ) as tar:
            for entry in entries:
                _add(tar, entry, epoch, gz)
        gz.close()
        descriptor = writer.commit()
    except BaseException:
        writer.discard()
        raise
    return LayerBlob(descriptor, "sha256:" + sink.hash.hexdigest(), sink.size)


def _add(tar: tarfile.TarFile, entry: Entry, epoch: int, gz: DeterministicGzip) -> None:
    info = tar_info(entry, epoch)
    if entry.kind != "file":
        gz.stored = False
        tar.addfile(info)
        return
    assert entry.source is not None
    try:
        with open(entry.source, "rb") as f:
            head = f.read(6)
            f.seek(0)
            # tarfile buffers up to _TAR_BUFFER bytes, so the switch lands a little late:
            # that costs a few bytes of ratio, never correctness or determinism.
            gz.stored = entry.size >= _STORE_FROM and head.startswith(_COMPRESSED_MAGIC)
            tar.addfile(info, _Exactly(f, entry.size, entry.source))
    except OSError as exc:
        raise BuildError(f"cannot read {entry.source}: {exc.strerror}") from None


class _Exactly:
    """Reads a file that must still have the size it had when the build was planned."""

    def __init__(self, f: BinaryIO, size: int, path: Path) -> None:
        self._f = f
        self._left = size
        self._path = path

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._f.read(n) if n > 0 else b""
        if len(data) < n:
            raise BuildError(f"{self._path} changed while the layer was written (it got shorter)")
        self._left -= len(data)
        return data


# --- unpacking ------------------------------------------------------------------------------


def open_layer(stream: BinaryIO) -> tarfile.TarFile:
    """A streaming reader over a layer or archive: plain tar, gzip, bzip2 or xz."""
    try:
        return tarfile.open(fileobj=stream, mode="r|*")
    except tarfile.TarError as exc:
        raise BuildError(f"not a tar archive: {exc}") from None


def readable_layer(media_type: str) -> bool:
    """Whether sealpy can read a layer of this media type: tarfile reads plain, gzip, bzip2
    and xz tars; OCI's ``tar+zstd`` would need a zstd library sealpy does not depend on."""
    return not media_type.endswith("+zstd")


def has_whiteouts(stream: BinaryIO, what: str) -> bool:
    """Whether a layer holds whiteout entries (``.wh.<name>`` or ``.wh..wh..opq``)."""
    try:
        with open_layer(stream) as tar:
            return any(posixpath.basename(m.name.rstrip("/")).startswith(WHITEOUT) for m in tar)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise BuildError(f"{what}: cannot read layer: {exc}") from None


def unpack(tar: tarfile.TarFile, root: Path, *, whiteouts: bool, what: str) -> None:
    """Unpack a streamed tar into ``root``. With ``whiteouts`` (an image layer) ``.wh.``
    members delete what earlier layers put there. Devices and fifos are skipped: a cluster
    image never needs them and creating them would need privileges."""
    written: set[str] = set()
    dir_modes: dict[Path, int] = {}
    try:
        for member in tar:
            name = _safe_name(member.name, what)
            if name is None:
                continue
            base = posixpath.basename(name)
            parent_rel = posixpath.dirname(name)
            if whiteouts and base.startswith(WHITEOUT):
                target = whiteout_target(member.name, what)
                parent = _inside(root, parent_rel, what, create=False)
                if parent is None:
                    continue
                if target is None:
                    for child in list(parent.iterdir()) if parent.is_dir() else []:
                        rel = posixpath.join(parent_rel, child.name) if parent_rel else child.name
                        if rel not in written:
                            _remove(child)
                else:
                    _remove(parent / target)
                continue
            parent = _inside(root, parent_rel, what, create=True)
            assert parent is not None
            path = parent / base
            if member.isdir():
                if path.is_symlink() or (path.exists() and not path.is_dir()):
                    _remove(path)
                path.mkdir(exist_ok=True)
                dir_modes[path] = member.mode & 0o7777
            elif member.issym():
                _remove(path)
                os.symlink(member.linkname, path)
            elif member.islnk():
                target_name = _safe_name(member.linkname, what)
                link_dir = _inside(root, posixpath.dirname(target_name or ""), what, create=False)
                source = (
                    link_dir / posixpath.basename(target_name) if link_dir and target_name else None
                )
                if source is None or not source.is_file() or source.is_symlink():
                    raise BuildError(
                        f"{what}: hard link {name} -> {member.linkname}: target missing"
                    )
                _remove(path)
                os.link(source, path)
            elif member.isreg():
                _remove(path)
                stream = tar.extractfile(member)
                assert stream is not None
                with open(path, "xb") as out:
                    shutil.copyfileobj(stream, out, CHUNK)
                os.chmod(path, member.mode & 0o7777)
            else:
                continue  # device, fifo: skipped
            written.add(name)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        raise BuildError(f"{what}: cannot unpack: {detail}") from None
    # Directory modes last (deepest first), so a read-only directory does not block its
    # own contents.
    for path in sorted(dir_modes, key=lambda p: len(p.parts), reverse=True):
        os.chmod(path, dir_modes[path])


def _safe_name(name: str, what: str) -> str | None:
    """A member name as a clean relative path; ``None`` for the root itself. A name that
    climbs out with ``..`` is refused: a layer or archive must not write outside."""
    cleaned = posixpath.normpath("/" + name).lstrip("/")
    if ".." in name.split("/") and posixpath.normpath(name.lstrip("/")).startswith(".."):
        raise BuildError(f"{what}: member {name!r} points outside the archive")
    return cleaned or None


def whiteout_target(name: str, what: str) -> str | None:
    """The entry a whiteout member (``dir/.wh.<entry>``) deletes in its directory; None
    for the opaque marker. A whiteout must name one entry: ``.wh..`` (``.``), ``.wh...``
    (``..``) or a bare ``.wh.`` would delete the directory itself or its parent — outside
    the rootfs being assembled — and is refused."""
    base = posixpath.basename(posixpath.normpath("/" + name))
    if base == OPAQUE:
        return None
    target = base[len(WHITEOUT) :]
    if target in ("", ".", "..") or "/" in target or "\0" in target:
        raise BuildError(
            f"{what}: invalid whiteout {name!r}: it must name one entry of its directory"
        )
    return target


def _inside(root: Path, relpath: str, what: str, *, create: bool) -> Path | None:
    """``root/relpath`` if no component is a symlink (so nothing is written through one);
    missing directories are created (``create``) or give ``None``."""
    current = root
    for part in [p for p in relpath.split("/") if p]:
        current = current / part
        try:
            st = current.lstat()
        except FileNotFoundError:
            if not create:
                return None
            _implicit_dir(current)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise BuildError(f"{what}: member path {relpath} goes through a symlink")
        if not stat.S_ISDIR(st.st_mode):
            if not create:
                return None
            current.unlink()
            _implicit_dir(current)
    return current


IMPLICIT_DIR_MODE = 0o755


def _implicit_dir(path: Path) -> None:
    """A directory the tar names no entry for: a fixed mode, not the umask's (the mode ends
    up in the layer, and the same context must give the same digest under any umask)."""
    path.mkdir()
    os.chmod(path, IMPLICIT_DIR_MODE)


def _remove(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()
