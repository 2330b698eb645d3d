"""How a verified file of the machine-wide blob cache goes into a destination directory:
a hard link where both are on one file system (nothing is written twice), else a reflink
(``FICLONE``: the file system shares the extents) where the file system has them, else
nothing — the caller copies the bytes through its own verifying writer. The first method
that works is remembered per destination file system, so one that refused a hard link is
not asked again, and each method used is counted per destination (``--debug``)."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from collections import Counter
from pathlib import Path

FICLONE = 0x40049409  # ioctl(dest_fd, FICLONE, src_fd): share the source's extents


class Placement:
    """How cached blobs go into destinations: per destination filesystem, the first of
    hard link, reflink and copy that works there (remembered, so a filesystem that
    refused a hard link is not asked again), and a count of each method per destination
    root for the report."""

    def __init__(self, cache_device: int | None) -> None:
        self.cache_device = cache_device
        self._refused: dict[int, set[str]] = {}  # device -> methods that failed there
        self.used: Counter[tuple[str, str]] = Counter()  # (destination root, method)
        self._lock = threading.Lock()

    def place(self, cached: Path, dir_fd: int, name: str, root: str) -> str:
        """Put ``cached`` as ``name`` in the directory ``dir_fd``: ``link``, ``reflink``,
        ``present`` (already there) or ``copy`` (nothing done: the caller copies)."""
        device = os.fstat(dir_fd).st_dev
        refused = self._refused.setdefault(device, set())
        method = "copy"
        if "link" not in refused and device == self.cache_device:
            try:
                os.link(cached, name, dst_dir_fd=dir_fd, follow_symlinks=False)
                method = "link"
            except FileExistsError:
                method = "present"
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES):
                    raise
                refused.add("link")
        if method == "copy" and "reflink" not in refused:
            method = self._reflink(cached, dir_fd, name, refused)
        with self._lock:
            self.used[root, method] += 1
        return method

    @staticmethod
    def _reflink(cached: Path, dir_fd: int, name: str, refused: set[str]) -> str:
        tmp = f".{name}.{os.getpid()}-{threading.get_ident()}.reflink"
        src = os.open(cached, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            dst = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
            try:
                fcntl.ioctl(dst, FICLONE, src)
            except OSError:
                os.close(dst)
                os.unlink(tmp, dir_fd=dir_fd)
                refused.add("reflink")
                return "copy"
            os.close(dst)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return "reflink"
        finally:
            os.close(src)

    def summary(self) -> list[str]:
        """One line per destination: how many blobs went in by which method."""
        by_root: dict[str, list[str]] = {}
        for (root, method), n in sorted(self.used.items()):
            by_root.setdefault(root, []).append(f"{n} {method}")
        return [f"{root}: {', '.join(parts)}" for root, parts in by_root.items()]
