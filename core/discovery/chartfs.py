"""Chart files resolve inside the chart: what Helm may read of a chart directory.

Helm's directory loader follows every symlink it meets, so a chart holding
``templates/x.yaml -> /etc/passwd`` (or ``values.yaml -> …``, or a subchart directory
``-> /etc``) would put a host file into the render, and from there into an image tag. As
the native builder's COPY does for the context, a chart's files must resolve inside the
chart: a symlink leaving it, a symlink loop, a dangling symlink and anything that is not a
regular file or directory (a FIFO would block the loader, ``/dev/zero`` never ends) are
skipped with a warning.

A chart without symlinks or special files (nearly every chart) is loaded from where it is,
after one ``lstat`` walk. Otherwise Helm loads a copy holding only what may be read: files
reached through symlinks inside the chart are copied as files, symlinked directories inside
the chart are followed unless they loop back. This module runs in the render worker
(:mod:`sealpy.core.discovery.chartworker`), inside its memory and time bounds.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

# Bounds a copy that follows symlinked directories (a fan-out of links can multiply a
# small chart many times over); no real chart comes near.
MAX_COPIED_ENTRIES = 50_000


class ChartTreeError(Exception):
    """The chart cannot be loaded safely (its ``Chart.yaml`` is skipped, or the copy would
    exceed :data:`MAX_COPIED_ENTRIES`)."""


def is_within(path: str | Path, root: str | Path) -> bool:
    """``path`` is ``root`` or below it (both already resolved)."""
    path, root = os.fspath(path), os.fspath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolves_within(path: Path, root: Path) -> bool:
    """``path``, with every symlink resolved, is ``root`` (resolved) or below it."""
    return is_within(os.path.realpath(path), os.path.realpath(root))


@dataclass
class ChartTree:
    """What Helm may read of one chart directory."""

    root: str  # the chart directory, resolved
    # (path relative to the chart, reason) for each entry left out, in walk order.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # Any symlink at all: then Helm loads a copy, which holds no symlinks.
    has_symlinks: bool = False

    @property
    def needs_copy(self) -> bool:
        return self.has_symlinks or bool(self.skipped)


def _relative(path: str, root: str) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _symlink_problem(path: str, root: str, chain: tuple[str, ...]) -> str | None:
    """Why the symlink ``path`` may not be followed, or None. ``chain``: the resolved
    directories being walked, innermost last (a target among them is a loop)."""
    target = os.path.realpath(path)
    if not is_within(target, root):
        return f"symlink to {os.readlink(path)!r} resolves outside the chart"
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return f"dangling symlink to {os.readlink(path)!r}"
    if stat.S_ISDIR(mode):
        if any(is_within(directory, target) for directory in chain):
            return f"symlink to {os.readlink(path)!r} loops back to a directory that holds it"
        return None
    if not stat.S_ISREG(mode):
        return "symlink to something that is not a regular file or directory"
    return None


def inspect_chart(chart: Path) -> ChartTree:
    """Walk ``chart`` as Helm will (following symlinked directories inside the chart) and
    list what must be left out."""
    root = os.path.realpath(chart)
    tree = ChartTree(root)
    entries = 0
    stack: list[tuple[str, str, tuple[str, ...]]] = [(root, root, (root,))]
    while stack:
        shown, real, chain = stack.pop()
        try:
            children = sorted(os.scandir(real), key=lambda e: e.name)
        except OSError as exc:
            tree.skipped.append((_relative(shown, root), f"cannot read: {exc.strerror or exc}"))
            continue
        for child in children:
            entries += 1
            if entries > MAX_COPIED_ENTRIES:
                raise ChartTreeError(f"more than {MAX_COPIED_ENTRIES} files and directories")
            shown_child = os.path.join(shown, child.name)
            if child.is_symlink():
                tree.has_symlinks = True
                problem = _symlink_problem(child.path, root, chain)
                if problem is not None:
                    tree.skipped.append((_relative(shown_child, root), problem))
                elif os.path.isdir(child.path):
                    target = os.path.realpath(child.path)
                    stack.append((shown_child, target, (*chain, target)))
            elif child.is_dir(follow_symlinks=False):
                stack.append((shown_child, child.path, (*chain, child.path)))
            elif not child.is_file(follow_symlinks=False):
                tree.skipped.append(
                    (_relative(shown_child, root), "not a regular file or directory")
                )
    if any(path == "Chart.yaml" for path, _ in tree.skipped):
        reason = next(reason for path, reason in tree.skipped if path == "Chart.yaml")
        raise ChartTreeError(f"Chart.yaml: {reason}")
    return tree


def copy_chart(tree: ChartTree, destination: Path) -> Path:
    """Copy what Helm may read of ``tree`` into ``destination`` (a new directory), with
    symlinks inside the chart replaced by what they point to. Returns ``destination``."""
    left_out = {path for path, _ in tree.skipped}
    destination.mkdir()
    stack: list[tuple[str, Path]] = [("", destination)]
    while stack:
        relative, target = stack.pop()
        source = os.path.join(tree.root, relative) if relative else tree.root
        for child in sorted(os.scandir(source), key=lambda e: e.name):
            child_relative = f"{relative}/{child.name}" if relative else child.name
            if child_relative in left_out:
                continue
            if child.is_dir():  # follows symlinks: inspect_chart checked them
                (target / child.name).mkdir()
                stack.append((child_relative, target / child.name))
            else:
                shutil.copyfile(child.path, target / child.name)
    return destination
