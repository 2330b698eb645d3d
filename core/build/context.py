"""What a COPY or ADD puts into a layer: sources resolved in a tree, as sorted tar entries.

A *tree* is a directory the sources are read from: the build context (where nothing may
escape it: ``..`` and symlinks pointing outside are errors, as are symlink loops), or a
directory an image or an archive was unpacked into (where, as inside a container, an
absolute symlink means the tree's own root).

Planning only reads metadata (``lstat``), so a build file whose sources are wrong fails
before anything is written. The entries are what :func:`sealpy.core.build.layers.write_layer`
streams into a tar: sorted by path, owned by 0:0 (or ``--chown``), modes kept (or
``--chmod``), symlinks as links, hard links between copied files kept.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sealpy.core.build.blobfiles import BLOB_FILE_MODE, is_blob_file, is_uploads_dir
from sealpy.core.errors import BuildError, PathNotFoundError

IGNORE_FILES = (".containerignore", ".dockerignore")  # buildah prefers .containerignore
MAX_SYMLINK_HOPS = 40  # Linux's ELOOP limit
_GLOB_CHARS = frozenset("*?[")

EntryKind = Literal["dir", "file", "symlink", "hardlink"]


@dataclass(frozen=True)
class Entry:
    """One member of a layer tar: ``name`` has no leading ``/``; ``source`` is the file whose
    bytes (regular files) or metadata it came from; ``link`` is a symlink's target or a hard
    link's member name."""

    name: str
    kind: EntryKind
    mode: int
    source: Path | None = None
    size: int = 0
    link: str = ""
    uid: int = 0
    gid: int = 0
    inode: tuple[int, int] | None = None  # (st_dev, st_ino) of a file with several links


@dataclass(frozen=True)
class Ownership:
    """``--chown`` and ``--chmod`` of a COPY/ADD (``None``: keep 0:0 and the source modes)."""

    uid: int = 0
    gid: int = 0
    mode: int | None = None


# --- .dockerignore ------------------------------------------------------------------------


@dataclass(frozen=True)
class IgnoreRule:
    pattern: re.Pattern[str]
    exclude: bool  # False for "!pattern": re-include


class IgnoreMatcher:
    """``.dockerignore`` / ``.containerignore`` rules, matched as Docker matches them.

    Each line is a pattern relative to the context root (``*``, ``?``, ``[...]`` within a
    path component, ``**`` across any number of them); ``!`` re-includes; the last
    matching line wins; a pattern that matches a directory matches everything under it.
    """

    def __init__(self, lines: Iterable[str] = ()) -> None:
        self.rules: list[IgnoreRule] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclude = not line.startswith("!")
            if not exclude:
                line = line[1:].strip()
            line = posixpath.normpath(line.lstrip("/")) if line.lstrip("/") else "."
            if line == ".":
                continue  # Docker ignores a pattern for the context root itself
            self.rules.append(IgnoreRule(re.compile(_pattern_regex(line)), exclude))

    @classmethod
    def for_context(cls, root: Path, ignorefile: Path | None = None) -> IgnoreMatcher:
        """The context's ignore file, or ``ignorefile`` instead (``--ignorefile``: then the
        context's own files are not read, as in buildah)."""
        if ignorefile is not None:
            try:
                return cls(Path(ignorefile).read_text(errors="replace").splitlines())
            except OSError as exc:
                raise BuildError(f"cannot read --ignorefile {ignorefile}: {exc.strerror}") from None
        for name in IGNORE_FILES:
            path = root / name
            if path.is_file():
                return cls(path.read_text(errors="replace").splitlines())
        return cls()

    @property
    def has_exceptions(self) -> bool:
        return any(not r.exclude for r in self.rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def ignored(self, relpath: str) -> bool:
        """Whether the context path ``relpath`` (posix, no leading ``./``) is excluded."""
        if not self.rules:
            return False
        parents = _with_parents(relpath)
        result = False
        for rule in self.rules:
            if any(rule.pattern.match(p) for p in parents):
                result = rule.exclude
        return result


def _with_parents(relpath: str) -> list[str]:
    parts = relpath.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _pattern_regex(pattern: str) -> str:
    """A Docker ignore pattern as an anchored regular expression."""
    out = ["^"]
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # "**/" : zero or more directories
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!") or body.startswith("^"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return "".join(out)


# --- resolving sources in a tree ------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    """A directory sources are read from. ``jail``: absolute symlinks and ``..`` stop at
    the root (an unpacked image); otherwise leaving the root is an error (the context).
    ``fixed_blobs``: registry blob files get a fixed mode and no hard links (the build
    context, whose blobs may come from the cache: :mod:`sealpy.core.build.blobfiles`)."""

    root: Path
    what: str = "the build context"
    jail: bool = False
    ignore: IgnoreMatcher | None = None
    fixed_blobs: bool = False

    def relative(self, path: Path) -> str:
        rel = os.path.relpath(path, self.root)
        return "" if rel == "." else Path(rel).as_posix()

    def resolve(self, relpath: str, *, follow_last: bool = True) -> Path:
        """The real path of ``relpath`` inside the tree, following symlinks component by
        component; raises for a missing path, a path outside the tree, or a loop."""
        parts = [p for p in relpath.split("/") if p not in ("", ".")]
        current = self.root
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if current == self.root:
                    if self.jail:
                        continue
                    raise self._outside(relpath)
                current = current.parent
                continue
            candidate = current / part
            try:
                st = candidate.lstat()
            except FileNotFoundError:
                raise PathNotFoundError(
                    f"{relpath}: no such file or directory in {self.what}"
                ) from None
            except NotADirectoryError:
                raise PathNotFoundError(
                    f"{relpath}: a path component is not a directory in {self.what}"
                ) from None
            except OSError as exc:
                raise BuildError(f"{relpath}: {exc.strerror} in {self.what}") from None
            if stat.S_ISLNK(st.st_mode) and (parts or follow_last):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise BuildError(f"{relpath}: symlink loop in {self.what}")
                target = os.readlink(candidate)
                if target.startswith("/"):
                    if not self.jail:
                        # An absolute link is fine only if it lands inside the context.
                        inside = os.path.relpath(target, self.root)
                        if inside == ".." or inside.startswith("../"):
                            raise self._outside(
                                relpath, f"symlink {self.relative(candidate)} -> {target}"
                            )
                        target = "" if inside == "." else inside
                    current = self.root
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            current = candidate
        return current

    def _outside(self, relpath: str, detail: str = "") -> BuildError:
        extra = f" ({detail})" if detail else ""
        return BuildError(f"{relpath}: outside {self.what}{extra}; sources must be inside it")

    def glob(self, pattern: str) -> list[str]:
        """Paths matching a source with wildcards (component by component, sorted; ignored
        paths do not match)."""
        parts = [p for p in pattern.split("/") if p not in ("", ".")]
        matches = [""]
        for part in parts:
            following: list[str] = []
            for base in matches:
                directory = self.resolve(base) if base else self.root
                if not directory.is_dir():
                    continue
                if _GLOB_CHARS & set(part):
                    names = sorted(n for n in os.listdir(directory) if fnmatch.fnmatchcase(n, part))
                else:
                    names = [part] if os.path.lexists(directory / part) else []
                following.extend(f"{base}/{n}" if base else n for n in names)
            matches = following
        if self.ignore:
            matches = [m for m in matches if not self.ignore.ignored(m)]
        return matches


def has_glob(source: str) -> bool:
    return bool(_GLOB_CHARS & set(source))


# --- planning entries ---------------------------------------------------------------------


def clean_dest(dest: str, workdir: str) -> tuple[str, bool]:
    """The destination as an archive path (no leading ``/``), and whether it names a
    directory (it ends with ``/``, or is ``.``)."""
    is_dir = dest.endswith("/") or dest in (".", "..") or dest.endswith("/.")
    full = dest if dest.startswith("/") else posixpath.join(workdir or "/", dest)
    normalised = posixpath.normpath("/" + full).lstrip("/")
    return normalised, is_dir or normalised == ""


def plan_sources(
    tree: Tree,
    sources: Sequence[str],
    dest: str,
    workdir: str,
    ownership: Ownership,
    *,
    keyword: str = "COPY",
) -> tuple[list[Entry], list[Path]]:
    """Entries for copying ``sources`` (relative to the tree) to ``dest``; also the
    resolved top-level source paths (the caller checks what was copied, e.g. registry/)."""
    target, dest_is_dir = clean_dest(dest, workdir)
    resolved: list[Path] = []
    for source in sources:
        if has_glob(source):
            found = tree.glob(source)
            if not found:
                raise BuildError(f"{keyword} {source}: no file in {tree.what} matches")
            resolved.extend(tree.resolve(m) for m in found)
        else:
            path = tree.resolve(source.lstrip("/"))  # Docker reads /x in a context as x
            rel = tree.relative(path)
            if tree.ignore and rel and tree.ignore.ignored(rel):
                raise BuildError(
                    f"{keyword} {source}: excluded by {IGNORE_FILES[1]} or {IGNORE_FILES[0]}"
                )
            resolved.append(path)
    several = len(resolved) > 1
    if several and not dest_is_dir:
        raise BuildError(
            f"{keyword} with several sources needs a directory destination ending in /, not {dest}"
        )
    entries: dict[str, Entry] = {}
    for path in resolved:
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            _add_dir(entries, target, st, ownership)
            _walk(tree, path, target, entries, ownership)
        else:
            # No entry for the destination directory itself: the base image may have it
            # with other permissions (/tmp), and unpacking creates missing parents.
            name = posixpath.join(target, path.name) if dest_is_dir else target
            if not name:
                raise BuildError(f"{keyword} {dest}: cannot replace the image root with a file")
            entries[name] = _entry(tree, name, path, st, ownership)
    return finish(entries.values()), resolved


def _add_dir(
    entries: dict[str, Entry], name: str, st: os.stat_result | None, own: Ownership
) -> None:
    if not name:
        return  # the image root itself is never an entry
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o755
    if own.mode is not None:
        mode = own.mode
    if name not in entries or st is not None:
        entries[name] = Entry(name, "dir", mode, uid=own.uid, gid=own.gid)


def _walk(
    tree: Tree, directory: Path, target: str, entries: dict[str, Entry], own: Ownership
) -> None:
    """Every path under ``directory`` (not following symlinks), honouring the ignore file."""
    ignore = tree.ignore
    for current, dirnames, filenames in os.walk(directory, onerror=_raise_walk_error):
        base = Path(current)
        rel_base = os.path.relpath(base, directory)
        kept_dirs = []
        for name in sorted(dirnames):
            path = base / name
            if ignore and ignore.ignored(tree.relative(path)):
                if ignore.has_exceptions:
                    kept_dirs.append(name)  # a "!" rule may re-include something inside
                continue
            if tree.fixed_blobs and name == "_uploads" and is_uploads_dir(tree.relative(path)):
                continue  # unfinished uploads: see blobfiles
            kept_dirs.append(name)
            st = path.lstat()
            member = _member_name(target, rel_base, name)
            if stat.S_ISLNK(st.st_mode):  # os.walk lists symlinks to directories here
                entries[member] = _entry(tree, member, path, st, own)
            else:
                _add_dir(entries, member, st, own)
        dirnames[:] = [d for d in kept_dirs if not (base / d).is_symlink()]
        for name in sorted(filenames):
            path = base / name
            if ignore and ignore.ignored(tree.relative(path)):
                continue
            member = _member_name(target, rel_base, name)
            entries[member] = _entry(tree, member, path, path.lstat(), own)
            _ensure_parents(entries, member, own)


def _ensure_parents(entries: dict[str, Entry], member: str, own: Ownership) -> None:
    """A file re-included by a "!" rule inside an ignored directory still needs its parents."""
    parent = posixpath.dirname(member)
    while parent and parent not in entries:
        entries[parent] = Entry(
            parent, "dir", 0o755 if own.mode is None else own.mode, uid=own.uid, gid=own.gid
        )
        parent = posixpath.dirname(parent)


def _raise_walk_error(exc: OSError) -> None:
    raise BuildError(f"cannot read {exc.filename}: {exc.strerror}")


def _member_name(target: str, rel_base: str, name: str) -> str:
    parts = [p for p in (target, "" if rel_base == "." else Path(rel_base).as_posix(), name) if p]
    return "/".join(parts)


def _entry(tree: Tree, name: str, path: Path, st: os.stat_result, own: Ownership) -> Entry:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return Entry(name, "symlink", 0o777, path, link=os.readlink(path), uid=own.uid, gid=own.gid)
    if own.mode is not None:
        mode = own.mode
    if stat.S_ISDIR(st.st_mode):
        return Entry(name, "dir", mode, uid=own.uid, gid=own.gid)
    if stat.S_ISREG(st.st_mode):
        inode = (st.st_dev, st.st_ino) if st.st_nlink > 1 else None
        if tree.fixed_blobs and path.name == "data" and is_blob_file(tree.relative(path)):
            inode = None  # a cache's hard link is no property of the content
            mode = BLOB_FILE_MODE if own.mode is None else own.mode
        return Entry(name, "file", mode, path, st.st_size, uid=own.uid, gid=own.gid, inode=inode)
    raise BuildError(f"{path}: cannot copy a {_kind(st.st_mode)} into an image")


def _kind(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    return "special file"


def sort_key(name: str) -> tuple[str, ...]:
    """Sort by path components, so a directory always precedes what it holds."""
    return tuple(name.split("/"))


def finish(entries: Iterable[Entry]) -> list[Entry]:
    """Sorted entries, with the second and later names of one file as hard links to the
    first (within this layer)."""
    out: list[Entry] = []
    first_name: dict[tuple[int, int], str] = {}
    for entry in sorted(entries, key=lambda e: sort_key(e.name)):
        inode = entry.inode
        if entry.kind == "file" and inode is not None:
            if inode in first_name:
                entry = Entry(
                    entry.name,
                    "hardlink",
                    entry.mode,
                    entry.source,
                    0,
                    first_name[inode],
                    entry.uid,
                    entry.gid,
                )
            else:
                first_name[inode] = entry.name
        out.append(entry)
    return out


def merge_entries(groups: Iterable[Iterable[Entry]]) -> list[Entry]:
    """Entries of several sources in one layer: a later source's entry wins a name."""
    merged: dict[str, Entry] = {}
    for group in groups:
        for entry in group:
            merged[entry.name] = entry
    return finish(merged.values())
