"""Discovery source: ``images/skopeo/tar.txt``, image archives to cache under a name.

Each line is ``docker-archive:<path>@<destination>`` or ``oci-archive:<path>@<destination>``:
the archive at ``<path>`` (relative to ``images/skopeo/``, as Sealos joins it) is cached as
``<destination>`` (``repository[:tag]``). Blank lines and lines starting with ``#`` are
skipped. Unlike an unusable image reference in a manifest, a malformed line or a missing
archive fails the scan: the line names exactly one archive the user meant to ship.

An archive must resolve inside the context, as a Kubefile COPY source must: the path is
joined and cleaned as Sealos does (``../../x`` from ``images/skopeo/`` is ``x`` in the
context root), then followed symlink by symlink; climbing out, or a symlink leading out
(of the archive, of a directory on the way, or of ``tar.txt`` itself), is an error.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import cast

from sealpy.core.discovery.yamlimages import text_lines
from sealpy.core.errors import BuildError, ContextError, InvalidReferenceError, PathNotFoundError
from sealpy.core.hookspecs import hookimpl
from sealpy.core.model import (
    ArchiveEntry,
    ArchiveTransport,
    BuildContext,
    DiscoveryResult,
    Location,
)
from sealpy.core.reference import ImageReference

SKOPEO_DIR = Path("images", "skopeo")
TAR_TXT = SKOPEO_DIR / "tar.txt"
TRANSPORTS: tuple[ArchiveTransport, ...] = ("docker-archive", "oci-archive")
_EXPECTED = (
    "expected docker-archive:<path>@<repository[:tag]> or oci-archive:<path>@<repository[:tag]>"
)


def parse_line(line: str, root: Path, location: Location) -> ArchiveEntry:
    """One ``tar.txt`` line as an archive entry (``root``: the context root, resolved);
    ContextError naming file and line if bad."""
    where = f"{location.file}:{location.line}"
    transport, colon, rest = line.partition(":")
    if not colon or transport not in TRANSPORTS:
        raise ContextError(f"{where}: unknown transport in {line!r}: {_EXPECTED}")
    # A path may hold "@"; a destination never does, so split at the last one, unless
    # what follows is a digest: "app.tar@my/app@sha256:…" is a destination with a digest.
    path_text, at, destination_text = rest.rpartition("@")
    if at and destination_text.startswith("sha256:") and "@" in path_text:
        path_text, _, name = path_text.rpartition("@")
        destination_text = f"{name}@{destination_text}"
    if not at or not path_text.strip() or not destination_text.strip():
        raise ContextError(f"{where}: malformed line {line!r}: {_EXPECTED}")
    try:
        destination = ImageReference.parse(destination_text)
    except InvalidReferenceError as exc:
        raise ContextError(f"{where}: bad destination: {exc}") from None
    if destination.digest:
        raise ContextError(
            f"{where}: destination {destination_text.strip()!r} has a digest; "
            "an archive is stored under a repository and tag"
        )
    path = _archive_path(path_text.strip(), root, where)
    return ArchiveEntry(cast(ArchiveTransport, transport), path, destination, location)


def _archive_path(text: str, root: Path, where: str) -> Path:
    """The real path of an archive named in tar.txt, inside the context or an error."""
    # Sealos joins the path onto images/skopeo/ (Go's path.Join, which also cleans it),
    # even a leading "/".
    relpath = posixpath.normpath(posixpath.join(SKOPEO_DIR.as_posix(), text.lstrip("/")))
    looked = Path(os.path.normpath(root / relpath))
    if "\0" in relpath:
        raise ContextError(f"{where}: archive {text!r}: a path cannot hold a NUL character")
    if relpath == ".." or relpath.startswith("../"):
        raise ContextError(
            f"{where}: archive {text!r} is outside the build context ({looked}); "
            "an archive must be inside it"
        )
    from sealpy.core.build.context import Tree  # the build package: only with a tar.txt

    try:
        path = Tree(root).resolve(relpath)
    except PathNotFoundError:
        raise ContextError(f"{where}: archive {text!r} not found (looked for {looked})") from None
    except BuildError as exc:
        raise ContextError(f"{where}: archive {text!r}: {exc}") from None  # outside, a loop
    if not path.is_file():
        raise ContextError(f"{where}: archive {text!r} not found (looked for {looked})")
    return path


@hookimpl
def sealpy_discover_images(context: BuildContext) -> DiscoveryResult | None:
    tar_txt = context.root / TAR_TXT
    if not tar_txt.is_file():
        return None
    relative = context.relative(tar_txt)
    from sealpy.core.build.context import Tree  # the build package: only with a tar.txt

    try:
        # tar.txt itself must not be read through a symlink that leads out of the context.
        tar_txt = Tree(context.root).resolve(TAR_TXT.as_posix())
    except BuildError as exc:
        raise ContextError(f"{relative}: {exc}") from None
    try:
        text = tar_txt.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as exc:
        raise ContextError(f"{relative}: cannot read: {exc.strerror or exc}") from None
    entries = [
        parse_line(line.strip(), context.root, Location(relative, number))
        for number, line in enumerate(text_lines(text), 1)
        if line.strip() and not line.strip().startswith("#")
    ]
    return DiscoveryResult(archives=tuple(entries))
