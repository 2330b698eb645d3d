"""File operations that never leave a directory tree through a symlink.

A registry directory (``<context>/registry``) arrives with the build context, which may
come from anyone. A symlink planted in it (``docker/registry/v2/blobs -> /elsewhere``)
would make every write under it land outside. :class:`ConfinedRoot` walks from the root
one component at a time with directory file descriptors, opening each with
``O_NOFOLLOW``, and creates, renames and removes relative to the last one: no path is
ever looked up again by name from the top, so a symlink swapped in while a run is under
way is refused too (not only one that was there before). A directory *moved* out of the
tree while a write holds its descriptor still receives that write: moving it there needs
write access to where it goes, so nothing lands where the mover could not write.

A stock registry never writes a symlink, so any symlink below the root is refused, not
only one pointing outside: one pointing inside would still make two paths one, and
``registry verify`` reports every symlink as a problem. The root itself may be a symlink:
it is the directory the caller chose.

Cost: walking component by component costs two calls per level, and a layer link is 11
levels below the root; with the GIL handed over at each call, that made the proxy
benchmark's small workload 40 % slower. So a path is reached from a held descriptor of
a directory on its way (the root, a blob's ``<xx>``, a repository's ``_layers/sha256``: up
to HELD_DIRS, least recently used dropped) with one ``openat2`` call and
``RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`` where the kernel has it (Linux 5.6+; the kernel
checks every component), and a new directory is made and opened below its held parent.
What is left: about 5 % on that workload (all metadata: 50 images of 3 × 16 KiB layers).
The walk remains the fallback (older kernels, seccomp filters that refuse the call) and
is what names the offending symlink in an error.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from sealpy.core.errors import SealpyError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_PATH = getattr(os, "O_PATH", 0)


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


_HOW_SIZE = ctypes.sizeof(_OpenHow)


class _Openat2:
    """``openat2(2)`` through libc's ``syscall``; ``None`` from :meth:`__call__` when the
    kernel (or a seccomp filter) does not offer it, so callers fall back to the walk."""

    SYSCALL = 437  # the same number on every Linux architecture
    RESOLVE = 0x04 | 0x08  # RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH

    def __init__(self) -> None:
        self.available = sys.platform == "linux"
        self._syscall = None
        if self.available:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                self._syscall = libc.syscall
                self._syscall.restype = ctypes.c_long
                self._syscall.argtypes = (
                    ctypes.c_long,
                    ctypes.c_int,
                    ctypes.c_char_p,
                    ctypes.POINTER(_OpenHow),
                    ctypes.c_size_t,
                )
            except (OSError, AttributeError):
                self.available = False
        self._hows: dict[int, _OpenHow] = {}  # read-only once made: shared by threads

    def __call__(self, dir_fd: int, path: str, flags: int) -> int | None:
        """A descriptor for ``path`` below ``dir_fd`` reached without any symlink; OSError
        as ``open`` raises it (ELOOP for a symlink on the way)."""
        if not self.available or self._syscall is None:
            return None
        how = self._hows.get(flags)
        if how is None:
            how = self._hows[flags] = _OpenHow(flags | os.O_CLOEXEC, 0, self.RESOLVE)
        fd = self._syscall(self.SYSCALL, dir_fd, os.fsencode(path), how, _HOW_SIZE)
        if fd >= 0:
            return fd
        error = ctypes.get_errno()
        if error in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG):
            self.available = False  # not offered here: walk from now on
            return None
        raise OSError(error, os.strerror(error), path)


_openat2 = _Openat2()


def _close_all(held: OrderedDict[tuple[str, ...], int], retired: set[int]) -> None:
    for fd in [*held.values(), *retired]:
        with contextlib.suppress(OSError):
            os.close(fd)
    held.clear()
    retired.clear()


class SymlinkRefusedError(SealpyError):
    """A path under a confined root goes through a symlink (or a non-directory)."""


class ConfinedRoot:
    """A directory whose paths are only ever reached without following a symlink."""

    HELD_DIRS = 256

    def __init__(self, root: Path, what: str = "registry directory") -> None:
        self.root = Path(root).absolute()
        self.what = what
        self._prefix = os.path.join(os.fspath(self.root), "")
        # Descriptors of the root and of directories reached safely before, the most
        # recently used last: paths are resolved from them, never from the root's name
        # again. Each use is counted; one dropped (the least recently used beyond
        # HELD_DIRS, or one found removed) is closed once no thread uses it any more.
        self._held: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self._users: dict[int, int] = {}
        self._retired: set[int] = set()
        self._lock = threading.Lock()
        weakref.finalize(self, _close_all, self._held, self._retired)

    def __repr__(self) -> str:
        return f"ConfinedRoot({str(self.root)!r})"

    def parts(self, path: Path) -> tuple[str, ...]:
        """``path`` (absolute, under the root, or relative to it) as plain names."""
        # String operations: pathlib's relative_to would cost more than the syscalls.
        text = os.fspath(path)
        if text.startswith(self._prefix):
            text = text[len(self._prefix) :]
        elif text == os.fspath(self.root):
            return ()
        elif text.startswith("/"):
            raise ValueError(f"{path} is not under {self.root}")
        names = tuple(text.rstrip("/").split("/"))
        if any(n in ("..", ".", "") for n in names):
            raise ValueError(f"{path} is not a plain path under {self.root}")
        return names

    def _refused(self, names: tuple[str, ...], dir_fd: int) -> SealpyError:
        rel = "/".join(names)
        try:
            target = os.readlink(names[-1], dir_fd=dir_fd)
        except OSError:
            return SymlinkRefusedError(
                f"{self.what} {self.root}: {rel} is not a directory; "
                "run `sealpy registry verify --fix` on it or remove it"
            )
        return SymlinkRefusedError(
            f"{self.what} {self.root}: refusing to write through symlink {rel} -> {target} "
            "(a registry directory holds no symlinks; remove it, e.g. with "
            "`sealpy registry verify --fix`)"
        )

    def open_dir(self, directory: Path, *, create: bool) -> int:
        """A file descriptor on ``directory`` (the caller closes it). Missing directories
        are created (``create``) or raise FileNotFoundError; a symlink or a file on the way
        raises :class:`SymlinkRefusedError`."""
        names = self.parts(directory)
        for retry in (False, True):
            parent = self._borrow(names[:-1], create)
            try:
                if not names:
                    return os.dup(parent)
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(names[-1], dir_fd=parent)
                return self._open_child(names, parent)
            except FileNotFoundError:
                if retry or not self._dropped_if_removed(names[:-1], parent):
                    raise
            finally:
                self._release(parent)
        raise AssertionError("unreachable")  # pragma: no cover

    def _open_root(self, create: bool) -> int:
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                raise
            # The root is the caller's choice: created (and followed) by name.
            self.root.mkdir(parents=True, exist_ok=True)
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _borrow(self, names: tuple[str, ...], create: bool) -> int:
        """A held descriptor on the directory ``names``; the caller must :meth:`_release`
        it (and never close it)."""
        with self._lock:
            fd = self._held.get(names)
            if fd is not None:
                self._held.move_to_end(names)
                self._users[fd] = self._users.get(fd, 0) + 1
                return fd
        if not names:
            opened = self._open_root(create)
        else:
            for retry in (False, True):
                root = self._borrow((), create)
                try:
                    opened = self._from(root, names, create)
                    break
                except FileNotFoundError:
                    if retry or not self._dropped_if_removed((), root):
                        raise
                finally:
                    self._release(root)
        unused: list[int] = []
        with self._lock:
            known = self._held.get(names)
            if known is not None:  # another thread was quicker
                unused.append(opened)
                opened = known
            else:
                self._held[names] = opened
                while len(self._held) > self.HELD_DIRS:
                    self._retire(self._held.popitem(last=False)[1], unused)
            self._users[opened] = self._users.get(opened, 0) + 1
        for old in unused:
            os.close(old)
        return opened

    def _retire(self, fd: int, unused: list[int]) -> None:
        """(Under the lock.) Close ``fd`` now when unused, else when its last user is done."""
        if self._users.get(fd, 0):
            self._retired.add(fd)
        else:
            unused.append(fd)

    def _release(self, fd: int) -> None:
        with self._lock:
            left = self._users[fd] - 1
            if left:
                self._users[fd] = left
                return
            del self._users[fd]
            if fd not in self._retired:
                return
            self._retired.discard(fd)
        os.close(fd)

    def _dropped_if_removed(self, names: tuple[str, ...], fd: int) -> bool:
        """After ENOENT below the held ``fd``: whether its directory was removed since (no
        links left); then it is forgotten, and for the root every descriptor below it."""
        if os.fstat(fd).st_nlink > 0:
            return False
        unused: list[int] = []
        with self._lock:
            if self._held.get(names) == fd:
                for key in list(self._held) if not names else [names]:
                    self._retire(self._held.pop(key), unused)
        for old in unused:
            os.close(old)
        return True

    def _from(self, root: int, names: tuple[str, ...], create: bool) -> int:
        """``names`` below the borrowed ``root``, as a descriptor the caller owns."""
        if names and _openat2.available:
            # One call resolves a whole path. A write usually makes a new directory (a blob,
            # a link) whose parent exists: so, for a write, the deepest existing ancestor
            # from the parent upwards, one call each, then only the missing levels walked.
            for keep in range(len(names) - 1 if create else len(names), 0, -1):
                try:
                    found = _openat2(root, "/".join(names[:keep]), _DIR_FLAGS)
                except FileNotFoundError:
                    if not create:
                        raise
                    continue
                except OSError:
                    break  # a symlink or a file on the way: the walk below names it
                if found is None:
                    break
                if keep == len(names):
                    return found
                return self._walk(found, names, keep, create=create)
        return self._walk(os.dup(root), names, 0, create=create)

    def _walk(self, fd: int, names: tuple[str, ...], start: int, *, create: bool) -> int:
        """From ``fd`` (the directory ``names[:start]``, owned by this call) down to all of
        ``names``, one component at a time, creating missing directories with ``create``."""
        try:
            for i in range(start, len(names)):
                if create and i == len(names) - 1:  # a new leaf: two calls, not three
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(names[i], dir_fd=fd)
                try:
                    child = self._open_child(names[: i + 1], fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(names[i], dir_fd=fd)
                    child = self._open_child(names[: i + 1], fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_child(self, names: tuple[str, ...], fd: int) -> int:
        try:
            return os.open(names[-1], _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise self._refused(names, fd) from None
            raise

    @contextlib.contextmanager
    def directory(self, directory: Path, *, create: bool) -> Iterator[int]:
        fd = self.open_dir(directory, create=create)
        try:
            yield fd
        finally:
            os.close(fd)

    # --- files -------------------------------------------------------------------------

    def open_file(self, path: Path, flags: int, mode: int = 0o666) -> tuple[int, int]:
        """``(dir_fd, fd)`` for the file ``path``, opened with ``O_NOFOLLOW``; its directory
        is created. The caller closes both (the directory fd serves a later rename)."""
        path = Path(path)
        dir_fd = self.open_dir(path.parent, create=True)
        try:
            fd = os.open(path.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
        except OSError as exc:
            error: BaseException = exc
            if exc.errno == errno.ELOOP:
                error = self._refused((*self.parts(path.parent), path.name), dir_fd)
            os.close(dir_fd)
            raise error from None
        return dir_fd, fd

    def write_atomically(self, path: Path, data: bytes, tmp_name: str, *, durable: bool) -> None:
        """Write ``data`` to ``tmp_name`` next to ``path``, then rename it over ``path``
        (a rename replaces a symlink at ``path`` itself, never what it points to)."""
        path = Path(path)
        with self.directory(path.parent, create=True) as dir_fd:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(tmp_name, flags, 0o666, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise self._refused((*self.parts(path.parent), tmp_name), dir_fd) from None
                raise
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp_name, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    def read_bytes(self, path: Path) -> bytes:
        """The content of the regular file ``path``; OSError (FileNotFoundError for a
        missing one) when it cannot be read without following a symlink."""
        fd = self._open_beneath(path, os.O_RDONLY | os.O_NOFOLLOW)
        if fd is None:
            with self.open_read(path) as f:
                return f.read()
        try:  # small files (links, manifests): no file object needed
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def open_read(self, path: Path):
        """``path`` opened for reading without following a symlink on the way."""
        path = Path(path)
        fast = self._open_beneath(path, os.O_RDONLY | os.O_NOFOLLOW)
        if fast is not None:
            return os.fdopen(fast, "rb")
        with self.directory(path.parent, create=False) as dir_fd:
            fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        return os.fdopen(fd, "rb")

    def _open_beneath(self, path: Path, flags: int) -> int | None:
        """``path`` opened with openat2 from a held directory (the parent of the file's
        directory: a blob's ``<xx>``, a link's ``sha256``); None when openat2 is not
        offered. Raises OSError (ELOOP for a symlink on the way)."""
        if not _openat2.available:
            return None
        names = self.parts(path)
        if not names:
            return None
        base = names[:-2]
        relpath = "/".join(names[len(base) :])
        for retry in (False, True):
            start = self._borrow(base, create=False)
            try:
                return _openat2(start, relpath, flags)
            except FileNotFoundError:
                if retry or not self._dropped_if_removed(base, start):
                    raise
            finally:
                self._release(start)
        raise AssertionError("unreachable")  # pragma: no cover

    def lstat(self, path: Path) -> os.stat_result | None:
        """``path``'s own status, or None when it is missing or behind a symlink."""
        path = Path(path)
        if _O_PATH:
            try:
                fast = self._open_beneath(path, _O_PATH | os.O_NOFOLLOW)
            except (OSError, SymlinkRefusedError):
                return None
            if fast is not None:
                try:
                    return os.fstat(fast)
                finally:
                    os.close(fast)
        try:
            with self.directory(path.parent, create=False) as dir_fd:
                return os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
        except (OSError, SymlinkRefusedError):
            return None

    def is_file(self, path: Path) -> bool:
        st = self.lstat(path)
        return st is not None and stat.S_ISREG(st.st_mode)

    def is_dir(self, path: Path) -> bool:
        st = self.lstat(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def listdir(self, directory: Path, *, dirs_only: bool = False) -> list[str]:
        """Names in ``directory`` (real directories only with ``dirs_only``); empty when it
        is missing or behind a symlink."""
        try:
            with self.directory(directory, create=False) as dir_fd, os.scandir(dir_fd) as it:
                return sorted(
                    e.name for e in it if not dirs_only or e.is_dir(follow_symlinks=False)
                )
        except (OSError, SymlinkRefusedError):
            return []

    def replace(self, src_dir_fd: int, src_name: str, destination: Path) -> None:
        """Rename ``src_name`` (in the directory ``src_dir_fd``) to ``destination``."""
        destination = Path(destination)
        with self.directory(destination.parent, create=True) as dst_fd:
            os.replace(src_name, destination.name, src_dir_fd=src_dir_fd, dst_dir_fd=dst_fd)

    @contextlib.contextmanager
    def _parent(self, path: Path) -> Iterator[tuple[int, str]]:
        """A held descriptor on ``path``'s directory (never created), and its name in it."""
        names = self.parts(path)
        if not names:
            raise ValueError(f"{path} is the root itself")
        parent = self._borrow(names[:-1], create=False)
        try:
            yield parent, names[-1]
        finally:
            self._release(parent)

    def remove(self, path: Path) -> None:
        """Remove ``path``: a directory with its content, or a file or a symlink itself
        (never what a symlink points to). Missing is fine."""
        try:
            with self._parent(Path(path)) as (dir_fd, name):
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    return
                if stat.S_ISDIR(st.st_mode):
                    # rmtree with dir_fd walks by descriptors and never follows a symlink.
                    shutil.rmtree(name, dir_fd=dir_fd)
                else:
                    os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return

    def remove_empty_dir(self, directory: Path) -> None:
        with (
            contextlib.suppress(OSError, SymlinkRefusedError),
            self._parent(Path(directory)) as (dir_fd, name),
        ):
            os.rmdir(name, dir_fd=dir_fd)


def find_symlinks(root: Path, top: Path) -> list[Path]:
    """Every symlink at or below ``top`` (a path under ``root``), without following any;
    components between ``root`` and ``top`` count too. Sorted."""
    confined = ConfinedRoot(root)
    names = confined.parts(top)
    found: list[Path] = []
    current = confined.root
    for name in names:  # the way down to top: a symlink there hides all below it
        current = current / name
        if current.is_symlink():
            return [current]
        if not current.is_dir():
            return []
    with confined.directory(top, create=False) as top_fd:
        # fwalk moves by descriptors and never descends into a symlink.
        for dirpath, dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=top_fd):
            for name in (*dirnames, *filenames):
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        found.append(Path(os.path.normpath(confined.root / top / dirpath / name)))
    return sorted(found)
